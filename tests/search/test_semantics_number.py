"""Number search semantics: implicit precision of the search value, exact gt/lt/ge/le, open Ranges.

https://hl7.org/fhir/R4/search.html#number -- `100` searches [99.5, 100.5), `100.0` [99.95, 100.05),
`1e2` [50, 150); `gt100` means greater than exactly 100. Stored numbers compare as the value they state;
a Range with an open end (`>= 50`) compares as that range.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.semantics import Seeded


def _risk(id_: str, **prediction: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "RiskAssessment", "id": id_, "status": "final",
                            "subject": {"reference": "Patient/x"}}
    if prediction:
        body["prediction"] = [prediction]
    return body


@pytest.fixture(scope="module")
def db(store: Seeded) -> Seeded:
    store.put(
        _risk("v100", probabilityDecimal=100), _risk("v100-2", probabilityDecimal=100.2),
        _risk("v99-5", probabilityDecimal=99.5), _risk("v100-5", probabilityDecimal=100.5),
        _risk("v101", probabilityDecimal=101), _risk("neg3", probabilityDecimal=-3),
        _risk("tiny", probabilityDecimal=0.001),
        _risk("open50", probabilityRange={"low": {"value": 50}}), _risk("none"),
    )
    return store


@pytest.mark.parametrize(("query", "expected"), [
    ("probability=100", {"v100", "v100-2", "v99-5"}),
    ("probability=eq100", {"v100", "v100-2", "v99-5"}),
    ("probability=100.0", {"v100"}),
    ("probability=1e2", {"v100", "v100-2", "v99-5", "v100-5", "v101"}),
    ("probability=0.001", {"tiny"}),
    ("probability=-3", {"neg3"}),
    ("probability=100.2,101", {"v100-2", "v100-5", "v101"}),  # 101 is [100.5, 101.5)
])
def test_number_equality_uses_the_precision_of_the_search_value(db: Seeded, query: str, expected: set[str]) -> None:
    """eq matches stored values inside [value - half a unit, value + half a unit) of the last digit."""
    assert db.ids("RiskAssessment", query) == expected


@pytest.mark.parametrize(("query", "expected"), [
    ("probability=gt100", {"v100-2", "v100-5", "v101", "open50"}),
    ("probability=ge100", {"v100", "v100-2", "v100-5", "v101", "open50"}),
    ("probability=lt100", {"v99-5", "neg3", "tiny", "open50"}),
    ("probability=le100", {"v100", "v99-5", "neg3", "tiny", "open50"}),
    ("probability=ne100", {"v100-5", "v101", "neg3", "tiny", "open50"}),
    ("probability=sa100", {"v100-2", "v100-5", "v101"}),
    ("probability=eb100", {"v99-5", "neg3", "tiny"}),
    ("probability=ap100", {"v100", "v100-2", "v99-5", "v100-5", "v101", "open50"}),
    ("probability=gt-5", {"v100", "v100-2", "v99-5", "v100-5", "v101", "neg3", "tiny", "open50"}),
    ("probability=lt49", {"neg3", "tiny"}),
])
def test_number_prefixes(db: Seeded, query: str, expected: set[str]) -> None:
    """gt/ge/lt/le/sa/eb compare with the exact value (R4 ignores the precision there); ne/ap use its range."""
    assert db.ids("RiskAssessment", query) == expected


def test_repeated_number_parameters_are_anded(db: Seeded) -> None:
    """probability=ge100&probability=lt101 is the half-open interval."""
    assert db.ids("RiskAssessment", "probability=ge100&probability=lt101") == {"v100", "v100-2", "v100-5", "open50"}


def test_number_missing(db: Seeded) -> None:
    """:missing=true finds the assessment without a probability."""
    assert db.ids("RiskAssessment", "probability:missing=true") == {"none"}
    assert "none" not in db.ids("RiskAssessment", "probability:missing=false")


@pytest.mark.parametrize("value", ["abc", "1.2.3", "gtx", "NaN", "Infinity", "1e99999999", "gt", "1,5x", "0x10",
                                   "--1"])
def test_malformed_numbers_are_rejected_naming_the_parameter(db: Seeded, value: str) -> None:
    """A value that is no decimal is a 400 with the parameter as the issue expression."""
    assert db.error("RiskAssessment", f"probability={value}").issues[0].expression == "probability"
