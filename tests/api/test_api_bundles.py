"""batch and transaction at POST [base]: https://hl7.org/fhir/R4/http.html#transaction"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support.server import RunningServer, expect_outcome

SYNTHEA = Path("/work/shared/data/synthea-r4")
SYNTHEA_FILES = [
    "Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json",
    "Gustavo_Mejía_59a8543c-e24f-4a01-b28b-47ccde6bc11d.json",
]


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post(resource: dict[str, Any], full_url: str | None = None, **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"],
                                                               **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _patient(system: str, value: str = "1", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}], **extra}


def _obs(subject: str, text: str = "x") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": text},
            "subject": {"reference": subject}}


def _search_ids(server: RunningServer, query: str) -> list[str]:
    r = server.client.get(query)
    assert r.status_code == 200, r.text
    return sorted(e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match")


def _id_of(location: str) -> str:
    """The id in `[base/]Type/id/_history/n`."""
    return location.split("/_history/")[0].rsplit("/", 1)[-1]


# ---- batch ----------------------------------------------------------------------------------------

def test_batch_entries_succeed_or_fail_independently(server: RunningServer, uid: str) -> None:
    """A failing batch entry gets its own 4xx with an outcome; the other entries still run."""
    system = f"urn:batch:{uid}"
    existing = server.client.post("/Patient", json=_patient(system, "old")).json()
    bundle = _bundle(
        "batch",
        _post(_patient(system, "a")),
        _post({"resourceType": "Patient", "gender": "not-a-gender"}),
        {"request": {"method": "GET", "url": f"Patient/missing-{uid}"}},
        {"resource": {**_patient(system, "b"), "id": f"b-{uid}"},
         "request": {"method": "PUT", "url": f"Patient/b-{uid}"}},
        {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
        {"request": {"method": "DELETE", "url": f"Patient/{existing['id']}"}},
    )
    r = server.client.post("", json=bundle)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"].split()[0] for e in out["entry"]]
    assert statuses == ["201", "400", "404", "201", "200", "204"]
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert out["entry"][2]["response"]["outcome"]["issue"][0]["code"] == "not-found"
    assert out["entry"][4]["resource"]["id"] == existing["id"]
    created = _id_of(out["entry"][0]["response"]["location"])
    assert server.client.get(f"/Patient/{created}").status_code == 200
    assert server.client.get(f"/Patient/b-{uid}").status_code == 200
    assert server.client.get(f"/Patient/{existing['id']}").status_code == 410
    assert _search_ids(server, f"/Patient?identifier={system}|") == sorted([created, f"b-{uid}"])


def test_batch_if_match_failure_affects_only_that_entry(server: RunningServer, uid: str) -> None:
    """A batch PUT with a stale ifMatch is 412 in its entry; the next entry is still applied."""
    system = f"urn:batch:{uid}"
    p = server.client.post("/Patient", json=_patient(system)).json()
    bundle = _bundle(
        "batch",
        {"resource": {**_patient(system), "id": p["id"], "active": True},
         "request": {"method": "PUT", "url": f"Patient/{p['id']}", "ifMatch": 'W/"7"'}},
        _post(_patient(system, "2")),
    )
    out = server.client.post("", json=bundle).json()
    assert [e["response"]["status"].split()[0] for e in out["entry"]] == ["412", "201"]
    assert "active" not in server.client.get(f"/Patient/{p['id']}").json()


def test_batch_with_prefer_representation_returns_resources(server: RunningServer, uid: str) -> None:
    """Prefer: return=representation puts each written resource into its response entry."""
    r = server.client.post("", json=_bundle("batch", _post(_patient(f"urn:b:{uid}"))),
                           headers={"Prefer": "return=representation"})
    entry = r.json()["entry"][0]
    assert entry["resource"]["resourceType"] == "Patient"
    assert entry["resource"]["meta"]["versionId"] == "1"


def test_bundle_of_other_type_is_rejected(server: RunningServer) -> None:
    """POST [base] with a collection Bundle is a 400: only batch and transaction are processed."""
    expect_outcome(server.client.post("", json=_bundle("collection")), 400)


# ---- transaction ----------------------------------------------------------------------------------

def test_transaction_resolves_urn_uuid_references(server: RunningServer, uid: str) -> None:
    """urn:uuid fullUrls are replaced by the assigned Type/id in references, and are searchable."""
    urn = "urn:uuid:3c5a0b1e-6f35-4d7a-9a0e-1d2f3e4a5b6c"
    bundle = _bundle("transaction", _post(_obs(urn, uid)), _post(_patient(f"urn:tx:{uid}"), urn))
    r = server.client.post("", json=bundle)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    assert [e["response"]["status"].split()[0] for e in out["entry"]] == ["201", "201"]
    obs_id, pat_id = (_id_of(e["response"]["location"]) for e in out["entry"])
    obs = server.client.get(f"/Observation/{obs_id}").json()
    assert obs["subject"]["reference"] == f"Patient/{pat_id}"
    assert _search_ids(server, f"/Observation?subject=Patient/{pat_id}") == [obs_id]


def test_transaction_failure_rolls_back_everything(server: RunningServer, uid: str) -> None:
    """One failing entry (stale ifMatch) makes the whole transaction fail with that entry's 412 outcome."""
    system = f"urn:tx:{uid}"
    target = server.client.post("/Patient", json=_patient(system, "target")).json()
    bundle = _bundle(
        "transaction",
        _post(_patient(system, "new")),
        {"request": {"method": "DELETE", "url": f"Patient/{target['id']}"}},
        {"resource": {**_patient(system, "target"), "id": target["id"], "active": True},
         "request": {"method": "PUT", "url": f"Patient/{target['id']}", "ifMatch": 'W/"9"'}},
    )
    issues = expect_outcome(server.client.post("", json=bundle), 412)
    assert any("Bundle.entry[2]" in str(i.get("diagnostics")) + str(i.get("expression")) for i in issues)
    assert _search_ids(server, f"/Patient?identifier={system}|new") == []
    current = server.client.get(f"/Patient/{target['id']}")
    assert current.status_code == 200  # the DELETE was undone too
    assert current.json()["meta"]["versionId"] == "1"


def test_transaction_invalid_resource_fails_with_entry_expression(server: RunningServer, uid: str) -> None:
    """An invalid resource in a transaction is a 4xx whose issue expression points into that entry."""
    system = f"urn:tx:{uid}"
    bundle = _bundle("transaction", _post(_patient(system)), _post({**_patient(system, "2"), "gender": "x"}))
    issues = expect_outcome(server.client.post("", json=bundle), 400, 422)
    assert any(e.startswith("Bundle.entry[1].resource") for i in issues for e in i.get("expression", []))
    assert _search_ids(server, f"/Patient?identifier={system}|") == []


def test_transaction_resolves_conditional_reference(server: RunningServer, uid: str) -> None:
    """A reference `Patient?identifier=sys|val` is rewritten to the one matching Patient."""
    system = f"urn:tx:{uid}"
    pat = server.client.post("/Patient", json=_patient(system, "p")).json()
    r = server.client.post("", json=_bundle("transaction", _post(_obs(f"Patient?identifier={system}|p"))))
    assert r.status_code == 200, r.text
    obs_id = _id_of(r.json()["entry"][0]["response"]["location"])
    assert server.client.get(f"/Observation/{obs_id}").json()["subject"]["reference"] == f"Patient/{pat['id']}"


def test_transaction_conditional_reference_without_match_fails(server: RunningServer, uid: str) -> None:
    """A conditional reference matching no resource fails the transaction; nothing is stored."""
    system = f"urn:tx:{uid}"
    obs = {**_obs(f"Patient?identifier=urn:none:{uid}|p"), "identifier": [{"system": system, "value": "o"}]}
    other = _post({"resourceType": "Observation", "status": "final", "code": {"text": "ok"},
                   "identifier": [{"system": system, "value": "fine"}]})
    r = server.client.post("", json=_bundle("transaction", other, _post(obs)))
    expect_outcome(r, 400, 404, 412, 422)
    assert _search_ids(server, f"/Observation?identifier={system}|") == []


def test_transaction_if_none_exist_reuses_existing_and_resolves_its_full_url(server: RunningServer, uid: str) -> None:
    """An ifNoneExist entry that matches returns 200 and references to its fullUrl point at the existing one."""
    system = f"urn:tx:{uid}"
    pat = server.client.post("/Patient", json=_patient(system, "p")).json()
    urn = "urn:uuid:5d1c3d9a-3c1b-4f5e-8a4e-0a2b3c4d5e6f"
    bundle = _bundle("transaction",
                     _post(_patient(system, "p"), urn, ifNoneExist=f"identifier={system}|p"),
                     _post(_obs(urn)))
    r = server.client.post("", json=bundle)
    assert r.status_code == 200, r.text
    first, second = r.json()["entry"]
    assert first["response"]["status"].startswith("200")
    assert _id_of(first["response"]["location"]) == pat["id"]
    obs_id = _id_of(second["response"]["location"])
    assert server.client.get(f"/Observation/{obs_id}").json()["subject"]["reference"] == f"Patient/{pat['id']}"
    assert _search_ids(server, f"/Patient?identifier={system}|") == [pat["id"]]


def test_transaction_if_none_exist_without_match_creates(server: RunningServer, uid: str) -> None:
    """An ifNoneExist entry without a match creates the resource (201)."""
    system = f"urn:tx:{uid}"
    entry = _post(_patient(system), ifNoneExist=f"identifier={system}|1")
    r = server.client.post("", json=_bundle("transaction", entry))
    assert r.json()["entry"][0]["response"]["status"].startswith("201")
    assert len(_search_ids(server, f"/Patient?identifier={system}|1")) == 1


def test_transaction_if_match_current_version_updates(server: RunningServer, uid: str) -> None:
    """A PUT entry with the current ifMatch updates the resource to version 2."""
    p = server.client.post("/Patient", json=_patient(f"urn:tx:{uid}")).json()
    bundle = _bundle("transaction", {"resource": {**p, "active": True},
                                     "request": {"method": "PUT", "url": f"Patient/{p['id']}", "ifMatch": 'W/"1"'}})
    r = server.client.post("", json=bundle)
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["response"]["etag"] == 'W/"2"'
    assert server.client.get(f"/Patient/{p['id']}").json()["active"] is True


def test_transaction_get_with_if_none_match_returns_304_entry(server: RunningServer, uid: str) -> None:
    """A GET entry with the current ifNoneMatch answers 304 in its entry; a stale one answers 200."""
    p = server.client.post("/Patient", json=_patient(f"urn:tx:{uid}")).json()
    bundle = _bundle("transaction",
                     {"request": {"method": "GET", "url": f"Patient/{p['id']}", "ifNoneMatch": 'W/"1"'}},
                     {"request": {"method": "GET", "url": f"Patient/{p['id']}", "ifNoneMatch": 'W/"0"'}})
    out = server.client.post("", json=bundle).json()
    assert [e["response"]["status"].split()[0] for e in out["entry"]] == ["304", "200"]


def test_transaction_put_if_none_match_on_existing_resource_fails(server: RunningServer, uid: str) -> None:
    """A PUT entry with ifNoneMatch=* on an existing resource fails the transaction with 412."""
    p = server.client.post("/Patient", json=_patient(f"urn:tx:{uid}")).json()
    bundle = _bundle("transaction", {"resource": {**p, "active": True},
                                     "request": {"method": "PUT", "url": f"Patient/{p['id']}", "ifNoneMatch": "*"}})
    expect_outcome(server.client.post("", json=bundle), 412)
    assert server.client.get(f"/Patient/{p['id']}").json()["meta"]["versionId"] == "1"


def test_transaction_runs_get_after_writes(server: RunningServer, uid: str) -> None:
    """A GET listed first is processed last: it sees the resources POSTed and PUT by the same transaction."""
    system = f"urn:tx:{uid}"
    put_id = f"put-{uid}"
    bundle = _bundle(
        "transaction",
        {"request": {"method": "GET", "url": f"Patient?identifier={system}|"}},
        {"resource": {**_patient(system, "put"), "id": put_id},
         "request": {"method": "PUT", "url": f"Patient/{put_id}"}},
        _post(_patient(system, "post")),
    )
    r = server.client.post("", json=bundle)
    assert r.status_code == 200, r.text
    search = r.json()["entry"][0]
    assert search["response"]["status"].startswith("200")
    found = sorted(e["resource"]["id"] for e in search["resource"]["entry"])
    posted = _id_of(r.json()["entry"][2]["response"]["location"])
    assert found == sorted([put_id, posted])


def test_transaction_runs_delete_before_post(server: RunningServer, uid: str) -> None:
    """DELETE is processed before POST: a conditional create listed first no longer sees the deleted match."""
    system = f"urn:tx:{uid}"
    old = server.client.post("/Patient", json=_patient(system, "x")).json()
    bundle = _bundle(
        "transaction",
        _post(_patient(system, "x", active=True), ifNoneExist=f"identifier={system}|x"),
        {"request": {"method": "DELETE", "url": f"Patient/{old['id']}"}},
    )
    r = server.client.post("", json=bundle)
    assert r.status_code == 200, r.text
    created = r.json()["entry"][0]["response"]
    assert created["status"].startswith("201"), created
    assert _id_of(created["location"]) != old["id"]
    assert server.client.get(f"/Patient/{old['id']}").status_code == 410
    assert _search_ids(server, f"/Patient?identifier={system}|x") == [_id_of(created["location"])]


def test_transaction_put_listed_before_post_gets_the_posted_id(server: RunningServer, uid: str) -> None:
    """A PUT listed before the POST it references (by urn:uuid) is stored with the POSTed resource's id."""
    system = f"urn:tx:{uid}"
    put_id = f"put-{uid}"
    urn = "urn:uuid:0e9b7f1c-2a3d-4e5f-8a9b-0c1d2e3f4a5b"
    bundle = _bundle(
        "transaction",
        {"resource": {**_obs(urn), "id": put_id}, "request": {"method": "PUT", "url": f"Observation/{put_id}"}},
        _post(_patient(system), urn),
    )
    r = server.client.post("", json=bundle)
    assert r.status_code == 200, r.text
    pat_id = _id_of(r.json()["entry"][1]["response"]["location"])
    assert server.client.get(f"/Observation/{put_id}").json()["subject"]["reference"] == f"Patient/{pat_id}"


def test_transaction_runs_post_before_conditional_put(server: RunningServer, uid: str) -> None:
    """POST is processed before PUT: a conditional PUT matching the POSTed resource never creates a duplicate."""
    system = f"urn:tx:{uid}"
    bundle = _bundle(
        "transaction",
        {"resource": _patient(system, "n", active=True),
         "request": {"method": "PUT", "url": f"Patient?identifier={system}|n"}},
        _post(_patient(system, "n")),
    )
    r = server.client.post("", json=bundle)
    assert r.status_code == 200 or 400 <= r.status_code < 500, r.text
    found = _search_ids(server, f"/Patient?identifier={system}|n")
    if r.status_code == 200:  # the PUT updated what the POST created
        assert len(found) == 1
        assert server.client.get(f"/Patient/{found[0]}").json()["meta"]["versionId"] == "2"
    else:  # or the overlap made the transaction fail as a whole
        assert found == []


def test_transaction_conditional_update_and_delete_entries(server: RunningServer, uid: str) -> None:
    """PUT Type?criteria and DELETE Type?criteria entries match like their HTTP counterparts."""
    system = f"urn:tx:{uid}"
    upd = server.client.post("/Patient", json=_patient(system, "upd")).json()
    gone = server.client.post("/Patient", json=_patient(system, "gone")).json()
    bundle = _bundle(
        "transaction",
        {"resource": _patient(system, "upd", active=True),
         "request": {"method": "PUT", "url": f"Patient?identifier={system}|upd"}},
        {"request": {"method": "DELETE", "url": f"Patient?identifier={system}|gone"}},
    )
    r = server.client.post("", json=bundle)
    assert r.status_code == 200, r.text
    assert [e["response"]["status"].split()[0] for e in r.json()["entry"]] == ["200", "204"]
    assert server.client.get(f"/Patient/{upd['id']}").json()["active"] is True
    assert server.client.get(f"/Patient/{gone['id']}").status_code == 410


def test_transaction_with_same_resource_twice_is_rejected(server: RunningServer, uid: str) -> None:
    """Two entries writing the same Type/id make the transaction fail; nothing is stored."""
    id_ = f"dup-{uid}"
    entry = {"resource": {"resourceType": "Patient", "id": id_}, "request": {"method": "PUT", "url": f"Patient/{id_}"}}
    expect_outcome(server.client.post("", json=_bundle("transaction", entry, entry)), 400, 409, 412)
    assert server.client.get(f"/Patient/{id_}").status_code == 404


def test_transaction_patch_entry_applies_binary_json_patch(server: RunningServer, uid: str) -> None:
    """A PATCH entry carrying a Binary JSON Patch is applied."""
    import base64

    p = server.client.post("/Patient", json=_patient(f"urn:tx:{uid}")).json()
    doc = base64.b64encode(json.dumps([{"op": "add", "path": "/active", "value": True}]).encode()).decode()
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": doc}
    bundle = _bundle("transaction", {"resource": binary,
                                     "request": {"method": "PATCH", "url": f"Patient/{p['id']}"}})
    r = server.client.post("", json=bundle)
    assert r.status_code == 200, r.text
    assert server.client.get(f"/Patient/{p['id']}").json()["active"] is True


def test_synthea_bundles_load_and_every_resource_is_readable(server: RunningServer) -> None:
    """Two Synthea transaction Bundles load through POST /fhir; every created resource reads back."""
    for name in SYNTHEA_FILES:
        bundle = json.loads((SYNTHEA / name).read_text())
        r = server.client.post("", json=bundle)
        assert r.status_code == 200, r.text[:3000]
        out = r.json()["entry"]
        assert len(out) == len(bundle["entry"])
        assert all(e["response"]["status"].startswith("201") for e in out)
        patient_id = None
        for sent, got in zip(bundle["entry"], out, strict=True):
            type_ = sent["resource"]["resourceType"]
            id_ = _id_of(got["response"]["location"])
            read = server.client.get(f"/{type_}/{id_}")
            assert read.status_code == 200, (type_, id_, read.text)
            assert read.json()["resourceType"] == type_
            if type_ == "Patient":
                patient_id = id_
            assert "urn:uuid:" not in read.text, f"{type_}/{id_} kept an unresolved urn:uuid reference"
        assert patient_id is not None
        encounters = server.client.get("/Encounter", params={"subject": f"Patient/{patient_id}", "_count": "500"})
        expected = sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter")
        assert len(encounters.json().get("entry", [])) == expected
