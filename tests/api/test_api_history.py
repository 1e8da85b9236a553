"""history at instance, type and system level: https://hl7.org/fhir/R4/http.html#history

`_since` and `_at` are taken from the server's own meta.lastUpdated stamps, so each test sees only
the versions it wrote, even though the server is shared.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from support.server import RunningServer, expect_outcome


def _patient(uid: str, n: int = 0) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": f"urn:hist:{uid}", "value": str(n)}]}


def _key(entry: dict[str, Any]) -> tuple[str, str, str]:
    """(type, id, version) of a history entry, from its request URL / fullUrl and response ETag."""
    type_, id_ = entry["fullUrl"].rsplit("/", 2)[-2:]
    version = entry["response"]["etag"].removeprefix('W/"').rstrip('"')
    return type_, id_, version


def _all_pages(client: httpx.Client, url: str, params: dict[str, str]) -> tuple[list[dict[str, Any]], int]:
    """Every entry reached by following `next` links from the first page; also the number of pages."""
    entries: list[dict[str, Any]] = []
    page = client.get(url, params=params)
    pages = 0
    while True:
        assert page.status_code == 200, page.text
        bundle = page.json()
        assert bundle["type"] == "history"
        pages += 1
        entries += bundle.get("entry", [])
        nxt = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        if not nxt:
            return entries, pages
        assert pages < 100, "next links do not end"
        page = client.get(nxt[0])


def _write_versions(server: RunningServer, uid: str) -> tuple[str, list[dict[str, Any]]]:
    """Create one Patient and update it twice, a few milliseconds apart; return its id and versions."""
    c = server.client
    time.sleep(0.003)  # no earlier test's write shares our first millisecond (the _since boundary)
    v1 = c.post("/Patient", json=_patient(uid, 1)).json()
    id_ = v1["id"]
    versions = [v1]
    for n in (2, 3):
        time.sleep(0.005)
        r = c.put(f"/Patient/{id_}", json={**_patient(uid, n), "id": id_})
        assert r.status_code == 200, r.text
        versions.append(r.json())
    return id_, versions


def test_instance_history_lists_every_version_newest_first(server: RunningServer, uid: str) -> None:
    """GET [type]/[id]/_history returns all versions, newest first, with total and request/response."""
    id_, versions = _write_versions(server, uid)
    bundle = server.client.get(f"/Patient/{id_}/_history").json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    assert bundle["total"] == 3
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["3", "2", "1"]
    assert [e["request"]["method"] for e in bundle["entry"]] == ["PUT", "PUT", "POST"]
    assert [e["resource"] for e in bundle["entry"]] == versions[::-1]
    assert all(e["response"]["status"].startswith(("200", "201")) for e in bundle["entry"])


def test_instance_history_of_unknown_resource_returns_404(server: RunningServer, uid: str) -> None:
    """History of an id that never existed is 404."""
    expect_outcome(server.client.get(f"/Patient/none-{uid}/_history"), 404)


def test_instance_history_since_excludes_older_versions(server: RunningServer, uid: str) -> None:
    """_since=<lastUpdated of version 2> returns versions 2 and 3 only."""
    id_, versions = _write_versions(server, uid)
    since = versions[1]["meta"]["lastUpdated"]
    bundle = server.client.get(f"/Patient/{id_}/_history", params={"_since": since}).json()
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["3", "2"]


def test_instance_history_at_returns_version_current_then(server: RunningServer, uid: str) -> None:
    """_at=<instant> returns the one version that was current at that instant."""
    id_, versions = _write_versions(server, uid)
    for v in versions:
        bundle = server.client.get(f"/Patient/{id_}/_history", params={"_at": v["meta"]["lastUpdated"]}).json()
        assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == [v["meta"]["versionId"]]
    before = server.client.get(f"/Patient/{id_}/_history", params={"_at": "2001-01-01T00:00:00Z"}).json()
    assert before.get("entry", []) == []


def test_instance_history_count_limits_page_and_links_next(server: RunningServer, uid: str) -> None:
    """_count=2 returns two entries and a next link that leads to the remaining one."""
    id_, _ = _write_versions(server, uid)
    first = server.client.get(f"/Patient/{id_}/_history", params={"_count": "2"}).json()
    assert len(first["entry"]) == 2
    entries, pages = _all_pages(server.client, f"/Patient/{id_}/_history", {"_count": "2"})
    assert pages == 2
    assert [e["resource"]["meta"]["versionId"] for e in entries] == ["3", "2", "1"]


def test_type_history_since_returns_only_that_type(server: RunningServer, uid: str) -> None:
    """GET [type]/_history?_since lists this test's Patient versions and no other type."""
    id_, versions = _write_versions(server, uid)
    obs = server.client.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                                   "code": {"text": uid}})
    assert obs.status_code == 201
    since = versions[0]["meta"]["lastUpdated"]
    entries, _ = _all_pages(server.client, "/Patient/_history", {"_since": since})
    assert {_key(e) for e in entries} == {("Patient", id_, v) for v in ("1", "2", "3")}
    obs_entries, _ = _all_pages(server.client, "/Observation/_history", {"_since": since})
    assert [_key(e) for e in obs_entries] == [("Observation", obs.json()["id"], "1")]


def test_type_history_at_returns_versions_current_then(server: RunningServer, uid: str) -> None:
    """GET [type]/_history?_at=<instant> includes the version of our Patient current at that instant."""
    id_, versions = _write_versions(server, uid)
    at = versions[1]["meta"]["lastUpdated"]
    entries, _ = _all_pages(server.client, "/Patient/_history", {"_at": at, "_count": "1000"})
    ours = [_key(e) for e in entries if _key(e)[1] == id_]
    assert ours == [("Patient", id_, "2")]


def test_system_history_since_covers_every_type_and_delete(server: RunningServer, uid: str) -> None:
    """GET /_history?_since lists exactly this test's writes across types, the DELETE included."""
    id_, versions = _write_versions(server, uid)
    org = server.client.post("/Organization", json={"resourceType": "Organization", "name": f"Org {uid}"}).json()
    assert server.client.delete(f"/Organization/{org['id']}").status_code == 204
    entries, _ = _all_pages(server.client, "/_history", {"_since": versions[0]["meta"]["lastUpdated"]})
    assert [_key(e) for e in entries] == [
        ("Organization", org["id"], "2"), ("Organization", org["id"], "1"),
        ("Patient", id_, "3"), ("Patient", id_, "2"), ("Patient", id_, "1"),
    ]
    assert entries[0]["request"]["method"] == "DELETE" and "resource" not in entries[0]


def test_system_history_at_returns_versions_current_then(server: RunningServer, uid: str) -> None:
    """GET /_history?_at=<instant> has our Patient at the version current then, not the later ones."""
    id_, versions = _write_versions(server, uid)
    at = versions[0]["meta"]["lastUpdated"]
    entries, _ = _all_pages(server.client, "/_history", {"_at": at, "_count": "1000"})
    assert [_key(e) for e in entries if _key(e)[1] == id_] == [("Patient", id_, "1")]


def test_system_history_paging_has_no_duplicates_and_misses_nothing(server: RunningServer, uid: str) -> None:
    """Following next links with _count=3 visits each of 11 versions exactly once, in newest-first order."""
    c = server.client
    time.sleep(0.003)
    first = c.post("/Patient", json=_patient(uid, 0)).json()
    since = first["meta"]["lastUpdated"]
    expected = [("Patient", first["id"], "1")]
    for n in range(1, 6):
        p = c.post("/Patient", json=_patient(uid, n)).json()
        expected.append(("Patient", p["id"], "1"))
        r = c.put(f"/Patient/{p['id']}", json={**_patient(uid, n + 100), "id": p["id"]})
        assert r.status_code == 200
        expected.append(("Patient", p["id"], "2"))
    entries, pages = _all_pages(c, "/_history", {"_since": since, "_count": "3"})
    keys = [_key(e) for e in entries]
    assert len(keys) == len(set(keys)) == 11
    assert keys == expected[::-1]
    assert pages == 4


def test_history_paging_is_stable_while_new_versions_arrive(server: RunningServer, uid: str) -> None:
    """Writes made while a client pages through type history do not cause duplicates or gaps."""
    c = server.client
    time.sleep(0.003)
    ids = [c.post("/Patient", json=_patient(uid, n)).json() for n in range(6)]
    since = ids[0]["meta"]["lastUpdated"]
    expected = {("Patient", p["id"], "1") for p in ids}
    page = c.get("/Patient/_history", params={"_since": since, "_count": "2"}).json()
    seen = [_key(e) for e in page["entry"]]
    # new versions arrive between pages
    for p in ids[:2]:
        assert c.put(f"/Patient/{p['id']}", json={**_patient(uid, 99), "id": p["id"]}).status_code == 200
    while nxt := [lnk["url"] for lnk in page["link"] if lnk["relation"] == "next"]:
        page = c.get(nxt[0]).json()
        seen += [_key(e) for e in page["entry"]]
    assert len(seen) == len(set(seen))
    assert set(seen) == expected


def test_history_with_invalid_since_returns_400(server: RunningServer) -> None:
    """_since that is not an instant is rejected with 400."""
    expect_outcome(server.client.get("/_history", params={"_since": "yesterday"}), 400)


def test_history_with_unknown_parameter_returns_400(server: RunningServer) -> None:
    """A parameter history does not know is reported, not silently ignored."""
    expect_outcome(server.client.get("/Patient/_history", params={"name": "x"}), 400)
