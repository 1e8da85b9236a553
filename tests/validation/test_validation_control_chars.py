"""Control characters in strings are invalid FHIR (https://hl7.org/fhir/R4/datatypes.html#string)."""

import pytest

from samverka.validation import Validator


@pytest.mark.parametrize("bad", ["a\x00b", "\x07", "x\x1f"])
def test_control_characters_in_strings_are_errors(bad: str) -> None:
    """NUL and other C0 controls are reported with the element's expression."""
    issues = Validator.default().validate({"resourceType": "Patient", "name": [{"family": bad}]})
    assert [(i.severity, i.code, i.expression) for i in issues] == [("error", "value", "Patient.name[0].family")]


def test_tab_carriage_return_and_newline_are_allowed() -> None:
    """The three whitespace controls the spec allows stay valid."""
    assert Validator.default().validate({"resourceType": "Patient", "name": [{"family": "a\tb\r\nc"}]}) == []
