"""The CapabilityStatement at GET [base]/metadata: https://hl7.org/fhir/R4/http.html#capabilities

It must list every R4 resource type (taken here from the shared R4 definitions, not from the server's
own copy) and only interactions and search parameters the server really serves.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from support.server import RunningServer

R4_RESOURCES = Path("/work/shared/fhir-r4/profiles-resources.json")
SERVED_TYPE_INTERACTIONS = {"read", "vread", "update", "patch", "delete", "history-instance", "history-type",
                            "create", "search-type"}
SAMPLE_VALUES = {"token": "x", "string": "x", "date": "2020", "reference": "Patient/x", "number": "1",
                 "quantity": "1", "uri": "http://example.org/x", "composite": "x$2020", "special": "59.85|17.64|5|km"}


@cache
def r4_resource_types() -> frozenset[str]:
    bundle = json.loads(R4_RESOURCES.read_text())
    return frozenset(
        e["resource"]["type"] for e in bundle["entry"]
        if e["resource"].get("resourceType") == "StructureDefinition" and e["resource"].get("kind") == "resource"
        and e["resource"].get("derivation") == "specialization" and not e["resource"].get("abstract")
    )


@pytest.fixture
def capability(server: RunningServer) -> dict[str, Any]:
    r = server.client.get("/metadata")
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def _resource(cs: dict[str, Any], type_: str) -> dict[str, Any]:
    (found,) = [r for r in cs["rest"][0]["resource"] if r["type"] == type_]
    return found


def test_metadata_is_an_r4_capability_statement(capability: dict[str, Any]) -> None:
    """GET /metadata returns a CapabilityStatement for FHIR 4.0.1 in server mode, JSON and XML."""
    assert capability["resourceType"] == "CapabilityStatement"
    assert capability["fhirVersion"] == "4.0.1"
    assert capability["kind"] == "instance"
    assert capability["status"] == "active"
    assert capability["rest"][0]["mode"] == "server"
    assert {"application/fhir+json", "application/fhir+xml"} <= set(capability["format"])
    assert "application/json-patch+json" in capability["patchFormat"]


def test_metadata_lists_every_r4_resource_type_once(capability: dict[str, Any]) -> None:
    """Every one of the 146 R4 resource types is listed, each exactly once."""
    listed = [r["type"] for r in capability["rest"][0]["resource"]]
    assert len(listed) == len(set(listed))
    assert set(listed) == r4_resource_types()
    assert len(listed) == 146


def test_metadata_claims_only_served_interactions(capability: dict[str, Any]) -> None:
    """Each resource lists the interactions the server implements (the audit log only read and search),
    and the system-level ones are present."""
    for r in capability["rest"][0]["resource"]:
        codes = {i["code"] for i in r["interaction"]}
        if r["type"] == "AuditEvent":
            assert codes == {"read", "search-type"}
            continue
        assert codes == SERVED_TYPE_INTERACTIONS, r["type"]
        assert r["versioning"] == "versioned-update"
    system = {i["code"] for i in capability["rest"][0]["interaction"]}
    assert system == {"transaction", "batch", "search-system", "history-system"}


@pytest.mark.parametrize("type_", ["Basic", "Patient", "Observation", "Binary"])
def test_claimed_interactions_are_served(server: RunningServer, capability: dict[str, Any], uid: str,
                                         type_: str) -> None:
    """create, read, vread, update, patch, history and search-type, delete all work for sample types."""
    bodies: dict[str, dict[str, Any]] = {
        "Basic": {"resourceType": "Basic", "code": {"text": uid}},
        "Patient": {"resourceType": "Patient", "gender": "unknown"},
        "Observation": {"resourceType": "Observation", "status": "final", "code": {"text": uid}},
        "Binary": {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVq"},
    }
    assert _resource(capability, type_)["updateCreate"] is True
    c = server.client
    created = c.post(f"/{type_}", json=bodies[type_])
    assert created.status_code == 201, created.text
    id_ = created.json()["id"]
    assert c.get(f"/{type_}/{id_}").status_code == 200
    assert c.get(f"/{type_}/{id_}/_history/1").status_code == 200
    assert c.put(f"/{type_}/{id_}", json={**bodies[type_], "id": id_}).status_code == 200
    patched = c.patch(f"/{type_}/{id_}", json=[{"op": "add", "path": "/language", "value": "sv"}],
                      headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 200, patched.text
    assert c.get(f"/{type_}/{id_}/_history").json()["total"] == 3
    assert c.get(f"/{type_}/_history", params={"_count": "1"}).status_code == 200
    found = c.get(f"/{type_}", params={"_id": id_}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [id_]
    assert c.delete(f"/{type_}/{id_}").status_code == 204
    assert c.get(f"/{type_}/{id_}").status_code == 410


@pytest.mark.parametrize("type_", ["Patient", "Observation", "Encounter", "Condition", "MedicationRequest",
                                   "Practitioner", "Organization", "Location"])
def test_claimed_search_parameters_are_accepted(server: RunningServer, capability: dict[str, Any],
                                                type_: str) -> None:
    """Every search parameter listed for a type is accepted by a strict search (no 400 'unknown')."""
    params = _resource(capability, type_)["searchParam"]
    assert {"_id", "_lastUpdated"} <= {p["name"] for p in params}
    refused = []
    for p in params:
        r = server.client.get(f"/{type_}", params={p["name"]: SAMPLE_VALUES[p["type"]]},
                              headers={"Prefer": "handling=strict"})
        if r.status_code != 200:
            refused.append((p["name"], p["type"], r.status_code, r.text[:200]))
    assert refused == []


def test_patient_search_parameters_include_the_common_ones(capability: dict[str, Any]) -> None:
    """Patient lists identifier, name, birthdate, gender and general-practitioner with their types."""
    params = {p["name"]: p["type"] for p in _resource(capability, "Patient")["searchParam"]}
    assert params["identifier"] == "token"
    assert params["name"] == "string"
    assert params["birthdate"] == "date"
    assert params["gender"] == "token"
    assert params["general-practitioner"] == "reference"


def test_metadata_in_xml(server: RunningServer) -> None:
    """The CapabilityStatement is also served as XML."""
    r = server.client.get("/metadata", params={"_format": "xml"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+xml")
    assert b"<CapabilityStatement" in r.content and b'<fhirVersion value="4.0.1"/>' in r.content


def test_metadata_names_no_security_service_when_auth_is_off(capability: dict[str, Any]) -> None:
    """These servers run with --auth off, so the statement claims no SMART security service."""
    assert "security" not in capability["rest"][0]
