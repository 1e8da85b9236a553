"""Bulk Data export over HTTP (https://hl7.org/fhir/uv/bulkdata/export.html) on SQLite and PostgreSQL.

Kick-off, status, manifest and NDJSON files against a live `samverka serve`: the files hold exactly what
the equivalent searches return, at system, Patient and Group level, narrowed by `_type`, `_typeFilter`
and `patient`; bad kick-offs get a precise 400; cancelled jobs are gone; kick-offs and downloads are
audited. Authorization and Patientdatalagen on exports: tests/pdl/test_pdl_export.py.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest

from samverka.fhir.instant import parse_instant
from support.server import RunningServer

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def _obs(oid: str, pid: str, code: str, status: str = "final") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": status,
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}, "valueQuantity": {"value": 7, "unit": "mmol/L"}}


@pytest.fixture(scope="module")
def world(server: RunningServer) -> RunningServer:
    resources: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": "org1", "name": "Vårdcentralen"},
        {"resourceType": "Practitioner", "id": "doc1", "name": [{"family": "Läkare"}]},
    ]
    for i in range(1, 5):
        pid = f"p{i}"
        resources += [
            {"resourceType": "Patient", "id": pid, "name": [{"family": f"Andersson{i}"}],
             "managingOrganization": {"reference": "Organization/org1"}},
            {"resourceType": "Encounter", "id": f"e{i}", "status": "finished",
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
             "subject": {"reference": f"Patient/{pid}"}},
            _obs(f"o{i}a", pid, "2339-0"), _obs(f"o{i}b", pid, "8302-2", "amended"),
        ]
    resources.append({"resourceType": "Group", "id": "g1", "type": "person", "actual": True, "member": [
        {"entity": {"reference": "Patient/p1"}}, {"entity": {"reference": "Patient/p2"}},
        {"entity": {"reference": "Patient/p3"}, "inactive": True}]})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]}
    r = server.client.post("", json=bundle)
    assert r.status_code == 200, r.text
    return server


def _kick(c: httpx.Client, path: str, **kw: Any) -> str:
    method = "POST" if "json" in kw else "GET"
    r = c.request(method, path, headers={**ASYNC, **kw.pop("headers", {})}, **kw)
    assert r.status_code == 202, r.text
    return r.headers["content-location"]


def _wait(c: httpx.Client, status_url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        r = c.get(status_url)
        if r.status_code != 202:
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("application/fhir+json") or "json" in r.headers["content-type"]
            body: dict[str, Any] = r.json()
            return body
        assert "x-progress" in r.headers and "retry-after" in r.headers
        assert time.monotonic() < deadline, "the export did not finish in 60 s"
        time.sleep(0.1)


def _files(c: httpx.Client, manifest: dict[str, Any], key: str = "output") -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in manifest[key]:
        r = c.get(f["url"])
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+ndjson")
        rows = [orjson.loads(line) for line in r.content.splitlines()]
        assert len(rows) == f["count"]
        out.setdefault(f["type"], []).extend(rows)
    return out


def _ids(files: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    return {t: sorted(r["id"] for r in rows) for t, rows in files.items()}


def _search_ids(c: httpx.Client, type_: str, **params: str) -> list[str]:
    r = c.get(f"/{type_}", params={"_count": "1000", **params})
    assert r.status_code == 200, r.text
    return sorted(e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match")


def test_system_export_holds_what_the_searches_return(world: RunningServer) -> None:
    c = world.client
    url = _kick(c, "/$export")
    assert url.startswith(f"{world.base}/$export-status/")
    manifest = _wait(c, url)
    assert manifest["request"] == f"{world.base}/$export"
    assert manifest["requiresAccessToken"] is False  # auth is off on this server
    parse_instant(manifest["transactionTime"])
    assert manifest["deleted"] == [] and manifest["error"] == []
    got = _ids(_files(c, manifest))
    assert sorted(got) == ["Encounter", "Group", "Observation", "Organization", "Patient", "Practitioner"]
    for type_, ids in got.items():
        assert ids == _search_ids(c, type_), type_


def test_patient_and_group_level_exports(world: RunningServer) -> None:
    c = world.client
    got = _ids(_files(c, _wait(c, _kick(c, "/Patient/$export"))))
    # the Patient compartment's types (Group is one: Group.member); no Organization or Practitioner
    assert sorted(got) == ["Encounter", "Group", "Observation", "Patient"]
    assert got["Patient"] == ["p1", "p2", "p3", "p4"]
    got = _ids(_files(c, _wait(c, _kick(c, "/Group/g1/$export", params={"_type": "Patient,Observation"}))))
    assert got == {"Patient": ["p1", "p2"], "Observation": ["o1a", "o1b", "o2a", "o2b"]}  # p3 is inactive
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Observation"},
        {"name": "patient", "valueReference": {"reference": "Patient/p4"}},
        {"name": "patient", "valueReference": {"reference": "Patient/p2"}}]}
    got = _ids(_files(c, _wait(c, _kick(c, "/Patient/$export", json=body))))
    assert got == {"Observation": ["o2a", "o2b", "o4a", "o4b"]}


def test_type_filter_narrows_each_type_and_repeated_filters_are_or(world: RunningServer) -> None:
    c = world.client
    url = _kick(c, "/$export", params=[("_type", "Observation,Patient"),
                                       ("_typeFilter", "Observation?code=http://loinc.org|2339-0&subject=Patient/p1"),
                                       ("_typeFilter", "Observation?status=amended&subject=Patient/p1,"
                                                       "Observation?subject=Patient/p2")])
    got = _ids(_files(c, _wait(c, url)))
    # o1a (first filter), o1b (second), o2a and o2b (third) -- each once; Patients unfiltered
    assert got == {"Observation": ["o1a", "o1b", "o2a", "o2b"], "Patient": ["p1", "p2", "p3", "p4"]}


def test_elements_keep_the_named_and_mandatory_elements(world: RunningServer) -> None:
    c = world.client
    url = _kick(c, "/$export", params={"_type": "Observation,Patient", "_elements": "Observation.valueQuantity"})
    files = _files(c, _wait(c, url))
    obs = files["Observation"][0]
    assert "valueQuantity" in obs and "code" in obs and "status" in obs  # code and status are mandatory
    assert "subject" not in obs
    assert any(t["code"] == "SUBSETTED" for t in obs["meta"]["tag"])
    assert "name" in files["Patient"][0]  # Observation.valueQuantity does not narrow Patients


def test_since_and_deletions(world: RunningServer) -> None:
    c = world.client
    time.sleep(0.01)
    since = _wait(c, _kick(c, "/$export", params={"_type": "Practitioner"}))["transactionTime"]
    time.sleep(0.01)
    assert c.put("/Practitioner/doc2", json={"resourceType": "Practitioner", "id": "doc2"}).status_code == 201
    assert c.delete("/Practitioner/doc2x").status_code in (200, 204)  # never existed: no deletion to report
    assert c.put("/Practitioner/doc3", json={"resourceType": "Practitioner", "id": "doc3"}).status_code == 201
    assert c.delete("/Practitioner/doc3").status_code in (200, 204)
    manifest = _wait(c, _kick(c, "/$export", params={"_type": "Practitioner", "_since": since}))
    assert _ids(_files(c, manifest)) == {"Practitioner": ["doc2"]}
    bundles = _files(c, manifest, "deleted")["Bundle"]
    assert [e["request"] for b in bundles for e in b["entry"]] == [{"method": "DELETE", "url": "Practitioner/doc3"}]


@pytest.mark.parametrize(("path", "params", "headers", "status", "expression"), [
    ("/$export", {}, {"Prefer": ""}, 400, None),
    ("/$export", {"_outputFormat": "text/csv"}, {}, 400, "_outputFormat"),
    ("/$export", {"_since": "igår"}, {}, 400, "_since"),
    ("/$export", {"_since": "2026-13-45T99:00:00Z"}, {}, 400, "_since"),
    ("/$export", {"_type": "Observation,Nonsense"}, {}, 400, "_type"),
    ("/Patient/$export", {"_type": "Organization"}, {}, 400, "_type"),
    ("/$export", {"_typeFilter": "Observation"}, {}, 400, "_typeFilter"),
    ("/$export", {"_typeFilter": "Observation?_include=Observation:subject"}, {}, 400, "_typeFilter"),
    ("/$export", {"_typeFilter": "Observation?code=a'); DROP TABLE resources; --"}, {}, 202, None),
    ("/$export", {"_foo": "1"}, {"Prefer": "respond-async, handling=strict"}, 400, "_foo"),
    ("/$export", {"_typeFilter": "Observation?nonsense=1"}, {"Prefer": "respond-async, handling=strict"}, 400,
     "_typeFilter"),
    ("/Group/nope/$export", {}, {}, 404, None),
    ("/Observation/$export", {}, {}, 400, None),
])
def test_bad_kick_offs(world: RunningServer, path: str, params: dict[str, str], headers: dict[str, str],
                       status: int, expression: str | None) -> None:
    r = world.client.get(path, params=params, headers={**ASYNC, **headers})
    assert r.status_code == status, r.text
    if status == 202:
        _wait(world.client, r.headers["content-location"])
        return
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    if expression:
        assert body["issue"][0]["expression"] == [expression]
    assert world.client.get("/Patient/p1").status_code == 200  # still up


def test_unsupported_parameters_are_reported_in_the_error_file(world: RunningServer) -> None:
    c = world.client
    manifest = _wait(c, _kick(c, "/$export", params={"_type": "Organization", "includeAssociatedData": "x"}))
    assert _ids(_files(c, manifest)) == {"Organization": ["org1"]}
    [issue] = [i for o in _files(c, manifest, "error")["OperationOutcome"] for i in o["issue"]]
    assert "includeAssociatedData" in issue["diagnostics"] and issue["severity"] == "warning"


def test_cancel_removes_the_job_and_its_files(world: RunningServer) -> None:
    c = world.client
    url = _kick(c, "/$export")
    manifest = _wait(c, url)
    file_url = manifest["output"][0]["url"]
    assert c.get(file_url).status_code == 200
    assert c.delete(url).status_code == 202
    assert c.get(url).status_code == 404
    assert c.get(file_url).status_code == 404
    assert c.delete(url).status_code == 404
    assert c.get(f"{world.base}/$export-status/0123456789abcdef").status_code == 404
    assert c.get(file_url.rsplit("/", 1)[0] + "/../../../etc/passwd").status_code == 404


def test_kick_off_and_download_are_audited_with_the_patients(world: RunningServer) -> None:
    c = world.client
    manifest = _wait(c, _kick(c, "/Group/g1/$export", params={"_type": "Observation"}))
    [f] = manifest["output"]
    _files(c, manifest)
    found = c.get("/AuditEvent", params={"subtype": "export", "_count": "100"}).json()
    events = [e["resource"] for e in found.get("entry", [])]

    def patients(ev: dict[str, Any]) -> list[str]:
        return sorted(x["what"]["reference"] for x in ev.get("entity", [])
                      if x.get("role", {}).get("code") == "1")

    def query(ev: dict[str, Any]) -> str:
        import base64

        return next((base64.b64decode(x["query"]).decode() for x in ev.get("entity", []) if "query" in x), "")

    kick = [e for e in events if query(e) == "_type=Observation" and patients(e) == ["Patient/p1", "Patient/p2"]]
    assert kick, "no audit record of the Group kick-off"
    assert kick[0]["subtype"][0] == {"system": "https://samverka.se/fhir/CodeSystem/audit-subtype", "code": "export"}
    after = parse_instant(kick[0]["recorded"])  # this test's download, not an earlier test's
    downloads = [e for e in events if patients(e) == ["Patient/p1", "Patient/p2"] and not query(e)
                 and parse_instant(e["recorded"]) >= after]
    assert downloads, f"no audit record of the download of {f['url']}"
    assert all(e["action"] == "R" and e["outcome"] == "0" for e in [*kick, *downloads])


def test_the_capability_statement_declares_bulk_export(world: RunningServer) -> None:
    statement = world.client.get("/metadata").json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in statement["instantiates"]
    assert {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"} in \
        statement["rest"][0]["operation"]
    kinds = {r["type"]: [o["name"] for o in r.get("operation", [])] for r in statement["rest"][0]["resource"]}
    assert "export" in kinds["Patient"] and "export" in kinds["Group"] and "export" not in kinds["Observation"]
