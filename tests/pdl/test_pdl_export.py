"""Bulk Data export (https://hl7.org/fhir/uv/bulkdata/export.html) under SMART scopes and Patientdatalagen,
against a live auth-on server (SQLite and PostgreSQL) with real tokens.

A user's export holds exactly what the same user's searches show (care relationship, spärr, another care
provider's information only with consent); a spärr is said in the error file, never shown; a backend
service exports only the types it may search; only the job's own client and user may follow or download
it; kick-off and downloads are audited (subtype `export`). docs/architecture.md "PDL access rules".
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest
from authkit import fresh_key
from loginkit import LaunchServer
from pdlkit import (
    DOCTOR,
    ORTO,
    ORTO_DOCTOR,
    OTHER_PROVIDER,
    OTHER_UNIT,
    PROVIDER,
    VC,
    Users,
    consent,
    encounter,
    observation,
    org,
    patient,
    put_all,
    when,
)

from samverka.auth import tokens
from samverka.store import open_repository

PATIENTS = ["x-a", "x-b", "x-g", "x-k", "x-n", "x-p"]
TYPES = ("Patient", "Encounter", "Observation", "Consent")  # what the fixture holds about its patients
SUBTYPE = "https://samverka.se/fhir/CodeSystem/audit-subtype"
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def world(launch_server: LaunchServer) -> Users:
    """Patients with one relationship (or block) each to the doctor's unit (vårdcentralen)."""
    put_all(launch_server, [
        {"resourceType": "Organization", "id": OTHER_PROVIDER, "name": "Privatvård AB",
         "identifier": [{"system": "urn:oid:1.2.752.29.4.19", "value": OTHER_PROVIDER}]},
        {"resourceType": "Organization", "id": OTHER_UNIT, "name": "Privatvård AB, mottagningen",
         "identifier": [{"system": "urn:oid:1.2.752.29.4.19", "value": OTHER_UNIT}], "partOf": org(OTHER_PROVIDER)},
        # x-a: in care at the doctor's unit now; x-b: no care relationship with it (orthopaedics, 400 days ago)
        patient("x-a"), encounter("x-a-enc", "x-a", VC.id), observation("x-a-obs", "x-a", "x-a-enc"),
        patient("x-b"), encounter("x-b-enc", "x-b", ORTO.id, "finished", when(-400)),
        observation("x-b-obs", "x-b", "x-b-enc"),
        # x-g: in care at the doctor's unit and recently at orthopaedics, which the patient has blocked (spärr)
        patient("x-g"), encounter("x-g-own", "x-g", VC.id), observation("x-g-obs-own", "x-g", "x-g-own"),
        encounter("x-g-orto", "x-g", ORTO.id, "finished", when(-2)), observation("x-g-obs-orto", "x-g", "x-g-orto"),
        consent("x-g-block", "x-g", "deny", [ORTO.id]),
        # x-k: in care at the doctor's unit and treated by another care provider, no consent
        patient("x-k"), encounter("x-k-own", "x-k", VC.id), observation("x-k-obs-own", "x-k", "x-k-own"),
        encounter("x-k-priv", "x-k", OTHER_UNIT, "finished", when(-3)), observation("x-k-obs-priv", "x-k", "x-k-priv"),
        # x-n: like x-k, but has consented to the region's care provider seeing the other provider's records
        patient("x-n"), encounter("x-n-own", "x-n", VC.id), observation("x-n-obs-own", "x-n", "x-n-own"),
        encounter("x-n-priv", "x-n", OTHER_UNIT, "finished", when(-3)), observation("x-n-obs-priv", "x-n", "x-n-priv"),
        consent("x-n-permit", "x-n", "permit", [PROVIDER], {"start": when(-1), "end": when(30)}),
        # x-p: protected identity (sekretessmarkering), in care at the doctor's unit
        patient("x-p", meta={"security": [{"system": "https://samverka.se/fhir/CodeSystem/security-label",
                                           "code": "protected-information"}]},
                address=[{"line": ["Hemliga gatan 7"], "city": "Västerås"}],
                telecom=[{"system": "phone", "value": "070-7654321"}]),
        encounter("x-p-enc", "x-p", VC.id), observation("x-p-obs", "x-p", "x-p-enc"),
    ])
    return Users(launch_server)


@dataclass
class Export:
    """A finished export as its requester sees it: the status URL, the manifest and the files' contents."""

    status_url: str
    manifest: dict[str, Any]
    files: dict[str, list[dict[str, Any]]]  # url -> resources

    def resources(self, kind: str = "output") -> list[dict[str, Any]]:
        return [r for f in self.manifest[kind] for r in self.files[f["url"]]]

    def ids(self, type_: str | None = None) -> set[str]:
        """`Type/id` of every exported resource (of one type) about the fixture's patients."""
        return {f"{r['resourceType']}/{r['id']}" for r in self.resources()
                if r["id"].startswith("x-") and type_ in (None, r["resourceType"])}

    def url(self, type_: str) -> str:
        found = [f["url"] for f in self.manifest["output"] if f["type"] == type_]
        assert len(found) == 1, self.manifest
        return str(found[0])


def kick_off(fhir: httpx.Client, path: str, params: dict[str, str] | None = None) -> str:
    r = fhir.get(path, params=params, headers=ASYNC)
    assert r.status_code == 202, r.text
    return str(r.headers["content-location"])


def finished(fhir: httpx.Client, status_url: str) -> dict[str, Any]:
    """Poll the status URL until the manifest is there (at most ~30 s)."""
    deadline = time.monotonic() + 30
    while True:
        r = fhir.get(status_url)
        if r.status_code != 202:
            assert r.status_code == 200, r.text
            return dict(r.json())
        assert r.headers.get("x-progress") and r.headers.get("retry-after"), r.headers
        assert time.monotonic() < deadline, f"export still running after 30 s: {r.headers.get('x-progress')}"
        time.sleep(0.2)


def download(fhir: httpx.Client, url: str) -> list[dict[str, Any]]:
    r = fhir.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+ndjson"), r.headers
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


def export(fhir: httpx.Client, path: str, params: dict[str, str] | None = None) -> Export:
    status_url = kick_off(fhir, path, params)
    manifest = finished(fhir, status_url)
    urls = [f["url"] for kind in ("output", "deleted", "error") for f in manifest[kind]]
    return Export(status_url, manifest, {u: download(fhir, u) for u in urls})


def searched(fhir: httpx.Client, type_: str) -> set[str]:
    """`Type/id` of what the token's searches show about the fixture's patients."""
    param = ("_id" if type_ == "Patient" else "patient", ",".join(PATIENTS))
    r = fhir.get(f"/{type_}", params=[param, ("_count", "500")])
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert not [link for link in bundle.get("link", []) if link["relation"] == "next"]
    return {f"{type_}/{e['resource']['id']}" for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def notices(found: Export) -> str:
    return " ".join(i.get("diagnostics", "") for oo in found.resources("error") for i in oo["issue"])


def client_token(srv: LaunchServer, scope: str) -> tuple[str, str]:
    """(client id, access token) of a newly registered backend-services client (SMART backend services)."""
    key = fresh_key("ES384")
    client_id = srv.auth.register(scope, key)
    return client_id, srv.auth.token(client_id, key, scope)


@pytest.fixture(scope="module")
def doctor(world: Users) -> Iterator[httpx.Client]:
    with world.fhir(DOCTOR.id, VC.id) as fhir:
        yield fhir


@pytest.fixture(scope="module")
def doctor_export(doctor: httpx.Client) -> Export:
    return export(doctor, "/Patient/$export", {"_type": ",".join(TYPES)})


def test_a_users_export_holds_exactly_what_the_users_searches_show(doctor: httpx.Client,
                                                                    doctor_export: Export) -> None:
    found = doctor_export
    assert found.manifest["requiresAccessToken"] is True
    assert {f["type"] for f in found.manifest["output"]} <= set(TYPES)
    assert all(f["count"] == len(found.files[f["url"]]) for f in found.manifest["output"])
    for type_ in TYPES:
        assert found.ids(type_) == searched(doctor, type_), type_
    ids = found.ids()
    # care relationship at the doctor's unit: in; none: out
    assert {"Patient/x-a", "Encounter/x-a-enc", "Observation/x-a-obs"} <= ids
    assert not {i for i in ids if i.split("/")[1].startswith("x-b")}
    # a spärr hides what orthopaedics recorded, not what the doctor's own unit did
    assert {"Observation/x-g-obs-own", "Encounter/x-g-own"} <= ids
    assert not {"Observation/x-g-obs-orto", "Encounter/x-g-orto"} & ids
    # another care provider's records: only with the patient's consent
    assert {"Observation/x-k-obs-own", "Observation/x-n-obs-own", "Observation/x-n-obs-priv"} <= ids
    assert not {"Observation/x-k-obs-priv", "Encounter/x-k-priv"} & ids
    assert "Encounter/x-n-priv" in ids


def test_a_users_job_stores_filters_that_name_nothing_of_the_process(doctor_export: Export,
                                                                     launch_server: LaunchServer) -> None:
    """Searches bind the care-relationship set by a key valid in one process (store.member); a job's filters
    are stored and run by whichever process takes the job over, so they hold the patients themselves."""
    flag, where = launch_server.auth.store_args
    repo = open_repository(where, None) if flag == "--data-dir" else open_repository(None, where)
    try:
        job = doctor_export.status_url.rstrip("/").split("/")[-1]
        spec = orjson.loads(repo.fetch("SELECT spec FROM export_jobs WHERE id = ?", (job,))[0][0])
    finally:
        repo.close()
    sql = " ".join(cond for cond, _ps in spec["filters"])
    assert "samverka_member" not in sql and "ANY(" not in sql
    assert "x-a" in {p for _cond, ps in spec["filters"] for p in ps}  # the patient with a care relationship


def test_a_spaerr_is_said_in_the_error_file_never_shown(doctor_export: Export) -> None:
    assert [f["type"] for f in doctor_export.manifest["error"]] == ["OperationOutcome"]
    assert all(oo["resourceType"] == "OperationOutcome" for oo in doctor_export.resources("error"))
    assert "spärr" in notices(doctor_export)
    said = json.dumps(doctor_export.resources("error"), ensure_ascii=False)
    everything = json.dumps(doctor_export.files, ensure_ascii=False)
    for hidden in ("x-g-obs-orto", "x-g-orto", "x-k-obs-priv", "x-k-priv", "x-b"):
        assert hidden not in everything, hidden
    assert ORTO.id not in said and "x-g" not in said and "Patient/" not in said, said


def test_inside_the_blocked_unit_the_blocked_information_is_exported(world: Users) -> None:
    """The orthopaedics doctor (the unit that recorded it) gets it, and no spärr notice: the filter is the cause."""
    with world.fhir(ORTO_DOCTOR.id, ORTO.id) as orto:
        found = export(orto, "/Patient/$export", {"_type": ",".join(TYPES)})
        for type_ in TYPES:
            assert found.ids(type_) == searched(orto, type_), type_
    assert {"Observation/x-g-obs-orto", "Encounter/x-g-orto"} <= found.ids()
    assert "Observation/x-a-obs" not in found.ids()  # no care relationship at orthopaedics
    assert found.manifest["error"] == [] and "spärr" not in notices(found)


def test_a_post_kick_off_for_named_patients(doctor: httpx.Client) -> None:
    """POST with a Parameters body naming patients: the user's rules still apply, and the spärr notice is about
    the patients asked for only."""
    def post(*pids: str) -> Export:
        body = {"resourceType": "Parameters", "parameter": [
            {"name": "_type", "valueString": "Observation"},
            *({"name": "patient", "valueReference": {"reference": f"Patient/{p}"}} for p in pids)]}
        r = doctor.post("/Patient/$export", json=body, headers=ASYNC)
        assert r.status_code == 202, r.text
        status_url = str(r.headers["content-location"])
        manifest = finished(doctor, status_url)
        urls = [f["url"] for kind in ("output", "error") for f in manifest[kind]]
        return Export(status_url, manifest, {u: download(doctor, u) for u in urls})

    found = post("x-a", "x-b")
    assert found.ids() == {"Observation/x-a-obs"} and found.manifest["error"] == []
    found = post("x-g")
    assert found.ids() == {"Observation/x-g-obs-own"} and "spärr" in notices(found)


def test_a_system_export_is_not_narrowed_by_patientdatalagen(world: Users, launch_server: LaunchServer) -> None:
    """What the doctor's export left out exists and is exportable: only the user's rules keep it out."""
    with launch_server.auth.fhir(launch_server.system_token) as system:
        found = export(system, "/Patient/$export", {"_type": "Observation"})
    assert {f"Observation/{o}" for o in ("x-b-obs", "x-g-obs-orto", "x-k-obs-priv", "x-a-obs")} <= found.ids()
    assert found.manifest["error"] == []


def test_a_patient_launch_exports_that_patients_compartment_only(world: Users, launch_server: LaunchServer
                                                                 ) -> None:
    """patient/ scopes reach one compartment; the user behind them is still under Patientdatalagen."""
    app = launch_server.register_app()
    tokens = launch_server.user_tokens(app, scope="launch/patient patient/*.rs", patient="x-g")
    assert tokens["patient"] == "x-g"
    with launch_server.auth.fhir(tokens["access_token"]) as fhir:
        found = export(fhir, "/Patient/$export")
        for type_ in TYPES:
            assert found.ids(type_) == searched(fhir, type_), type_
    assert found.manifest["output"] and {f["type"] for f in found.manifest["output"]} <= set(TYPES)
    assert {"Patient/x-g", "Observation/x-g-obs-own", "Encounter/x-g-own"} <= found.ids()
    assert {r["id"] for r in found.resources() if r["resourceType"] == "Patient"} == {"x-g"}
    assert _subjects([r for r in found.resources() if "subject" in r]) == {"Patient/x-g"}
    assert "Observation/x-g-obs-orto" not in found.ids() and "spärr" in notices(found)


def test_protected_identity_is_stripped_as_in_search(doctor: httpx.Client, doctor_export: Export) -> None:
    shown = doctor.get("/Patient", params={"_id": "x-p"}).json()["entry"][0]["resource"]
    assert "address" not in shown and "telecom" not in shown  # what search shows the doctor
    exported = [r for r in doctor_export.resources() if r["resourceType"] == "Patient" and r["id"] == "x-p"]
    assert len(exported) == 1
    assert "address" not in exported[0] and "telecom" not in exported[0], exported[0]
    assert "Hemliga" not in json.dumps(doctor_export.files, ensure_ascii=False)


def test_a_backend_service_exports_only_the_types_it_may_search(world: Users, launch_server: LaunchServer) -> None:
    _client, token = client_token(launch_server, "system/Observation.rs")
    with launch_server.auth.fhir(token) as fhir:
        for named in ("Patient", "Observation,Patient"):
            r = fhir.get("/$export", params={"_type": named}, headers=ASYNC)
            assert r.status_code == 403, r.text
            body = r.json()
            assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["expression"] == ["_type"], body
        found = export(fhir, "/$export")
    assert found.manifest["output"] and {f["type"] for f in found.manifest["output"]} == {"Observation"}
    assert {r["resourceType"] for r in found.resources()} == {"Observation"}
    # a backend service is not a user: no Patientdatalagen, no notices
    assert {f"Observation/{o}" for o in ("x-b-obs", "x-g-obs-orto", "x-k-obs-priv", "x-a-obs")} <= found.ids()
    assert found.manifest["error"] == []


def test_only_the_jobs_client_and_user_may_follow_or_download_it(doctor: httpx.Client, doctor_export: Export,
                                                                  world: Users, launch_server: LaunchServer) -> None:
    file_url = doctor_export.url("Observation")
    _other, token = client_token(launch_server, "system/Observation.rs")
    with launch_server.auth.fhir(token) as other, world.fhir(ORTO_DOCTOR.id, ORTO.id) as colleague:
        for stranger in (other, colleague):  # another client; the same client with another user
            assert stranger.get(doctor_export.status_url).status_code == 404
            assert stranger.get(file_url).status_code == 404
            assert stranger.delete(doctor_export.status_url).status_code == 404
        # a job of its own, for comparison: the stranger's requests above reached the export code
        own = kick_off(other, "/$export")
        assert other.get(own).status_code in (200, 202)
        assert doctor.get(own).status_code == 404
        assert other.delete(own).status_code == 202
        assert other.get(own).status_code == 404
    assert doctor.get(doctor_export.status_url).status_code == 200
    assert download(doctor, file_url) == doctor_export.files[file_url]


def _export_records(srv: LaunchServer, agent: str) -> list[dict[str, Any]]:
    _auditor, token = client_token(srv, "system/AuditEvent.rs")
    with srv.auth.fhir(token) as fhir:
        r = fhir.get("/AuditEvent", params={"subtype": "export", "agent": agent, "_count": "200"})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def _patients(ev: dict[str, Any]) -> set[str]:
    return {e["what"]["reference"] for e in ev.get("entity", [])
            if "what" in e and e["role"]["code"] == "1" and e["what"]["reference"].startswith("Patient/")}


def _query(ev: dict[str, Any]) -> str | None:
    found = [e["query"] for e in ev.get("entity", []) if "query" in e]
    return unquote(base64.b64decode(found[0]).decode()) if found else None


def _client(ev: dict[str, Any]) -> set[str]:
    return {a["who"]["identifier"]["value"] for a in ev["agent"] if "identifier" in a.get("who", {})}


def _subjects(resources: list[dict[str, Any]]) -> set[str]:
    return {r["subject"]["reference"] for r in resources}


def test_kick_off_and_download_are_audited_with_the_files_patients(world: Users, launch_server: LaunchServer) -> None:
    client_id, token = client_token(launch_server, "system/Observation.rs")
    with launch_server.auth.fhir(token) as fhir:
        status_url = kick_off(fhir, "/$export", {"_type": "Observation"})
        manifest = finished(fhir, status_url)
        assert [f["type"] for f in manifest["output"]] == ["Observation"]
        lines = download(fhir, manifest["output"][0]["url"])
    records = _export_records(launch_server, client_id)
    assert all(ev["subtype"] == [{"system": SUBTYPE, "code": "export"}] for ev in records), records
    assert all(client_id in _client(ev) and ev["outcome"] == "0" for ev in records)
    # the polls are not export events: one kick-off, one download
    assert sorted(_query(ev) or "" for ev in records) == ["", "_type=Observation"], records
    kick = next(ev for ev in records if _query(ev) == "_type=Observation")
    got = next(ev for ev in records if _query(ev) != "_type=Observation")
    assert _patients(kick) == set()
    assert _patients(got) == _subjects(lines)
    assert {f"Patient/{p}" for p in ("x-a", "x-b", "x-g", "x-k")} <= _patients(got)


def _file_patients(resources: list[dict[str, Any]]) -> set[str]:
    """The patients whose data a file holds (Patient itself, else its subject or patient)."""
    return {f"Patient/{r['id']}" if r["resourceType"] == "Patient" else (r.get("subject") or r["patient"])["reference"]
            for r in resources}


def test_a_users_downloads_are_audited_with_the_user_and_each_files_patients(world: Users,
                                                                            launch_server: LaunchServer) -> None:
    """A colleague at the doctor's unit, whose only export events are these: one kick-off, one per file."""
    colleague = VC.doctors[1]
    with world.fhir(colleague.id, VC.id) as fhir:
        found = export(fhir, "/Patient/$export", {"_type": ",".join(TYPES)})
    files = [_file_patients(found.files[f["url"]]) for f in found.manifest["output"]]
    assert len(files) == len(TYPES) and all(files)
    assert {"Patient/x-a", "Patient/x-g"} <= set.union(*files) and "Patient/x-b" not in set.union(*files)
    records = _export_records(launch_server, colleague.id)
    assert all(ev["subtype"] == [{"system": SUBTYPE, "code": "export"}] and ev["outcome"] == "0" for ev in records)
    assert all({colleague.id, VC.id, world.client_id} <= _client(ev) for ev in records)
    kicks = [ev for ev in records if _query(ev)]
    assert [_query(ev) for ev in kicks] == [f"_type={','.join(TYPES)}"] and _patients(kicks[0]) == set()
    # one record per downloaded file (the error file holds no patient data), each listing exactly its patients
    downloads = [ev for ev in records if not _query(ev)]
    assert len(downloads) == len(found.files), [sorted(_patients(ev)) for ev in downloads]
    assert sorted(map(sorted, filter(None, map(_patients, downloads)))) == sorted(map(sorted, files))


def _expired_token(srv: LaunchServer, client_id: str) -> str:
    flag, where = srv.auth.store_args
    repo = open_repository(where, None) if flag == "--data-dir" else open_repository(None, where)
    try:
        claims = {"iss": f"{srv.origin}/auth", "sub": client_id, "client_id": client_id,
                  "scope": "system/Observation.rs", "aud": srv.fhir_base}
        token, _ = tokens.mint(tokens.KeyRing(repo), claims, -5)
    finally:
        repo.close()
    return str(token)


def test_expired_or_invalid_token_on_kick_off_is_401(launch_server: LaunchServer) -> None:
    client_id, token = client_token(launch_server, "system/Observation.rs")
    head, body, sig = token.split(".")
    for bad in (_expired_token(launch_server, client_id), f"{head}.{body}.{sig[:-4]}AAAA", "not-a-token"):
        with launch_server.auth.fhir(bad) as fhir:
            r = fhir.get("/$export", headers=ASYNC)
            assert r.status_code == 401, r.text
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["resourceType"] == "OperationOutcome"
    with launch_server.auth.fhir(token) as fhir:  # the same request with the client's valid token
        kicked = kick_off(fhir, "/$export")
        assert fhir.delete(kicked).status_code == 202
