"""Patientdatalagen for users' writes, against a live server (SQLite and PostgreSQL): recording in the
record of a patient without a care relationship is refused (403 with the reason), in a create, an
update, a transaction entry (nothing is written) and a batch entry (that entry only).

Issue 4; PDL 4 kap. 1 § (shared/docs/sweden.md); auth/pdl_writes.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from loginkit import LaunchServer
from pdlkit import DOCTOR, ORTO, VC, Users, encounter, observation, patient, put_all


@pytest.fixture(scope="module")
def users(launch_server: LaunchServer) -> Users:
    put_all(launch_server, [
        patient("wa"), encounter("wa-enc", "wa", VC.id),  # a care relationship with VC
        patient("wb"), encounter("wb-enc", "wb", ORTO.id),  # treated at orthopaedics only
        patient("wc"), patient("wd"), patient("we"), patient("wj"),  # no relationship at all
        # wa was also treated by a private provider: that Encounter is hidden from the doctor (no consent)
        {"resourceType": "Organization", "id": "w-private", "name": "Privatklinik"},
        encounter("wa-priv", "wa", "w-private", "finished", "2026-01-10T10:00:00Z"),
    ])
    return Users(launch_server)


@pytest.fixture(scope="module")
def doctor(users: Users) -> Iterator[httpx.Client]:
    with users.fhir(DOCTOR.id, VC.id) as fhir:
        yield fhir


def _refused(r: httpx.Response, expression: str, pid: str) -> None:
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["code"] == "forbidden"
    assert "no care relationship" in issue["diagnostics"] and f"Patient/{pid}" in issue["diagnostics"], issue
    assert VC.id in issue["diagnostics"]
    assert issue["expression"] == [expression], issue


def _obs(oid: str, pid: str) -> dict[str, Any]:
    return observation(oid, pid, None)


def _stored(srv: LaunchServer, path: str) -> int:
    with srv.auth.fhir(srv.system_token) as system:
        return system.get(path).status_code


def test_create_and_update_need_a_care_relationship(doctor: httpx.Client, launch_server: LaunchServer) -> None:
    _refused(doctor.post("/Observation", json=_obs("x", "wb")), "Observation.subject", "wb")
    _refused(doctor.put("/Observation/wb-new", json=_obs("wb-new", "wb")), "Observation.subject", "wb")
    assert _stored(launch_server, "/Observation/wb-new") == 404
    assert doctor.post("/Observation", json=_obs("x", "wa")).status_code == 201
    assert doctor.put("/Observation/wa-new", json=_obs("wa-new", "wa")).status_code == 201
    # moving one's own record into another patient's compartment is a write there
    _refused(doctor.put("/Observation/wa-new", json=_obs("wa-new", "wb")), "Observation.subject", "wb")
    moved = doctor.get("/Observation/wa-new").json()
    assert moved["subject"]["reference"] == "Patient/wa"


def test_an_encounter_at_the_users_own_unit_starts_a_relationship(doctor: httpx.Client) -> None:
    _refused(doctor.post("/Encounter", json=encounter("x", "wc", ORTO.id)), "Encounter.subject", "wc")
    _refused(doctor.post("/Observation", json=_obs("x", "wc")), "Observation.subject", "wc")
    assert doctor.post("/Encounter", json=encounter("x", "wc", VC.id)).status_code == 201
    assert doctor.post("/Observation", json=_obs("x", "wc")).status_code == 201


def test_transaction_entries_are_checked_and_nothing_is_written(doctor: httpx.Client,
                                                                 launch_server: LaunchServer) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _obs("t-wa", "wa"), "request": {"method": "PUT", "url": "Observation/t-wa"}},
        {"resource": _obs("t-wd", "wd"), "request": {"method": "PUT", "url": "Observation/t-wd"}}]}
    r = doctor.post("", json=bundle)
    _refused(r, "Bundle.entry[1].resource.subject", "wd")
    assert "Bundle.entry[1]" in r.json()["issue"][0]["diagnostics"]
    assert _stored(launch_server, "/Observation/t-wa") == 404 and _stored(launch_server, "/Observation/t-wd") == 404
    # a POST entry referring to the patient by urn:uuid is checked after the reference is resolved
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6a1c0b8e-8c1e-4d37-9f57-b2a4a3a0c001", "resource": patient("t-new"),
         "request": {"method": "PUT", "url": "Patient/t-new"}},
        {"resource": {**_obs("ignored", "x"), "subject": {"reference": "Patient/wd"}},
         "request": {"method": "POST", "url": "Observation"}}]}
    _refused(doctor.post("", json=bundle), "Bundle.entry[1].resource.subject", "wd")
    assert _stored(launch_server, "/Patient/t-new") == 404
    # a patient registered in the same transaction has no record yet to protect
    new = {"reference": "urn:uuid:6a1c0b8e-8c1e-4d37-9f57-b2a4a3a0c002"}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": new["reference"], "resource": {"resourceType": "Patient"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**_obs("ignored", "x"), "subject": new}, "request": {"method": "POST", "url": "Observation"}},
        {"resource": {**encounter("ignored", "x", VC.id), "subject": new},
         "request": {"method": "POST", "url": "Encounter"}}]}
    r = doctor.post("", json=bundle)
    assert r.status_code == 200, r.text
    assert [e["response"]["status"][:3] for e in r.json()["entry"]] == ["201", "201", "201"]


def test_batch_entries_are_refused_in_place(doctor: httpx.Client, launch_server: LaunchServer) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": _obs("b-we", "we"), "request": {"method": "PUT", "url": "Observation/b-we"}},
        {"resource": _obs("b-wa", "wa"), "request": {"method": "PUT", "url": "Observation/b-wa"}}]}
    r = doctor.post("", json=bundle)
    assert r.status_code == 200, r.text
    first, second = r.json()["entry"]
    assert first["response"]["status"].startswith("403"), first
    assert "no care relationship" in first["response"]["outcome"]["issue"][0]["diagnostics"]
    assert second["response"]["status"].startswith("201"), second
    assert _stored(launch_server, "/Observation/b-we") == 404 and _stored(launch_server, "/Observation/b-wa") == 200


def test_emergency_access_and_backend_services_may_record(doctor: httpx.Client, launch_server: LaunchServer) -> None:
    _refused(doctor.post("/Observation", json=_obs("x", "wj")), "Observation.subject", "wj")
    r = doctor.post("/Patient/wj/$emergency-access", json={"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "akut, medvetslös"}]})
    assert r.status_code == 200, r.text
    assert doctor.post("/Observation", json=_obs("x", "wj")).status_code == 201
    with launch_server.auth.fhir(launch_server.system_token) as system:  # not subject to PDL
        assert system.post("/Observation", json=_obs("x", "we")).status_code == 201


def test_a_conditional_update_cannot_probe_hidden_information_through_has(doctor: httpx.Client) -> None:
    """`PUT Patient?_id=wa&_has:Encounter:patient:_id=wa-priv` must not match wa through an Encounter the
    doctor may not see (matching would update wa, 200, and so tell that the Encounter exists)."""
    assert doctor.get("/Encounter/wa-priv").status_code == 403
    r = doctor.put("/Patient", params={"_id": "wa", "_has:Encounter:patient:_id": "wa-priv"},
                   json={"resourceType": "Patient", "name": [{"family": "Ny"}]})
    assert r.status_code == 201, r.text
    assert r.json()["id"] != "wa" and doctor.get("/Patient/wa").json()["meta"]["versionId"] == "1"
    r = doctor.put("/Patient", params={"_id": "wa", "_has:Encounter:patient:_id": "wa-enc"},
                   json={"resourceType": "Patient", "id": "wa", "name": [{"family": "Testsson-wa"}]})
    assert r.status_code == 200, r.text
