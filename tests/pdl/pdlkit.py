"""PDL test helpers: users' tokens from the trusted issuer (RFC 7523 JWT-bearer grant) and a patient world.

Every resource is PUT over HTTP with a backend-services token; users' tokens are minted by the server
from a real issuer assertion, exactly as a region's login service would.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from authkit import ASSERTION_TYPE, ClientKey, assertion, fresh_key
from loginkit import _REGION, JWT_BEARER, LaunchServer, issuer_assertion

VC = _REGION.unit("vardcentral")
ORTO = _REGION.unit("ortopedi")
AKUT = _REGION.unit("akut")
MEDICIN = _REGION.unit("medicin")
DOCTOR = VC.doctors[0]
ORTO_DOCTOR = ORTO.doctors[0]
MED_DOCTOR = MEDICIN.doctors[0]  # also holds an assignment at AKUT (loginkit)
PROVIDER = _REGION.provider_id
OTHER_PROVIDER = "SE5560000001-E000000000001"  # a private care provider outside the region
OTHER_UNIT = "SE5560000001-E000000000002"
RECORDED_AT_UNIT = "https://samverka.se/fhir/CodeSystem/recorded-at-unit"
RECORDED_AT_PROVIDER = "https://samverka.se/fhir/CodeSystem/recorded-at-provider"
PERMISSION = {"system": "https://samverka.se/fhir/CodeSystem/pdl-permission", "code": "protected-identity"}


def when(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def org(ref: str) -> dict[str, str]:
    return {"reference": f"Organization/{ref}"}


def patient(pid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": f"Testsson-{pid}"}], **extra}


def encounter(eid: str, pid: str, unit: str | None, status: str = "in-progress", end: str | None = None,
              location: str | None = None) -> dict[str, Any]:
    enc: dict[str, Any] = {"resourceType": "Encounter", "id": eid, "status": status,
                           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                           "subject": {"reference": f"Patient/{pid}"}}
    if unit:
        enc["serviceProvider"] = org(unit)
    if end:
        enc["period"] = {"start": end, "end": end}
    if location:
        enc["location"] = [{"location": {"reference": f"Location/{location}"}}]
    return enc


def observation(oid: str, pid: str, eid: str | None) -> dict[str, Any]:
    obs: dict[str, Any] = {"resourceType": "Observation", "id": oid, "status": "final",
                           "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
                           "subject": {"reference": f"Patient/{pid}"}, "valueQuantity": {"value": 170, "unit": "cm"}}
    if eid:
        obs["encounter"] = {"reference": f"Encounter/{eid}"}
    return obs


def consent(cid: str, pid: str, kind: str, orgs: list[str], period: dict[str, str] | None = None) -> dict[str, Any]:
    provision: dict[str, Any] = {"type": kind, "actor": [
        {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                              "code": "IRCP"}]}, "reference": org(o)} for o in orgs]}
    if period:
        provision["period"] = period
    return {"resourceType": "Consent", "id": cid, "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{pid}"}, "provision": provision}


def put_all(srv: LaunchServer, resources: list[dict[str, Any]]) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]}
    with srv.auth.fhir(srv.system_token) as fhir:
        r = fhir.post("", json=bundle)
        assert r.status_code == 200, r.text


class Users:
    """Mints users' access tokens through the JWT-bearer grant of a registered confidential client."""

    def __init__(self, srv: LaunchServer, scope: str = "user/*.cruds") -> None:
        self.srv = srv
        self.key: ClientKey = fresh_key("ES384")
        self.scope = scope
        self.client_id = srv.register_app(scope=scope, public=False, key=self.key, grant_types=[JWT_BEARER])

    def token(self, hsa: str, unit: str) -> str:
        srv = self.srv
        form = {"grant_type": JWT_BEARER, "scope": self.scope, "client_assertion_type": ASSERTION_TYPE,
                "assertion": issuer_assertion(srv.idp_key, srv.auth.token_url, sub=hsa, assignment=unit),
                "client_assertion": assertion(self.key, self.client_id, srv.auth.token_url)}
        r = httpx.post(srv.auth.token_url, data=form, timeout=30)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def fhir(self, hsa: str, unit: str) -> httpx.Client:
        return self.srv.auth.fhir(self.token(hsa, unit))
