"""Scopes enforced on every FHIR interaction of a live server, with tokens from real client assertions.

https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html: read/vread and history need r,
search s (included resources and totals narrowed inside the query), create c, update/patch u,
delete d; each transaction or batch entry is checked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from authkit import AuthServer, fresh_key

TAG = "http://samverka.test/auth"


@dataclass
class World:
    uid: str
    patient: str
    observation: str
    encounter: str
    full: str  # system/*.cruds
    reader: str  # system/Patient.rs system/Observation.rs
    writer: str  # system/Patient.cruds system/Observation.rs
    v1: str  # system/Patient.read


def _token(auth_server: AuthServer, scope: str) -> str:
    key = fresh_key("ES384")
    client_id = auth_server.register(scope, key)
    return auth_server.token(client_id, key, scope)


@pytest.fixture(scope="module")
def world(auth_server: AuthServer) -> World:
    uid = uuid.uuid4().hex[:10]
    full = _token(auth_server, "system/*.cruds")
    meta = {"tag": [{"system": TAG, "code": uid}]}
    with auth_server.fhir(full) as fhir:
        p = fhir.post("/Patient", json={"resourceType": "Patient", "meta": meta, "name": [{"family": "Ek"}]})
        assert p.status_code == 201, p.text
        pid = p.json()["id"]
        e = fhir.post("/Encounter", json={"resourceType": "Encounter", "meta": meta, "status": "finished",
                                          "class": {"code": "AMB"}, "subject": {"reference": f"Patient/{pid}"}})
        assert e.status_code == 201, e.text
        eid = e.json()["id"]
        o = fhir.post("/Observation", json={"resourceType": "Observation", "meta": meta, "status": "final",
                                            "code": {"text": "puls"}, "subject": {"reference": f"Patient/{pid}"},
                                            "encounter": {"reference": f"Encounter/{eid}"}})
        assert o.status_code == 201, o.text
    return World(uid, pid, o.json()["id"], eid, full,
                 _token(auth_server, "system/Patient.rs system/Observation.rs"),
                 _token(auth_server, "system/Patient.cruds system/Observation.rs"),
                 _token(auth_server, "system/Patient.read"))


def _forbidden(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


def _ids(bundle: dict[str, Any], mode: str | None = None) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if "resource" in e and (mode is None or e["search"]["mode"] == mode)}


def test_in_scope_reads_and_searches(auth_server: AuthServer, world: World) -> None:
    with auth_server.fhir(world.reader) as fhir:
        assert fhir.get(f"/Patient/{world.patient}").status_code == 200
        assert fhir.get(f"/Patient/{world.patient}/_history/1").status_code == 200
        assert fhir.get(f"/Patient/{world.patient}/_history").status_code == 200
        r = fhir.get("/Observation", params={"_tag": f"{TAG}|{world.uid}"})
        assert r.status_code == 200 and _ids(r.json()) == {f"Observation/{world.observation}"}
        assert fhir.get(f"/Patient/{world.patient}/Observation").status_code == 200


def test_out_of_scope_type_is_403(auth_server: AuthServer, world: World) -> None:
    with auth_server.fhir(world.reader) as fhir:
        _forbidden(fhir.get(f"/Encounter/{world.encounter}"))
        _forbidden(fhir.get("/Encounter", params={"_tag": f"{TAG}|{world.uid}"}))
        _forbidden(fhir.post("/Encounter/_search", data={"_id": world.encounter}))
        _forbidden(fhir.get(f"/Encounter/{world.encounter}/_history"))
        _forbidden(fhir.get("/_history"))
        _forbidden(fhir.get(f"/Patient/{world.patient}/Encounter"))
        # reaching into another type through _has or a typed chain is a search of that type
        _forbidden(fhir.get("/Patient", params={"_has:Encounter:subject:status": "finished"}))
        _forbidden(fhir.get("/Observation", params={"encounter:Encounter.status": "finished"}))


def test_writes_need_c_u_d(auth_server: AuthServer, world: World) -> None:
    with auth_server.fhir(world.reader) as fhir:
        _forbidden(fhir.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                                   "code": {"text": "x"}}))
        current = fhir.get(f"/Observation/{world.observation}").json()
        _forbidden(fhir.put(f"/Observation/{world.observation}", json=current))
        _forbidden(fhir.patch(f"/Observation/{world.observation}", content=b'[{"op":"remove","path":"/encounter"}]',
                              headers={"Content-Type": "application/json-patch+json"}))
        _forbidden(fhir.delete(f"/Observation/{world.observation}"))
    with auth_server.fhir(world.writer) as fhir:
        r = fhir.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Ny"}]})
        assert r.status_code == 201
        assert fhir.delete(f"/Patient/{r.json()['id']}").status_code in (200, 204)
        _forbidden(fhir.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                                   "code": {"text": "x"}}))


def test_v1_scopes(auth_server: AuthServer, world: World) -> None:
    with auth_server.fhir(world.v1) as fhir:
        assert fhir.get(f"/Patient/{world.patient}").status_code == 200
        assert fhir.get("/Patient", params={"_id": world.patient}).status_code == 200
        _forbidden(fhir.post("/Patient", json={"resourceType": "Patient"}))
        _forbidden(fhir.get(f"/Observation/{world.observation}"))


def test_include_and_revinclude_leave_out_types_outside_scope(auth_server: AuthServer, world: World) -> None:
    tag = f"{TAG}|{world.uid}"
    params = [("_tag", tag), ("_include", "Observation:subject"), ("_include", "Observation:encounter")]
    with auth_server.fhir(world.full) as fhir:
        assert _ids(fhir.get("/Observation", params=params).json(), "include") == {
            f"Patient/{world.patient}", f"Encounter/{world.encounter}"}
    with auth_server.fhir(world.reader) as fhir:
        r = fhir.get("/Observation", params=params)
        assert r.status_code == 200
        assert _ids(r.json(), "include") == {f"Patient/{world.patient}"}
        rev = [("_id", world.patient), ("_revinclude", "Observation:subject"), ("_revinclude", "Encounter:subject")]
        assert _ids(fhir.get("/Patient", params=rev).json(), "include") == {f"Observation/{world.observation}"}
        it = [("_id", world.patient), ("_revinclude", "Observation:subject"),
              ("_include:iterate", "Observation:encounter")]
        assert f"Encounter/{world.encounter}" not in _ids(fhir.get("/Patient", params=it).json())


def test_total_counts_only_what_the_token_may_see(auth_server: AuthServer, world: World) -> None:
    params = {"_tag": f"{TAG}|{world.uid}", "_total": "accurate", "_count": "1"}
    with auth_server.fhir(world.full) as fhir:
        assert fhir.get("", params=params).json()["total"] == 3
    with auth_server.fhir(world.reader) as fhir:
        r = fhir.get("", params=params)
        assert r.status_code == 200 and r.json()["total"] == 2
        r = fhir.get("", params={**params, "_count": "10"})
        assert _ids(r.json()) == {f"Patient/{world.patient}", f"Observation/{world.observation}"}
        summary = fhir.get("", params={"_tag": f"{TAG}|{world.uid}", "_summary": "count"})
        assert summary.json()["total"] == 2


def _bundle(kind: str, uid: str) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"fullUrl": "urn:uuid:0d2a8c1e-5f7b-4a51-9a38-6b1c0e2f4a10",
         "resource": {"resourceType": "Patient", "identifier": [{"system": TAG, "value": f"{kind}-{uid}"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Encounter", "status": "planned", "class": {"code": "AMB"}},
         "request": {"method": "POST", "url": "Encounter"}},
    ]}


def test_transaction_with_a_forbidden_entry_fails_whole(auth_server: AuthServer, world: World) -> None:
    with auth_server.fhir(world.writer) as fhir:
        _forbidden(fhir.post("", json=_bundle("transaction", world.uid)))
        found = fhir.get("/Patient", params={"identifier": f"{TAG}|transaction-{world.uid}"}).json()
        assert found.get("entry", []) == []


def test_batch_answers_403_for_forbidden_entries_only(auth_server: AuthServer, world: World) -> None:
    body = _bundle("batch", world.uid)
    body["entry"].append({"request": {"method": "GET", "url": f"Encounter/{world.encounter}"}})
    body["entry"].append({"request": {"method": "GET", "url": f"Observation?_id={world.observation}"
                                                              "&_include=Observation:encounter"}})
    with auth_server.fhir(world.writer) as fhir:
        r = fhir.post("", json=body)
        assert r.status_code == 200, r.text
        statuses = [e["response"]["status"].split()[0] for e in r.json()["entry"]]
        assert statuses == ["201", "403", "403", "200"]
        searched = r.json()["entry"][3]["resource"]
        assert _ids(searched) == {f"Observation/{world.observation}"}  # the Encounter include is left out


def test_validate_and_metadata_are_public(auth_server: AuthServer) -> None:
    c = auth_server.srv.client
    assert c.get("/metadata").status_code == 200
    r = c.post("/Patient/$validate", json={"resourceType": "Patient"})
    assert r.status_code == 200 and r.json()["resourceType"] == "OperationOutcome"
