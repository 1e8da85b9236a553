"""Reference rewriting inside transaction entries (https://hl7.org/fhir/R4/bundle.html#references)."""

from samverka.interactions.entries import rewrite_references


def test_rewrite_replaces_mapped_references_everywhere() -> None:
    """Every `reference` key, however deep, is mapped; unmapped bundle-local ones are reported."""
    r = {"resourceType": "Observation", "subject": {"reference": "urn:uuid:1"},
         "performer": [{"reference": "urn:uuid:2"}, {"reference": "Patient?identifier=s|v"}],
         "extension": [{"url": "x", "valueReference": {"reference": "urn:uuid:1"}}]}
    out, pending = rewrite_references(r, {"urn:uuid:1": "Patient/p1"}.get)
    assert out["subject"]["reference"] == "Patient/p1"
    assert out["extension"][0]["valueReference"]["reference"] == "Patient/p1"
    assert pending == {"urn:uuid:2", "Patient?identifier=s|v"}


def test_rewrite_ignores_the_word_reference_inside_text() -> None:
    """A string that merely contains `"reference":"..."` is text, not a reference."""
    r = {"resourceType": "Observation", "note": [{"text": '"reference":"urn:uuid:1"'}]}
    out, pending = rewrite_references(r, {"urn:uuid:1": "Patient/p1"}.get)
    assert out["note"][0]["text"] == '"reference":"urn:uuid:1"'
    assert pending == set()


def test_rewrite_handles_escaped_characters_in_references() -> None:
    """References containing escaped characters are decoded before lookup and re-encoded after."""
    r = {"resourceType": "Observation", "subject": {"reference": 'odd"one\\'}}
    out, _ = rewrite_references(r, {'odd"one\\': "Patient/q"}.get)
    assert out["subject"]["reference"] == "Patient/q"


def test_rewrite_leaves_absolute_and_relative_references_alone() -> None:
    """Ordinary relative and absolute references are not bundle-local and are kept as they are."""
    r = {"resourceType": "Observation", "subject": {"reference": "Patient/1"},
         "focus": [{"reference": "https://other.example/fhir/Patient/2"}]}
    out, pending = rewrite_references(r, {}.get)
    assert out == r and pending == set()
