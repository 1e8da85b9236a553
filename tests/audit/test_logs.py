"""The audit log's chains (samverka.audit.logs): write records in the store, read records beside it on
SQLite; search, read, reports and verify see all of them. https://profiles.ihe.net/ITI/BALP/"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from samverka.audit import chain, logs, query
from samverka.audit.model import Entity, Who, event
from samverka.errors import FhirError
from samverka.store import Repository
from samverka.store.sqlite import SqliteRepository

WHO = Who(client_id="module-a", user_id="SE2321000131-P000000000001", unit_id="SE2321000131-E000000000011",
          provider_id="SE2321000131-E000000000001")


def _event(i: int, subtype: str) -> dict[str, Any]:
    ev = event(WHO, subtype, "0", [f"p{i % 3}"], [Entity("Observation", f"o{i}", 1)])
    ev["recorded"] = f"2026-01-01T10:00:{i:02d}.000Z"  # a distinct, known time per record
    return ev


def _all_pages(repo: Repository, pairs: list[tuple[str, str]]) -> list[str]:
    ids: list[str] = []
    while True:
        bundle = query.search(repo, "http://x/fhir", pairs)
        ids += [e["fullUrl"].rsplit("/", 1)[1] for e in bundle["entry"]]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            return ids
        pairs = parse_qsl(urlsplit(nxt[0]).query)


def test_sqlite_keeps_read_records_in_a_file_of_their_own(repo: Repository) -> None:
    chains = logs.chains(repo)
    if repo.dialect == "sqlite":
        assert [c.name for c in chains] == ["writes", "reads"]
        assert chains[1].repo.path.name == "samverka-audit-reads.sqlite"  # type: ignore[attr-defined]
        assert chains[1].repo.path.parent == repo.path.parent  # type: ignore[attr-defined]
    else:
        assert [c.name for c in chains] == ["log"]


def test_search_pages_through_every_chain_newest_first_and_reports_take_them_all(repo: Repository) -> None:
    """Writes and reads interleaved in time, in two chains on SQLite: paging two at a time returns every
    record once, newest first; a report returns them oldest first; read by id finds either kind."""
    reads = logs.reads_repo(repo)
    events = [_event(i, "read" if i % 3 else "create") for i in range(1, 12)]
    for ev in events:  # one append per record, in time order, each to its chain
        chain.write(reads if ev["subtype"][0]["code"] == "read" else repo, [ev])
    newest_first = [ev["id"] for ev in reversed(events)]
    assert _all_pages(repo, [("_count", "2")]) == newest_first
    assert _all_pages(repo, [("_count", "4"), ("patient", "Patient/p1")]) == [
        ev["id"] for ev in reversed(events) if ev["entity"][0]["what"]["reference"] == "Patient/p1"]
    assert [ev["id"] for ev in query.report(repo, query.Report())] == [ev["id"] for ev in events]
    for ev in (events[0], events[1]):  # a write's record and a read's
        assert orjson.loads(query.read(repo, ev["id"]))["id"] == ev["id"]
    assert all(v.ok for _c, v in logs.verify(repo))
    assert sum(v.checked for _c, v in logs.verify(repo)) == len(events)


def test_a_foreign_cursor_is_refused(repo: Repository) -> None:
    n = len(logs.chains(repo))
    for bad in ("x", "1.2.3" if n == 2 else "1.2", "-1"):
        with pytest.raises(FhirError) as refused:
            query.search(repo, "http://x/fhir", [("_cursor", bad)])
        assert "_cursor" in refused.value.issues[0].diagnostics, bad


def _sqlite_store(tmp_path: Path) -> SqliteRepository:
    return SqliteRepository(tmp_path / "samverka.sqlite")


def _reads(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [_event(start + i, "read") for i in range(1, n + 1)]


def test_a_deleted_read_chain_file_breaks_verify(tmp_path: Path) -> None:
    store = _sqlite_store(tmp_path)
    chain.write(logs.reads_repo(store), _reads(3))
    assert logs.anchor(store, logs.reads_repo(store)) == 3
    assert all(v.ok for _c, v in logs.verify(store))
    store.close()
    (tmp_path / "samverka-audit-reads.sqlite").unlink()
    store = _sqlite_store(tmp_path)
    try:
        verdicts = {c.name: v for c, v in logs.verify(store)}
        assert verdicts["writes"].ok
        assert verdicts["reads"].broken_at == 3 and "does not hold" in verdicts["reads"].reason
    finally:
        store.close()
    r = subprocess.run([sys.executable, "-m", "samverka.cli", "audit", "verify", "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "reads chain" in r.stdout + r.stderr, r.stdout + r.stderr


def test_an_older_copy_of_the_read_chain_breaks_verify(tmp_path: Path) -> None:
    store = _sqlite_store(tmp_path)
    reads = logs.reads_repo(store)
    chain.write(reads, _reads(3))
    logs.anchor(store, reads)
    store.close()
    older = tmp_path / "older.sqlite"
    shutil.copy(tmp_path / "samverka-audit-reads.sqlite", older)  # closed: its WAL is checkpointed
    store = _sqlite_store(tmp_path)
    reads = logs.reads_repo(store)
    chain.write(reads, _reads(2, 10))
    assert logs.anchor(store, reads, after=3) == 5
    assert all(v.ok for _c, v in logs.verify(store))
    store.close()
    shutil.copy(older, tmp_path / "samverka-audit-reads.sqlite")
    store = _sqlite_store(tmp_path)
    try:
        verdicts = {c.name: v for c, v in logs.verify(store)}
        assert verdicts["reads"].broken_at == 5, verdicts["reads"]
    finally:
        store.close()


def test_the_anchor_only_moves_forward(tmp_path: Path) -> None:
    store = _sqlite_store(tmp_path)
    try:
        reads = logs.reads_repo(store)
        chain.write(reads, _reads(4))
        logs.anchor(store, reads)
        with store.transaction() as uow:  # an older head, as another process might offer: ignored
            uow.execute(logs.ANCHOR_SQL, ("reads", 2, "x" * 64, 0))
        assert store.fetch("SELECT pos FROM audit_anchor WHERE chain = 'reads'", ()) == [(4,)]
        with pytest.raises(sqlite3.DatabaseError), store.transaction() as uow:
            uow.execute("UPDATE audit_anchor SET pos = 1 WHERE chain = 'reads'", ())
    finally:
        store.close()
