"""Every interaction on patient data leaves the expected AuditEvent, on a live server with real tokens.

https://profiles.ihe.net/ITI/BALP/ and https://hl7.org/fhir/R4/auditevent.html#search: records per
interaction (count, action, patients, client_id), one record per search listing every patient it
returned, denied attempts, the dedicated AuditEvent scopes, and no API that changes the log.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from auditkit import client_token
from authkit import AuthServer

from samverka.audit.model import columns


@dataclass
class Clients:
    full_id: str
    full: str  # system/*.cruds
    reader_id: str
    reader: str  # system/Patient.rs
    auditor: str  # system/AuditEvent.rs


@pytest.fixture(scope="module")
def clients(audit_server: AuthServer) -> Clients:
    full_id, full = client_token(audit_server, "system/*.cruds")
    reader_id, reader = client_token(audit_server, "system/Patient.rs")
    _aid, auditor = client_token(audit_server, "system/AuditEvent.rs")
    return Clients(full_id, full, reader_id, reader, auditor)


def _events(server: AuthServer, token: str, **params: str) -> list[dict[str, Any]]:
    with server.fhir(token) as fhir:
        r = fhir.get("/AuditEvent", params={**params, "_count": "200"})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def _post(fhir: httpx.Client, path: str, body: dict[str, Any]) -> str:
    r = fhir.post(path, json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _patient(fhir: httpx.Client) -> str:
    return _post(fhir, "/Patient", {"resourceType": "Patient", "name": [{"family": f"A{uuid.uuid4().hex[:6]}"}]})


def _obs(fhir: httpx.Client, pid: str) -> str:
    return _post(fhir, "/Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "puls"},
                                        "subject": {"reference": f"Patient/{pid}"}})


def test_each_interaction_writes_one_record(audit_server: AuthServer, clients: Clients) -> None:
    with audit_server.fhir(clients.full) as fhir:
        pid = _patient(fhir)
        oid = _obs(fhir, pid)
        assert fhir.get(f"/Observation/{oid}").status_code == 200
        assert fhir.get(f"/Observation/{oid}/_history/1").status_code == 200
        assert fhir.get(f"/Observation/{oid}/_history").status_code == 200
        body = fhir.get(f"/Observation/{oid}").json()
        body["status"] = "amended"
        assert fhir.put(f"/Observation/{oid}", json=body).status_code == 200
        r = fhir.patch(f"/Observation/{oid}", content=b'[{"op":"replace","path":"/status","value":"final"}]',
                       headers={"Content-Type": "application/json-patch+json"})
        assert r.status_code == 200, r.text
        assert fhir.delete(f"/Observation/{oid}").status_code == 204
    events = list(reversed(_events(audit_server, clients.auditor, patient=pid)))
    got = [(e["action"], e["subtype"][0]["code"]) for e in events]
    assert got == [("C", "create"), ("C", "create"), ("R", "read"), ("R", "vread"), ("R", "history-instance"),
                   ("R", "read"), ("U", "update"), ("U", "patch"), ("D", "delete")]
    for e in events:
        c = columns(e)
        assert c.patients == (pid,) and c.client_id == clients.full_id and c.outcome == "0"
        assert e["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
        assert e["agent"][0]["network"]["address"] == "127.0.0.1"
    assert events[0]["meta"]["profile"][0].endswith("IHE.BasicAudit.PatientCreate")
    assert f"Observation/{oid}/_history/4" in [x["what"]["reference"] for x in events[-1]["entity"] if "what" in x]


def test_a_search_writes_one_record_with_every_patient(audit_server: AuthServer, clients: Clients) -> None:
    with audit_server.fhir(clients.full) as fhir:
        pids = [_patient(fhir) for _ in range(3)]
        oids = [_obs(fhir, p) for p in pids]
        r = fhir.get("/Observation", params={"_id": ",".join(oids)})
        assert r.status_code == 200 and r.json()["total"] == 3
    searches = [e for e in _events(audit_server, clients.auditor, patient=pids[0])
                if e["subtype"][0]["code"] == "search-type"]
    assert len(searches) == 1
    assert columns(searches[0]).patients == tuple(sorted(pids))
    assert searches[0]["meta"]["profile"][0].endswith("IHE.BasicAudit.PatientQuery")
    for p in pids[1:]:
        assert [e["id"] for e in _events(audit_server, clients.auditor, patient=p, subtype="search-type")] == [
            searches[0]["id"]]


def test_a_search_record_names_the_patients_of_included_resources_too(audit_server: AuthServer,
                                                                       clients: Clients) -> None:
    """The patients come from the rows the search read (matches and includes), not from a second lookup."""
    with audit_server.fhir(clients.full) as fhir:
        a, b = _patient(fhir), _patient(fhir)
        enc = _post(fhir, "/Encounter", {"resourceType": "Encounter", "status": "finished", "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{a}"}})
        obs = _post(fhir, "/Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                           "subject": {"reference": f"Patient/{b}"},
                                           "encounter": {"reference": f"Encounter/{enc}"}})
        r = fhir.get("/Encounter", params={"_id": enc, "_revinclude": "Observation:encounter"})
        assert [e["search"]["mode"] for e in r.json()["entry"]] == ["match", "include"]
    [record] = [e for e in _events(audit_server, clients.auditor, patient=b, subtype="search-type")]
    assert columns(record).patients == tuple(sorted([a, b]))
    assert {"Encounter/" + enc, "Observation/" + obs} <= set(columns(record).refs)


def test_a_transaction_records_its_writes_in_it(audit_server: AuthServer, clients: Clients) -> None:
    with audit_server.fhir(clients.full) as fhir:
        pid = _patient(fhir)
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "POST", "url": "Observation"},
             "resource": {"resourceType": "Observation", "status": "final", "code": {"text": t},
                          "subject": {"reference": f"Patient/{pid}"}}} for t in ("a", "b")]}
        assert fhir.post("", json=bundle).status_code == 200
    creates = [e for e in _events(audit_server, clients.auditor, patient=pid) if e["action"] == "C"]
    assert len(creates) == 2  # the Patient, then one record for the transaction's two creates
    assert len([x for x in creates[0]["entity"] if x["role"]["code"] == "4"]) == 2


def test_denied_attempts_are_logged(audit_server: AuthServer, clients: Clients) -> None:
    with audit_server.fhir(clients.full) as fhir:
        pid = _patient(fhir)
    with audit_server.fhir(clients.reader) as fhir:
        assert fhir.delete(f"/Patient/{pid}").status_code == 403
    assert audit_server.srv.client.get(f"/Patient/{pid}").status_code == 401
    failed = _events(audit_server, clients.auditor, patient=pid, outcome="4")
    assert [(e["action"], columns(e).client_id) for e in failed] == [("R", None), ("D", clients.reader_id)]
    assert "403" in failed[1]["outcomeDesc"] and "401" in failed[0]["outcomeDesc"]


def test_no_api_changes_the_audit_log(audit_server: AuthServer, clients: Clients) -> None:
    with audit_server.fhir(clients.full) as fhir:
        pid = _patient(fhir)
    some = _events(audit_server, clients.auditor, patient=pid)[0]
    with audit_server.fhir(clients.auditor) as fhir:
        for method in ("PUT", "DELETE", "PATCH"):
            assert fhir.request(method, f"/AuditEvent/{some['id']}", json=some).status_code == 405
        assert fhir.post("/AuditEvent", json=some).status_code == 405
        assert fhir.get(f"/AuditEvent/{some['id']}").json() == some
    with audit_server.fhir(clients.full) as fhir:  # a transaction cannot smuggle one in either
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "POST", "url": "AuditEvent"}, "resource": some}]}
        assert fhir.post("", json=bundle).status_code == 405
        assert fhir.get("/AuditEvent").status_code == 403  # system/*.cruds is not an auditor's scope
    assert audit_server.cli("audit", "verify").returncode == 0


def test_audit_search_parameters(audit_server: AuthServer, clients: Clients) -> None:
    with audit_server.fhir(clients.full) as fhir:
        pid = _patient(fhir)
        oid = _obs(fhir, pid)
        assert fhir.get(f"/Observation/{oid}").status_code == 200
    ours = _events(audit_server, clients.auditor, patient=f"Patient/{pid}")
    assert len(ours) == 3
    day = ours[0]["recorded"][:10]
    assert len(_events(audit_server, clients.auditor, patient=pid, date=day)) == 3
    assert _events(audit_server, clients.auditor, patient=pid, date="lt2000-01-01") == []
    assert len(_events(audit_server, clients.auditor, entity=f"Observation/{oid}")) == 2
    assert len(_events(audit_server, clients.auditor, patient=pid, agent=clients.full_id)) == 3
    assert len(_events(audit_server, clients.auditor, patient=pid, action="R")) == 1
    assert len(_events(audit_server, clients.auditor, patient=pid, subtype="create", outcome="0")) == 2
    assert len(_events(audit_server, clients.auditor, patient=pid,
                       type="http://terminology.hl7.org/CodeSystem/audit-event-type|rest")) == 3


def test_admin_report_api(audit_server: AuthServer, clients: Clients) -> None:
    with audit_server.fhir(clients.full) as fhir:
        pid = _patient(fhir)
        assert fhir.get(f"/Patient/{pid}").status_code == 200
    url = f"{audit_server.origin}/audit/report"
    r = httpx.get(url, params={"patient": pid, "format": "csv"},
                  headers={"Authorization": f"Bearer {audit_server.admin_token()}"})
    assert r.status_code == 200, r.text
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("log_id,system_hsa_id,activity_type,time,purpose,user_hsa_id")
    assert [line.split(",")[2] for line in lines[1:]] == ["Skriva", "Läsa"]
    r = httpx.get(url, params={"patient": pid}, headers={"Authorization": f"Bearer {clients.auditor}"})
    assert r.status_code == 200 and len(r.text.strip().splitlines()) == 2
    assert httpx.get(url, headers={"Authorization": f"Bearer {clients.full}"}).status_code == 403
    assert httpx.get(url).status_code == 401
