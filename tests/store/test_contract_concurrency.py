"""The storage contract under concurrency and stale writers, run unchanged on every backend."""

from __future__ import annotations

import threading
import time

import pytest
from test_contract import T0, body, mk, put

from samverka.errors import Category, FhirError
from samverka.store.base import HistoryQuery, IndexRows, Repository


def test_concurrent_writers_keep_versions_contiguous(repo: Repository) -> None:
    """Threads updating one resource serialise on its head: no lost update, no gap, no duplicate."""
    put(repo, "Basic", "counter", n=0)
    threads, per_thread, errors = 6, 8, []

    def work() -> None:
        try:
            for _ in range(per_thread):
                with repo.transaction() as uow:
                    cur = uow.current("Basic", "counter")
                    assert cur is not None
                    now = uow.read("Basic", "counter")
                    assert now is not None
                    n = body(now.data)["n"] + 1
                    lu = T0 + cur.version + 1
                    uow.write(mk("Basic", "counter", cur.version + 1, IndexRows(), pk=cur.pk, lu=lu, n=n))
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    final = repo.read("Basic", "counter")
    assert final is not None
    assert final.version == 1 + threads * per_thread
    assert body(final.data)["n"] == threads * per_thread
    versions = [e.version.version for e in repo.history(HistoryQuery(type="Basic", id="counter", count=1000))]
    assert versions == list(range(final.version, 0, -1))
    assert repo.check() == []


def test_racing_creates_of_one_id_conflict(repo: Repository) -> None:
    """Two creates of the same new id: the second to commit fails with CONFLICT, one version remains."""
    outcome: list[BaseException | None] = []

    def second() -> None:
        try:
            with repo.transaction() as uow:
                uow.current("Patient", "race")
                uow.write(mk("Patient", "race", 1, IndexRows(tokens=[(1, 2, 3)]), who="second"))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    with repo.transaction() as uow:
        assert uow.current("Patient", "race") is None
        uow.write(mk("Patient", "race", 1, IndexRows(tokens=[(1, 2, 3)]), who="first"))
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)  # let the second writer reach its insert (PostgreSQL) or its lock (SQLite)
    t.join(timeout=30)
    assert len(outcome) == 1
    err = outcome[0]
    assert isinstance(err, FhirError) and err.category is Category.CONFLICT
    v = repo.read("Patient", "race")
    assert v is not None and body(v.data)["who"] == "first"
    assert repo.history_count(HistoryQuery(type="Patient", id="race")) == 1
    assert repo.check() == []


def test_lock_serialises_conditional_creates(repo: Repository) -> None:
    """Writers holding the same lock key see each other's commits: a conditional create happens once."""
    created, errors = [], []

    def work(i: int) -> None:
        try:
            with repo.transaction() as uow:
                uow.lock(-42)
                uow.lock(-42)  # taking it again in one transaction is harmless
                if uow.fetch("SELECT count(*) FROM resources WHERE type = ?", ["Basic"])[0][0] == 0:
                    time.sleep(0.05)
                    uow.write(mk("Basic", f"b{i}", 1, IndexRows()))
                    created.append(i)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(5)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == [] and len(created) == 1
    assert repo.fetch("SELECT count(*) FROM resources", []) == [(1,)]


def test_creating_an_existing_id_without_previous_pk_conflicts(repo: Repository) -> None:
    """A create for an id that already exists (stale caller) is a CONFLICT and changes nothing."""
    put(repo, "Patient", "p1", name="one")
    with pytest.raises(FhirError) as info, repo.transaction() as uow:
        uow.write(mk("Patient", "p1", 1))
    assert info.value.category is Category.CONFLICT
    v = repo.read("Patient", "p1")
    assert v is not None and body(v.data)["name"] == "one"


def test_writing_an_existing_version_number_conflicts(repo: Repository) -> None:
    """A stale writer that reuses a version number gets CONFLICT; the stored history is unchanged."""
    put(repo, "Patient", "p1", name="one")
    put(repo, "Patient", "p1", name="two")
    with repo.transaction() as uow:
        cur = uow.current("Patient", "p1")
    assert cur is not None
    with pytest.raises(FhirError) as info, repo.transaction() as uow:
        uow.write(mk("Patient", "p1", 2, IndexRows(), pk=cur.pk, name="stale"))
    assert info.value.category is Category.CONFLICT
    v = repo.read("Patient", "p1")
    assert v is not None and v.version == 2 and body(v.data)["name"] == "two"
    assert repo.check() == []
