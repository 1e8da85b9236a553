"""One crafted invalid resource per validation rule (https://hl7.org/fhir/R4/validation.html)."""

from __future__ import annotations

from typing import Any

import pytest

from samverka.errors import Issue
from samverka.validation import Validator

OBS: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
}


def check(resource: dict[str, Any], expected_type: str | None = None) -> list[Issue]:
    return Validator.default().validate(resource, expected_type)


def one(resource: dict[str, Any], expected_type: str | None = None) -> Issue:
    issues = check(resource, expected_type)
    assert len(issues) == 1, issues
    return issues[0]


def obs(**extra: Any) -> dict[str, Any]:
    return {**OBS, **extra}


def pat(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **extra}


def expect(resource: dict[str, Any], code: str, expression: str, severity: str = "error") -> Issue:
    issue = one(resource)
    assert (issue.severity, issue.code, issue.expression) == (severity, code, expression), issue
    assert issue.diagnostics
    return issue


# -- valid baselines ---------------------------------------------------------------------------


def test_minimal_valid_resources() -> None:
    assert check(OBS, "Observation") == []
    assert check(pat(id="p-1.a", name=[{"given": ["A", "B"]}], birthDate="1970-01-31")) == []


# -- unknown elements --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        (pat(foo=1), "Patient.foo"),
        (pat(contact=[{"gender": "male", "foo": 1}]), "Patient.contact[0].foo"),
        (pat(name=[{"famly": "X"}]), "Patient.name[0].famly"),
        (pat(_birthDate={"foo": 1}), "Patient.birthDate.foo"),
        (pat(_name=[{"id": "a"}]), "Patient._name"),
        (pat(extension=[{"url": "http://x", "valueFoo": "a"}]), "Patient.extension[0].valueFoo"),
        (obs(valueFoo=1), "Observation.valueFoo"),
        (obs(valueQuantity={"value": 1, "unitt": "mg"}), "Observation.valueQuantity.unitt"),
    ],
)
def test_unknown_elements(resource: dict[str, Any], expression: str) -> None:
    issue = expect(resource, "structure", expression)
    assert "Unknown element" in issue.diagnostics


def test_extension_url_required() -> None:
    expect(pat(modifierExtension=[{"valueString": "a"}]), "required", "Patient.modifierExtension[0].url")


def test_nested_extension_on_primitive() -> None:
    resource = pat(name=[{"given": ["A", "B"], "_given": [None, {"extension": [{"valueCode": "x"}]}]}])
    expect(resource, "required", "Patient.name[0].given[1].extension[0].url")


# -- datatypes and choice types ----------------------------------------------------------------


def test_complex_type_given_a_string() -> None:
    expect(pat(name=["Smith"]), "structure", "Patient.name[0]")


def test_primitive_given_an_object() -> None:
    expect(pat(gender={"value": "male"}), "structure", "Patient.gender")


def test_choice_variant_value_checked() -> None:
    expect(obs(valueQuantity={"value": "7.2"}), "value", "Observation.valueQuantity.value")


def test_two_choice_variants() -> None:
    issue = expect(obs(valueString="a", valueBoolean=True), "structure", "Observation.valueBoolean")
    assert "value[x]" in issue.diagnostics


def test_contained_resource_validated() -> None:
    resource = pat(contained=[{"resourceType": "Patient", "id": "c", "birthDate": "1970-13-01"}])
    expect(resource, "value", "Patient.contained[0].birthDate")


def test_contained_resource_of_unknown_type() -> None:
    expect(pat(contained=[{"resourceType": "Nope", "id": "c"}]), "invalid", "Patient.contained[0]")


def test_bundle_entry_resource_validated() -> None:
    entries = [{"resource": obs()}, {"resource": obs()}, {"resource": obs(status="done")}]
    issue = expect(
        {"resourceType": "Bundle", "type": "collection", "entry": entries},
        "code-invalid",
        "Bundle.entry[2].resource.status",
    )
    assert "'done'" in issue.diagnostics


def test_parameters_resource_validated() -> None:
    resource = {"resourceType": "Parameters", "parameter": [{"name": "p", "resource": pat(foo=1)}]}
    expect(resource, "structure", "Parameters.parameter[0].resource.foo")


# -- JSON shape ---------------------------------------------------------------------------------


def test_array_expected() -> None:
    expect(pat(name={"family": "X"}), "structure", "Patient.name")


def test_single_value_expected() -> None:
    expect(pat(gender=["male"]), "structure", "Patient.gender")


def test_empty_object() -> None:
    expect(pat(maritalStatus={}), "structure", "Patient.maritalStatus")


def test_empty_array() -> None:
    expect(pat(name=[]), "structure", "Patient.name")


def test_empty_string() -> None:
    expect(pat(name=[{"family": ""}]), "value", "Patient.name[0].family")


def test_null_single_value() -> None:
    expect(pat(gender=None), "structure", "Patient.gender")


def test_null_in_array_needs_companion() -> None:
    expect(pat(name=[{"given": ["A", None]}]), "structure", "Patient.name[0].given[1]")
    ok = pat(name=[{"given": ["A", None], "_given": [None, {"id": "g2"}]}])
    assert check(ok) == []


def test_companion_length_mismatch() -> None:
    resource = pat(name=[{"given": ["A", "B"], "_given": [{"id": "g1"}]}])
    expect(resource, "structure", "Patient.name[0].given")


# -- cardinality --------------------------------------------------------------------------------


def test_missing_required_element() -> None:
    expect({"resourceType": "Observation", "status": "final"}, "required", "Observation.code")


def test_missing_required_in_backbone() -> None:
    expect(obs(component=[{"valueString": "x"}]), "required", "Observation.component[0].code")


def test_min_ignored_inside_absent_parent() -> None:
    assert check(obs()) == []  # Observation.component.code is 1..1 but component is absent


def test_primitive_extension_satisfies_min() -> None:
    absent = {
        "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}
        ]
    }
    resource = {k: v for k, v in OBS.items() if k != "status"}
    assert check({**resource, "_status": absent}) == []


# -- primitive formats --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        (pat(id="a_b"), "Patient.id"),
        (pat(birthDate="1970-1-1"), "Patient.birthDate"),
        (pat(birthDate="2023-02-30"), "Patient.birthDate"),
        (pat(deceasedDateTime="2020-01-01T10:00"), "Patient.deceasedDateTime"),
        (obs(issued="2020-01-01"), "Observation.issued"),
        (obs(valueTime="25:00:00"), "Observation.valueTime"),
        (obs(valueQuantity={"value": "1.5"}), "Observation.valueQuantity.value"),
        (obs(valueInteger=2**31), "Observation.valueInteger"),
        (obs(valueInteger=1.5), "Observation.valueInteger"),
        (pat(multipleBirthInteger=True), "Patient.multipleBirthInteger"),
        ({"resourceType": "Practitioner", "photo": [{"size": -1}]}, "Practitioner.photo[0].size"),
        (
            obs(valueSampledData={"origin": {"value": 0}, "period": 1, "dimensions": 0, "data": "1"}),
            "Observation.valueSampledData.dimensions",
        ),
        (pat(implicitRules="http://a b"), "Patient.implicitRules"),
        (pat(gender="ma  le"), "Patient.gender"),
        (
            pat(identifier=[{"system": "urn:ietf:rfc:3986", "value": "x"}], photo=[{"data": "not base64!"}]),
            "Patient.photo[0].data",
        ),
        (pat(active="true"), "Patient.active"),
        (pat(name=[{"text": 5}]), "Patient.name[0].text"),
        ({"resourceType": "Device", "udiCarrier": [{"issuer": "http://x y"}]}, "Device.udiCarrier[0].issuer"),
    ],
)
def test_primitive_formats(resource: dict[str, Any], expression: str) -> None:
    expect(resource, "value", expression)


def test_oid_and_uuid() -> None:
    bad = {"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "urn:uuid:X"}]}
    assert check(bad) == []  # fullUrl is a plain uri
    param = {
        "resourceType": "Parameters",
        "parameter": [{"name": "a", "valueOid": "1.2.3"}, {"name": "b", "valueUuid": "urn:uuid:ABC"}],
    }
    issues = check(param)
    assert [(i.code, i.expression) for i in issues] == [
        ("value", "Parameters.parameter[0].valueOid"),
        ("value", "Parameters.parameter[1].valueUuid"),
    ]


def test_whitespace_string_is_a_warning() -> None:
    expect(pat(name=[{"family": "   "}]), "value", "Patient.name[0].family", severity="warning")


def test_markdown_empty() -> None:
    expect(obs(note=[{"text": ""}]), "value", "Observation.note[0].text")


def test_xhtml_must_be_div() -> None:
    expect(pat(text={"status": "generated", "div": "hello"}), "value", "Patient.text.div")


# -- required bindings --------------------------------------------------------------------------


def test_code_binding() -> None:
    issue = expect(pat(gender="M"), "code-invalid", "Patient.gender")
    assert "administrative-gender" in issue.diagnostics


def test_nested_code_binding() -> None:
    expect(
        obs(valueQuantity={"value": 1, "comparator": "~"}),
        "code-invalid",
        "Observation.valueQuantity.comparator",
    )


def test_codeable_concept_binding() -> None:
    system = "http://terminology.hl7.org/CodeSystem/condition-clinical"
    bad = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/1"},
        "clinicalStatus": {
            "coding": [{"system": "http://other", "code": "x"}, {"system": system, "code": "alive"}]
        },
    }
    expect(bad, "code-invalid", "Condition.clinicalStatus.coding[1].code")
    good = {**bad, "clinicalStatus": {"coding": [{"system": system, "code": "active"}]}}
    assert check(good) == []
    nested = {**bad, "clinicalStatus": {"coding": [{"system": system, "code": "recurrence"}]}}
    assert check(nested) == []  # a nested concept (active > recurrence)
    other = {**bad, "clinicalStatus": {"coding": [{"system": "http://other", "code": "x"}]}}
    assert check(other) == []  # no coding from the value set's systems: not judged


def test_unexpandable_binding_is_skipped() -> None:
    # Observation.valueQuantity.code is not bound; Attachment.contentType binds to all of BCP-13.
    assert check(pat(photo=[{"contentType": "made/up"}])) == []


# -- resourceType -------------------------------------------------------------------------------


def test_resource_type_missing() -> None:
    assert [(i.code, i.expression) for i in check({"id": "x"}, "Patient")] == [("required", "Patient")]
    # the content is still checked against the expected type
    got = [(i.code, i.expression) for i in check({"id": "x", "foo": 1}, "Patient")]
    assert got == [("required", "Patient"), ("structure", "Patient.foo")]
    assert [(i.code, i.expression) for i in check({"id": "x"})] == [("required", "Resource")]


def test_deep_nesting_is_reported_not_raised() -> None:
    item: dict[str, Any] = {"linkId": "leaf", "type": "display"}
    for n in range(2000):
        item = {"linkId": str(n), "type": "group", "item": [item]}
    questionnaire = {"resourceType": "Questionnaire", "status": "draft", "item": [item]}
    issue = one(questionnaire, "Questionnaire")
    assert (issue.code, issue.expression) == ("structure", "Questionnaire")


def test_resource_type_unknown() -> None:
    issue = expect({"resourceType": "Patien"}, "invalid", "Patien")
    assert "Unknown resource type" in issue.diagnostics


def test_resource_type_mismatch() -> None:
    issue = one(pat(), "Observation")
    assert (issue.code, issue.expression) == ("invalid", "Patient")
    assert "expected type 'Observation'" in issue.diagnostics


def test_not_an_object() -> None:
    issue = one([], "Patient")  # type: ignore[arg-type]
    assert (issue.code, issue.expression) == ("structure", "Patient")


# -- references ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "Patient/123",
        "Patient/123/_history/2",
        "http://example.org/fhir/Patient/1",
        "urn:uuid:0dd77edd-bffd-4258-ac40-c07af6dd734a",
        "urn:oid:1.2.3.4",
        "Patient?identifier=http://x|1",
    ],
)
def test_valid_references(ref: str) -> None:
    assert check(obs(subject={"reference": ref})) == []


def test_contained_reference() -> None:
    contained = [{"resourceType": "Patient", "id": "p1"}]
    assert check(obs(contained=contained, subject={"reference": "#p1"})) == []


@pytest.mark.parametrize(
    "ref", ["Patient/", "Patient/a_b", "Patient 1", "Foo/1", "urn:uuid:nope", "#a b", "patient/1"]
)
def test_bad_reference_syntax(ref: str) -> None:
    expect(obs(subject={"reference": ref}), "invalid", "Observation.subject.reference")


def test_reference_to_disallowed_target() -> None:
    issue = expect(obs(subject={"reference": "Practitioner/1"}), "invalid", "Observation.subject.reference")
    assert "Practitioner" in issue.diagnostics


def test_reference_type_mismatch() -> None:
    resource = obs(performer=[{"reference": "Patient/1", "type": "Practitioner"}])
    expect(resource, "invalid", "Observation.performer[0].reference")


def test_reference_type_not_allowed() -> None:
    expect(obs(subject={"type": "Practitioner", "display": "x"}), "invalid", "Observation.subject.type")


def test_any_target_allowed() -> None:
    assert check(obs(extension=[{"url": "http://x", "valueReference": {"reference": "Claim/1"}}])) == []


# -- id and meta --------------------------------------------------------------------------------


def test_meta_shape() -> None:
    issues = check(pat(meta={"versionId": "a b", "profile": "http://x", "tag": [{"code": "x"}], "foo": 1}))
    assert sorted((i.code, i.expression) for i in issues) == [
        ("structure", "Patient.meta.foo"),
        ("structure", "Patient.meta.profile"),
        ("value", "Patient.meta.versionId"),
    ]


def test_id_too_long() -> None:
    expect(pat(id="a" * 65), "value", "Patient.id")


# -- everything at once -------------------------------------------------------------------------


def test_all_problems_reported() -> None:
    resource = {
        "resourceType": "Observation",
        "id": "bad id",
        "status": "done",
        "valueString": "a",
        "valueInteger": 1,
        "subject": {"reference": "Practitioner/1"},
        "component": [{"valueQuantity": {"value": "x"}}],
        "performer": {"reference": "Practitioner/1"},
        "foo": True,
        "_issued": {"bar": 1},
    }
    got = sorted((i.code, i.expression) for i in check(resource, "Observation"))
    assert got == [
        ("code-invalid", "Observation.status"),
        ("invalid", "Observation.subject.reference"),
        ("required", "Observation.code"),
        ("required", "Observation.component[0].code"),
        ("structure", "Observation.foo"),
        ("structure", "Observation.issued.bar"),
        ("structure", "Observation.performer"),
        ("structure", "Observation.valueInteger"),
        ("value", "Observation.component[0].valueQuantity.value"),
        ("value", "Observation.id"),
    ]
