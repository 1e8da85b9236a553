"""The outbox: a committed change always has its event, a rolled-back one never (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventkit import encounter

from samverka.api.server import build_services
from samverka.config import Settings
from samverka.interactions import create, transaction, writes
from samverka.interactions.context import Services
from samverka.store import open_repository
from samverka.store.base import Repository
from support.server import RunningServer, expect_outcome


def _store(server: RunningServer) -> Repository:
    args = server.args
    if "--database" in args:
        return open_repository(None, args[args.index("--database") + 1])
    return open_repository(Path(args[args.index("--data-dir") + 1]))


@pytest.fixture(scope="module")
def store(server: RunningServer) -> Iterator[Repository]:
    repo = _store(server)
    try:
        yield repo
    finally:
        repo.close()


def _outbox(store: Repository, after: int = 0) -> list[tuple[Any, ...]]:
    return store.fetch(
        "SELECT seq, type, id, version, before_version, interaction FROM event_outbox WHERE seq > ? ORDER BY seq",
        (after,),
    )


def _head(store: Repository) -> int:
    return int(store.fetch("SELECT seq FROM event_head WHERE id = 1", ())[0][0])


def test_every_committed_write_has_its_event_in_order(server: RunningServer, store: Repository) -> None:
    """create, update and delete each append one outbox row, numbered in commit order without gaps."""
    start = _head(store)
    r = server.client.post("/Encounter", json=encounter("p-outbox", "planned"))
    enc = r.json()
    enc["status"] = "in-progress"
    assert server.client.put(f"/Encounter/{enc['id']}", json=enc).status_code == 200
    assert server.client.delete(f"/Encounter/{enc['id']}").status_code in (200, 204)
    rows = [r for r in _outbox(store, start) if r[2] == enc["id"]]
    assert [(r[3], r[4], r[5]) for r in rows] == [(1, None, "create"), (2, 1, "update"), (3, 2, "delete")]
    seqs = [r[0] for r in _outbox(store, start)]
    assert seqs == list(range(start + 1, start + 1 + len(seqs)))
    assert _head(store) == seqs[-1]


def test_failing_transaction_bundle_leaves_no_event(server: RunningServer, store: Repository) -> None:
    """A transaction whose second entry fails rolls back the first entry's write and its event."""
    start = _head(store)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": encounter("p-rollback", "in-progress"), "request": {"method": "POST", "url": "Encounter"}},
            {
                "resource": {**encounter("p-rollback", "finished"), "id": "no-such-version"},
                "request": {"method": "PUT", "url": "Encounter/no-such-version", "ifMatch": 'W/"7"'},
            },
        ],
    }
    expect_outcome(server.client.post("", json=bundle), 409, 412)
    assert _outbox(store, start) == []
    assert _head(store) == start
    found = server.client.get("/Encounter", params={"subject": "Patient/p-rollback"}).json()
    assert found.get("total", len(found.get("entry", []))) == 0


def test_successful_transaction_bundle_has_one_event_per_entry(server: RunningServer, store: Repository) -> None:
    start = _head(store)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": encounter("p-tx", "in-progress"), "request": {"method": "POST", "url": "Encounter"}},
            {"resource": encounter("p-tx", "finished"), "request": {"method": "POST", "url": "Encounter"}},
        ],
    }
    r = server.client.post("", json=bundle)
    assert r.status_code == 200, r.text
    rows = _outbox(store, start)
    assert [(r[1], r[5]) for r in rows] == [("Encounter", "create"), ("Encounter", "create")]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    database = request.getfixturevalue("pg_session").fresh() if request.param == "postgresql" else None
    svc = build_services(Settings(data_dir=tmp_path, database=database))
    try:
        yield svc
    finally:
        svc.repo.close()


class _Abort(Exception):
    pass


def test_a_write_rolled_back_after_it_was_made_has_no_event(services: Services) -> None:
    """In process: a unit of work that wrote a version and then failed commits neither version nor event."""
    repo = services.repo
    assert create.create(services, "Encounter", encounter("p-in", "planned")).status == 201
    before = _head(repo)
    with pytest.raises(_Abort), repo.transaction() as uow:
        p = writes.prepare(services, encounter("p-in", "in-progress"), "rolled-back")
        writes.commit(uow, services, p, None, "PUT", writes.stamp_us())
        raise _Abort
    assert _head(repo) == before
    assert _outbox(repo, before) == []
    assert repo.read("Encounter", "rolled-back") is None
    assert create.create(services, "Encounter", encounter("p-in", "planned")).status == 201
    assert [r[5] for r in _outbox(repo, before)] == ["create"]
    assert _head(repo) == before + 1


def test_a_large_transaction_numbers_every_entry(services: Services) -> None:
    """250 entries in one transaction Bundle: 250 outbox rows (three multi-row INSERTs), seq without gaps."""
    before = _head(services.repo)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": encounter(f"p-big-{i}", "planned"), "request": {"method": "POST", "url": "Encounter"}}
            for i in range(250)
        ],
    }
    assert transaction.transaction(services, "http://x/fhir", bundle, False).status == 200
    rows = _outbox(services.repo, before)
    assert [r[0] for r in rows] == list(range(before + 1, before + 251))
    assert {r[5] for r in rows} == {"create"} and _head(services.repo) == before + 250
