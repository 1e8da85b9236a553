"""Conditional create, update and delete with 0, 1 and 2 matches: https://hl7.org/fhir/R4/http.html#ccreate

Criteria on a token (`identifier=sys|val`), on `_id`, and on a reference (`subject=Patient/x`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from support.server import RunningServer, expect_outcome

KINDS = ["identifier", "_id", "reference"]


@dataclass
class Setup:
    type: str
    criteria: str
    body: dict[str, Any]  # a new resource that meets the criteria (for creates/updates)
    existing: list[str]  # ids of the resources that match now


def _setup(server: RunningServer, kind: str, uid: str, n: int) -> Setup:
    """Store `n` resources that match criteria of `kind`, unique to this test."""
    c = server.client
    if kind == "identifier":
        system = f"urn:cond:{uid}"
        body: dict[str, Any] = {"resourceType": "Patient", "identifier": [{"system": system, "value": "v"}]}
        ids = [c.post("/Patient", json=body).json()["id"] for _ in range(n)]
        return Setup("Patient", f"identifier={system}|v", body, ids)
    if kind == "_id":
        wanted = [f"{uid}-a", f"{uid}-b"]
        ids = []
        for id_ in wanted[:n]:
            assert c.put(f"/Patient/{id_}", json={"resourceType": "Patient", "id": id_}).status_code == 201
            ids.append(id_)
        return Setup("Patient", f"_id={','.join(wanted[: max(n, 1)])}", {"resourceType": "Patient"}, ids)
    assert kind == "reference"
    pid = c.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": uid},
           "subject": {"reference": f"Patient/{pid}"}}
    ids = [c.post("/Observation", json=obs).json()["id"] for _ in range(n)]
    return Setup("Observation", f"subject=Patient/{pid}", obs, ids)


def _matching(server: RunningServer, s: Setup) -> list[str]:
    r = server.client.get(f"/{s.type}?{s.criteria}&_count=100")
    assert r.status_code == 200, r.text
    return sorted(e["resource"]["id"] for e in r.json().get("entry", []))


@pytest.mark.parametrize("kind", KINDS)
def test_conditional_create_with_no_match_creates(server: RunningServer, uid: str, kind: str) -> None:
    """If-None-Exist matching nothing creates the resource (201)."""
    s = _setup(server, kind, uid, 0)
    r = server.client.post(f"/{s.type}", json=s.body, headers={"If-None-Exist": s.criteria})
    assert r.status_code == 201, r.text
    assert server.client.get(f"/{s.type}/{r.json()['id']}").status_code == 200
    if kind != "_id":  # a created resource gets a new id, so it never matches an _id criterion
        assert _matching(server, s) == [r.json()["id"]]


@pytest.mark.parametrize("kind", KINDS)
def test_conditional_create_with_one_match_returns_existing_200(server: RunningServer, uid: str, kind: str) -> None:
    """If-None-Exist matching one resource returns it with 200 and creates nothing."""
    s = _setup(server, kind, uid, 1)
    r = server.client.post(f"/{s.type}", json=s.body, headers={"If-None-Exist": s.criteria})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == s.existing[0]
    assert r.headers["etag"] == 'W/"1"'
    assert _matching(server, s) == s.existing


@pytest.mark.parametrize("kind", KINDS)
def test_conditional_create_with_two_matches_returns_412(server: RunningServer, uid: str, kind: str) -> None:
    """If-None-Exist matching several resources is 412 and creates nothing."""
    s = _setup(server, kind, uid, 2)
    expect_outcome(server.client.post(f"/{s.type}", json=s.body, headers={"If-None-Exist": s.criteria}), 412)
    assert _matching(server, s) == sorted(s.existing)


@pytest.mark.parametrize("kind", KINDS)
def test_conditional_update_with_no_match_creates(server: RunningServer, uid: str, kind: str) -> None:
    """PUT [type]?criteria matching nothing creates a resource (201)."""
    s = _setup(server, kind, uid, 0)
    r = server.client.put(f"/{s.type}?{s.criteria}", json=s.body)
    assert r.status_code == 201, r.text
    assert r.json()["meta"]["versionId"] == "1"
    assert server.client.get(f"/{s.type}/{r.json()['id']}").status_code == 200


@pytest.mark.parametrize("kind", KINDS)
def test_conditional_update_with_one_match_updates_it(server: RunningServer, uid: str, kind: str) -> None:
    """PUT [type]?criteria matching one resource updates that resource to version 2 (200)."""
    s = _setup(server, kind, uid, 1)
    body = {**s.body, "meta": {"tag": [{"system": "urn:t", "code": "updated"}]}}
    r = server.client.put(f"/{s.type}?{s.criteria}", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == s.existing[0]
    stored = server.client.get(f"/{s.type}/{s.existing[0]}").json()
    assert stored["meta"]["versionId"] == "2"
    assert stored["meta"]["tag"][0]["code"] == "updated"
    assert _matching(server, s) == s.existing


@pytest.mark.parametrize("kind", KINDS)
def test_conditional_update_with_two_matches_returns_412(server: RunningServer, uid: str, kind: str) -> None:
    """PUT [type]?criteria matching several resources is 412 and changes nothing."""
    s = _setup(server, kind, uid, 2)
    expect_outcome(server.client.put(f"/{s.type}?{s.criteria}", json=s.body), 412)
    for id_ in s.existing:
        assert server.client.get(f"/{s.type}/{id_}").json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize("kind", KINDS)
def test_conditional_delete_with_no_match_succeeds_and_deletes_nothing(
    server: RunningServer, uid: str, kind: str
) -> None:
    """DELETE [type]?criteria matching nothing is a success that changes nothing."""
    s = _setup(server, kind, uid, 0)
    bystander = _setup(server, kind, uid + "x", 1)
    r = server.client.delete(f"/{s.type}?{s.criteria}")
    assert r.status_code in (200, 204), r.text
    assert server.client.get(f"/{bystander.type}/{bystander.existing[0]}").status_code == 200


@pytest.mark.parametrize("kind", KINDS)
def test_conditional_delete_with_one_match_deletes_it(server: RunningServer, uid: str, kind: str) -> None:
    """DELETE [type]?criteria matching one resource deletes it (later read: 410)."""
    s = _setup(server, kind, uid, 1)
    r = server.client.delete(f"/{s.type}?{s.criteria}")
    assert r.status_code in (200, 204), r.text
    expect_outcome(server.client.get(f"/{s.type}/{s.existing[0]}"), 410)
    assert _matching(server, s) == []


@pytest.mark.parametrize("kind", KINDS)
def test_conditional_delete_with_two_matches_returns_412(server: RunningServer, uid: str, kind: str) -> None:
    """DELETE [type]?criteria matching several resources is 412 (single deletes only); both remain."""
    s = _setup(server, kind, uid, 2)
    expect_outcome(server.client.delete(f"/{s.type}?{s.criteria}"), 412)
    assert _matching(server, s) == sorted(s.existing)


def test_conditional_create_with_unknown_parameter_returns_400(server: RunningServer, uid: str) -> None:
    """If-None-Exist with a parameter the server does not know is refused, not treated as 'no match'."""
    r = server.client.post("/Patient", json={"resourceType": "Patient"}, headers={"If-None-Exist": f"nonsense={uid}"})
    expect_outcome(r, 400)


def test_conditional_update_body_id_must_match_the_found_resource(server: RunningServer, uid: str) -> None:
    """A conditional update whose body id differs from the matched resource's id is refused."""
    s = _setup(server, "identifier", uid, 1)
    r = server.client.put(f"/Patient?{s.criteria}", json={**s.body, "id": f"other-{uid}"})
    expect_outcome(r, 400, 409, 412)
    assert server.client.get(f"/Patient/{s.existing[0]}").json()["meta"]["versionId"] == "1"


def test_conditional_patch_with_one_match_patches_it(server: RunningServer, uid: str) -> None:
    """PATCH [type]?criteria with one match applies the patch to it."""
    s = _setup(server, "identifier", uid, 1)
    r = server.client.patch(f"/Patient?{s.criteria}", json=[{"op": "add", "path": "/active", "value": True}],
                            headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert server.client.get(f"/Patient/{s.existing[0]}").json()["active"] is True
