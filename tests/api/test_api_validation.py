"""Validation on write and $validate: https://hl7.org/fhir/R4/validation.html

A refused write answers 400 (or 422) with an OperationOutcome naming every issue with its FHIRPath
expression; `$validate` reports the same issues and stores nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.server import RunningServer, expect_outcome

OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}

# (case, resource without identifier, the expression of the expected issue)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown element", {"resourceType": "Patient", "favouriteColour": "blue"}, "Patient.favouriteColour"),
    ("unknown nested element", {"resourceType": "Patient", "name": [{"family": "x", "nick": "y"}]},
     "Patient.name[0].nick"),
    ("wrong datatype", {"resourceType": "Patient", "active": "yes"}, "Patient.active"),
    ("object where an array is due", {"resourceType": "Patient", "name": {"family": "x"}}, "Patient.name"),
    ("bad choice type", {**OBS, "valueDate": "2020-01-01"}, "Observation.valueDate"),
    ("two choices at once", {"resourceType": "Patient", "deceasedBoolean": True,
                             "deceasedDateTime": "2020-01-01"}, "Patient.deceasedDateTime"),
    ("array for a single element", {"resourceType": "Patient", "gender": ["male", "female"]}, "Patient.gender"),
    ("missing required element", {"resourceType": "Observation", "code": {"text": "x"}}, "Observation.status"),
    ("bad date", {"resourceType": "Patient", "birthDate": "2020-13-45"}, "Patient.birthDate"),
    ("bad dateTime", {**OBS, "effectiveDateTime": "yesterday"}, "Observation.effectiveDateTime"),
    ("bad instant", {**OBS, "issued": "2020-01-01"}, "Observation.issued"),
    ("decimal as string", {**OBS, "valueQuantity": {"value": "12"}}, "Observation.valueQuantity.value"),
    ("bad uri", {"resourceType": "Patient", "telecom": [{"system": "url", "value": "x"}],
                 "managingOrganization": {"type": "not a uri"}}, "Patient.managingOrganization.type"),
    ("required binding", {"resourceType": "Patient", "gender": "yes-please"}, "Patient.gender"),
    ("bad reference syntax", {"resourceType": "Patient", "managingOrganization": {"reference": "not a reference"}},
     "Patient.managingOrganization.reference"),
    ("extension without url", {"resourceType": "Patient", "extension": [{"valueString": "x"}]},
     "Patient.extension[0].url"),
]


def _with_identifier(resource: dict[str, Any], uid: str) -> dict[str, Any]:
    """The same resource with a unique identifier, so a stored copy would be found."""
    return {**resource, "identifier": [{"system": f"urn:val:{uid}", "value": "1"}]}


def _expressions(issues: list[dict[str, Any]]) -> set[str]:
    return {e for i in issues if i["severity"] in ("error", "fatal") for e in i.get("expression", [])}


def _stored(server: RunningServer, type_: str, uid: str) -> list[Any]:
    r = server.client.get(f"/{type_}", params={"identifier": f"urn:val:{uid}|"})
    assert r.status_code == 200, r.text
    return r.json().get("entry", [])


@pytest.mark.parametrize(("case", "resource", "expression"), CASES, ids=[c[0] for c in CASES])
def test_invalid_create_is_refused_with_expression(server: RunningServer, uid: str, case: str,
                                                   resource: dict[str, Any], expression: str) -> None:
    """A create of an invalid resource is 400/422 with an issue at the offending element; nothing is stored."""
    body = _with_identifier(resource, uid)
    issues = expect_outcome(server.client.post(f"/{body['resourceType']}", json=body), 400, 422)
    assert expression in _expressions(issues), issues
    assert all(i.get("diagnostics") for i in issues)
    assert _stored(server, body["resourceType"], uid) == []


@pytest.mark.parametrize(("case", "resource", "expression"), CASES, ids=[c[0] for c in CASES])
def test_invalid_update_is_refused_with_expression(server: RunningServer, uid: str, case: str,
                                                   resource: dict[str, Any], expression: str) -> None:
    """An update (as create) with the same problem is refused the same way; the id stays unknown."""
    id_ = f"val-{uid}"
    body = {**_with_identifier(resource, uid), "id": id_}
    issues = expect_outcome(server.client.put(f"/{body['resourceType']}/{id_}", json=body), 400, 422)
    assert expression in _expressions(issues), issues
    assert server.client.get(f"/{body['resourceType']}/{id_}").status_code == 404


@pytest.mark.parametrize(("case", "resource", "expression"), CASES, ids=[c[0] for c in CASES])
def test_validate_operation_reports_same_issue_and_stores_nothing(
    server: RunningServer, uid: str, case: str, resource: dict[str, Any], expression: str
) -> None:
    """$validate at type level reports what a create would and stores nothing."""
    body = _with_identifier(resource, uid)
    create_issues = expect_outcome(server.client.post(f"/{body['resourceType']}", json=body), 400, 422)
    r = server.client.post(f"/{body['resourceType']}/$validate", json=body)
    assert r.status_code in (200, 400, 422)
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert _expressions(outcome["issue"]) == _expressions(create_issues)
    assert _stored(server, body["resourceType"], uid) == []


def test_every_issue_is_reported_at_once(server: RunningServer, uid: str) -> None:
    """A resource with many problems gets one OperationOutcome listing each, with its expression."""
    body = _with_identifier({
        "resourceType": "Patient",
        "favouriteColour": "blue",
        "active": "yes",
        "gender": "yes-please",
        "birthDate": "2020-13-45",
        "name": {"family": "x"},
        "deceasedBoolean": True,
        "deceasedDateTime": "2020-01-01",
        "managingOrganization": {"reference": "not a reference"},
        "extension": [{"valueString": "x"}],
    }, uid)
    wanted = {"Patient.favouriteColour", "Patient.active", "Patient.gender", "Patient.birthDate", "Patient.name",
              "Patient.deceasedDateTime", "Patient.managingOrganization.reference", "Patient.extension[0].url"}
    issues = expect_outcome(server.client.post("/Patient", json=body), 400, 422)
    assert _expressions(issues) >= wanted
    assert len([i for i in issues if i["severity"] == "error"]) >= len(wanted)
    type_level = server.client.post("/Patient/$validate", json=body).json()
    assert _expressions(type_level["issue"]) == _expressions(issues)
    instance_level = server.client.post(f"/Patient/val-{uid}/$validate", json={**body, "id": f"val-{uid}"}).json()
    assert _expressions(instance_level["issue"]) == _expressions(issues)
    assert _stored(server, "Patient", uid) == []


def test_validate_of_valid_resource_passes_and_stores_nothing(server: RunningServer, uid: str) -> None:
    """$validate of a valid resource reports no errors and does not create it."""
    body = _with_identifier({"resourceType": "Patient", "gender": "female", "birthDate": "1990-01-01"}, uid)
    r = server.client.post("/Patient/$validate", json=body)
    assert r.status_code == 200
    assert all(i["severity"] in ("information", "warning") for i in r.json()["issue"])
    assert _stored(server, "Patient", uid) == []


def test_validate_instance_level_accepts_parameters_wrapper(server: RunningServer, uid: str) -> None:
    """$validate on [type]/[id] takes a Parameters with a 'resource' parameter and reports its issues."""
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient", "id": f"v-{uid}", "gender": "bad"}}]}
    r = server.client.post(f"/Patient/v-{uid}/$validate", json=body)
    assert _expressions(r.json()["issue"]) == {"Patient.gender"}
    assert server.client.get(f"/Patient/v-{uid}").status_code == 404


def test_validate_instance_level_reports_id_mismatch(server: RunningServer, uid: str) -> None:
    """$validate on [type]/[id] with a different id in the body reports it."""
    r = server.client.post(f"/Patient/a-{uid}/$validate", json={"resourceType": "Patient", "id": f"b-{uid}"})
    issues = r.json()["issue"]
    assert any(i["severity"] == "error" and "Patient.id" in i.get("expression", []) for i in issues)


def test_resource_type_not_matching_url_is_refused(server: RunningServer, uid: str) -> None:
    """POST /Observation with a Patient body is a 400 naming the resourceType mismatch."""
    issues = expect_outcome(server.client.post("/Observation", json=_with_identifier({"resourceType": "Patient"}, uid)),
                            400, 422)
    assert "resourceType" in str(issues[0]["diagnostics"])
    assert issues[0].get("expression")
    assert _stored(server, "Patient", uid) == []


def test_update_resource_type_not_matching_url_is_refused(server: RunningServer, uid: str) -> None:
    """PUT /Patient/x with an Observation body is refused."""
    expect_outcome(server.client.put(f"/Patient/t-{uid}", json={**OBS, "id": f"t-{uid}"}), 400, 422)
    assert server.client.get(f"/Patient/t-{uid}").status_code == 404


def test_body_id_not_matching_url_id_is_refused(server: RunningServer, uid: str) -> None:
    """PUT /Patient/a with id b in the body is a 400 pointing at Patient.id; neither id is created."""
    issues = expect_outcome(server.client.put(f"/Patient/a-{uid}", json={"resourceType": "Patient", "id": f"b-{uid}"}),
                            400, 422)
    assert "Patient.id" in _expressions(issues)
    assert server.client.get(f"/Patient/a-{uid}").status_code == 404
    assert server.client.get(f"/Patient/b-{uid}").status_code == 404


def test_missing_resource_type_is_refused(server: RunningServer) -> None:
    """A JSON object without resourceType is not a resource."""
    expect_outcome(server.client.post("/Patient", json={"gender": "male"}), 400, 422)
