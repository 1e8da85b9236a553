"""Behaviour of the FHIRPath facade: compile/evaluate, resolve(), environment and errors."""

from __future__ import annotations

from typing import Any

import pytest

from samverka.fhir.definitions import resources_of
from samverka.fhir.fhirpath import FHIRPathError, FHIRPathSyntaxError, compile, evaluate

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "contained": [{"resourceType": "Practitioner", "id": "p1", "name": [{"family": "Lind"}]}],
    "status": "final",
    "code": {"text": "weight"},
    "subject": {"reference": "Patient/123"},
    "performer": [
        {"reference": "#p1"},
        {"reference": "https://example.org/fhir/Organization/org-9/_history/2"},
        {"reference": "urn:uuid:0d5b6b6e-4a5e-4b8e-9a11-2b3c4d5e6f70"},
    ],
}


def test_compile_is_cached_and_reusable() -> None:
    """The same expression compiles once and runs against many resources."""
    fn = compile("Observation.status")
    assert compile("Observation.status") is fn
    assert fn(OBSERVATION) == ["final"]
    assert fn({"resourceType": "Observation", "status": "amended"}) == ["amended"]


def test_resolve_gives_the_target_type_of_relative_and_absolute_references() -> None:
    """resolve() on Type/id or an absolute URL yields something of that type."""
    assert evaluate(OBSERVATION, "Observation.subject.where(resolve() is Patient).reference") == ["Patient/123"]
    assert evaluate(OBSERVATION, "Observation.subject.where(resolve() is Group)") == []
    assert evaluate(OBSERVATION, "Observation.performer.resolve().ofType(Organization).id") == ["org-9"]


def test_resolve_of_a_contained_reference_returns_the_contained_resource() -> None:
    """`#id` resolves to the contained resource itself."""
    assert evaluate(OBSERVATION, "Observation.performer.resolve().ofType(Practitioner).name.family") == ["Lind"]


def test_resolver_hook_supplies_full_resources() -> None:
    """A resolver callable turns a reference into the stored resource; None falls back to a stub."""
    store = {"Patient/123": {"resourceType": "Patient", "id": "123", "gender": "female"}}
    seen: list[str] = []

    def resolver(reference: str) -> dict[str, Any] | None:
        seen.append(reference)
        return store.get(reference)

    result = evaluate(OBSERVATION, "Observation.subject.resolve().gender", resolver=resolver)
    assert result == ["female"]
    assert seen == ["Patient/123"]
    assert evaluate(OBSERVATION, "Observation.performer[1].resolve() is Organization", resolver=resolver) == [True]


def test_resolve_inside_a_bundle_follows_full_urls() -> None:
    """A urn:uuid reference resolves to the Bundle entry with that fullUrl."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:a", "resource": {"resourceType": "Patient", "id": "x", "gender": "male"}},
            {
                "fullUrl": "urn:uuid:b",
                "resource": {"resourceType": "Encounter", "subject": {"reference": "urn:uuid:a"}},
            },
        ],
    }
    assert evaluate(bundle, "Bundle.entry.resource.ofType(Encounter).subject.resolve().gender") == ["male"]


def test_environment_variables_and_fhir_constants() -> None:
    """env supplies %variables; %resource, %sct, %loinc, %vs-* and %ext-* are predefined."""
    assert evaluate(OBSERVATION, "%threshold + 1", {"threshold": 41}) == [42]
    assert evaluate(OBSERVATION, "%resource.id") == ["o1"]
    assert evaluate({}, "%sct") == ["http://snomed.info/sct"]
    assert evaluate({}, "%`ext-patient-birthTime`") == ["http://hl7.org/fhir/StructureDefinition/patient-birthTime"]


def test_sort_with_descending_keys() -> None:
    """sort() takes key expressions; a leading minus sorts that key descending, also for strings."""
    patient = {"resourceType": "Patient", "name": [{"family": "B"}, {"family": "C"}, {"family": "A"}]}
    assert evaluate(patient, "Patient.name.sort(family).family") == ["A", "B", "C"]
    assert evaluate(patient, "Patient.name.sort(-family).family") == ["C", "B", "A"]


@pytest.mark.parametrize("expression", ["Patient.name.", "2 + 2 /", "where(", "Patient..name"])
def test_syntax_errors_raise(expression: str) -> None:
    """Malformed expressions raise FHIRPathSyntaxError at compile time."""
    with pytest.raises(FHIRPathSyntaxError):
        compile(expression)


def test_evaluation_errors_raise_fhirpath_error() -> None:
    """Errors while evaluating become FHIRPathError (a ValueError), never a bare Exception."""
    with pytest.raises(FHIRPathError):
        evaluate(OBSERVATION, "Observation.performer.single()")
    with pytest.raises(FHIRPathError):
        evaluate(OBSERVATION, "%undefined")


def test_trace_does_not_print(capsys: pytest.CaptureFixture[str]) -> None:
    """trace() goes to logging, not to stdout."""
    assert evaluate(OBSERVATION, "status.trace('s')") == ["final"]
    assert capsys.readouterr().out == ""


def test_every_r4_search_parameter_expression_compiles() -> None:
    """All 1,377 SearchParameter expressions of R4 parse."""
    expressions = {sp["expression"] for sp in resources_of("search-parameters") if sp.get("expression")}
    assert len(expressions) > 500
    for expression in expressions:
        compile(expression)


def test_search_parameter_expressions_run_against_an_example() -> None:
    """A typical reference parameter expression with resolve() extracts the subject."""
    expression = "Observation.subject.where(resolve() is Patient)"
    assert evaluate(OBSERVATION, expression) == [{"reference": "Patient/123"}]
