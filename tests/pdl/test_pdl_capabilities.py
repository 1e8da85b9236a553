"""The CapabilityStatement names the operations a server with auth on serves, with their canonicals.

https://hl7.org/fhir/R4/capabilitystatement-definitions.html#CapabilityStatement.rest.resource.operation;
issue 4 (`$emergency-access`, `$lift-block`; docs/architecture.md "PDL access rules").
"""

from __future__ import annotations

from typing import Any

import httpx
from loginkit import LaunchServer

OWN = "https://samverka.se/fhir/OperationDefinition"


def _ops(entry: dict[str, Any]) -> dict[str, str]:
    return {o["name"]: o["definition"] for o in entry.get("operation", [])}


def test_metadata_lists_the_operations_with_their_definitions(launch_server: LaunchServer) -> None:
    r = httpx.get(f"{launch_server.fhir_base}/metadata", timeout=30)
    assert r.status_code == 200, r.text
    rest = r.json()["rest"][0]
    by_type = {e["type"]: e for e in rest["resource"]}
    assert _ops(by_type["Patient"]) == {
        "validate": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
        "emergency-access": f"{OWN}/Patient-emergency-access", "lift-block": f"{OWN}/Patient-lift-block",
        "export": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"}
    assert _ops(by_type["SearchParameter"])["reindex"] == f"{OWN}/SearchParameter-reindex"
    assert {"emergency-access", "lift-block"}.isdisjoint(_ops(by_type["Observation"]))
    assert _ops(rest) == {"validate": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
                          "reindex": f"{OWN}/reindex", "reindex-status": f"{OWN}/reindex-status",
                          "export": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}
    for entry in [rest, *rest["resource"]]:
        for op in entry.get("operation", []):
            assert op["definition"].startswith(("http://", "https://")) and "/OperationDefinition/" in op["definition"]


def test_the_listed_patient_operations_are_served(launch_server: LaunchServer) -> None:
    """Routed (refused to a backend service for want of a user), not answered as unknown operations."""
    with launch_server.auth.fhir(launch_server.system_token) as system:
        for op in ("$emergency-access", "$lift-block"):
            r = system.post(f"/Patient/{launch_server.patient}/{op}", json={"resourceType": "Parameters"})
            assert r.status_code == 403, r.text
            assert "user" in r.json()["issue"][0]["diagnostics"]
