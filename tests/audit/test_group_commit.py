"""Read records through `GroupCommit` on both backends: every `write` returns only once its record is
committed (seen from another connection), concurrent reads share commits, a commit that fails fails every
read of its batch, and the cached chain head follows appends made elsewhere (https://profiles.ihe.net/ITI/BALP/)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from samverka.audit import chain, logs, side
from samverka.audit.groupcommit import GroupCommit
from samverka.audit.model import Entity, Who, event
from samverka.store import Repository
from samverka.store.sqlite import SqliteRepository

WHO = Who(client_id="module-a", user_id="SE2321000131-P000000000001", unit_id="SE2321000131-E000000000011",
          provider_id="SE2321000131-E000000000001", address="10.1.2.3")


def _event(i: int) -> dict[str, Any]:
    return event(WHO, "read", "0", [f"p{i % 7}"], [Entity("Observation", f"o{i}", 1)])


@contextmanager
def _group(repo: Repository) -> Iterator[GroupCommit]:
    gc = GroupCommit(repo)
    try:
        yield gc
    finally:
        gc.close()


@contextmanager
def _other_connection(repo: Repository) -> Iterator[Repository]:
    """A connection to the read chain that sees only committed rows: a second SQLite connection to its file,
    or another pooled one."""
    if repo.dialect == "sqlite":
        other = SqliteRepository(logs.reads_repo(repo).path)  # type: ignore[attr-defined]
        try:
            yield other
        finally:
            other.close()
    else:
        yield repo


def _positions(repo: Repository) -> list[int]:
    return [int(r[0]) for r in repo.fetch("SELECT pos FROM audit_log ORDER BY pos", ())]


def test_each_write_returns_after_its_record_is_committed(repo: Repository) -> None:
    seen_late: list[str] = []

    async def main(gc: GroupCommit, other: Repository) -> None:
        async def one(i: int) -> None:
            ev = _event(i)
            await gc.write([ev])
            if not other.fetch("SELECT 1 FROM audit_log WHERE id = ?", (ev["id"],)):
                seen_late.append(ev["id"])
            await asyncio.sleep(0)

        await asyncio.gather(*(one(i) for i in range(200)))

    with _group(repo) as gc, _other_connection(repo) as other:
        asyncio.run(main(gc, other))
        assert seen_late == []
        assert gc.records == 200 and gc.commits < 200  # concurrent reads shared their commits
    log = logs.reads_repo(repo)  # on SQLite a file of its own (audit.logs), on PostgreSQL the store
    assert _positions(log) == list(range(1, 201))
    v = chain.verify(log)
    assert v.ok and v.checked == 200, v


def test_the_cached_head_follows_appends_made_elsewhere(repo: Repository) -> None:
    async def batch(gc: GroupCommit, start: int, n: int) -> None:
        await asyncio.gather(*(gc.write([_event(i)]) for i in range(start, start + n)))

    log = logs.reads_repo(repo)
    with _group(repo) as gc:
        asyncio.run(batch(gc, 0, 5))
        chain.write(log, [_event(i) for i in range(100, 103)])  # read records of another process
        asyncio.run(batch(gc, 5, 4))
        chain.write(log, [_event(200)])
        asyncio.run(batch(gc, 9, 3))
    assert _positions(log) == list(range(1, 5 + 3 + 4 + 1 + 3 + 1))
    v = chain.verify(log)
    assert v.ok and v.checked == 16, v


def test_a_failed_commit_fails_every_read_of_its_batch(repo: Repository) -> None:
    log = logs.reads_repo(repo)

    async def main(gc: GroupCommit) -> tuple[list[BaseException | None], list[dict[str, Any]]]:
        await gc.write([_event(0)])
        stored_id = log.fetch("SELECT id FROM audit_log WHERE pos = 1", ())[0][0]
        clash = _event(1)
        clash["id"] = stored_id  # audit_log.id is unique: this batch cannot commit
        batch = [_event(2), clash, _event(3)]
        outcomes = await asyncio.gather(*(gc.write([ev]) for ev in batch), return_exceptions=True)
        await gc.write([_event(4)])  # the next batch commits again, linked to the real head
        return list(outcomes), batch

    with _group(repo) as gc:
        outcomes, batch = asyncio.run(main(gc))
    assert all(isinstance(o, Exception) for o in outcomes), outcomes
    for ev in batch:
        assert len(log.fetch("SELECT pos FROM audit_log WHERE id = ?", (ev["id"],))) == (1 if ev is batch[1] else 0)
    assert _positions(log) == [1, 2]
    assert chain.verify(log).ok


@pytest.mark.parametrize("n", [1, 70, 300])
def test_multi_row_appends_keep_every_derived_row(repo: Repository, n: int) -> None:
    """More records than one multi-row INSERT holds, each with two patients and three entities."""
    events = [event(WHO, "search-type", "0", [f"a{i}", f"b{i}"], [Entity("Observation", f"o{i}"),
                                                                    Entity("Condition", f"c{i}")], query="x=1")
              for i in range(n)]
    chain.write(repo, events)
    assert side.catch_up(repo) == n
    assert repo.fetch("SELECT count(*) FROM audit_patient", ())[0][0] == 2 * n
    assert repo.fetch("SELECT count(*) FROM audit_entity", ())[0][0] == 4 * n
    v = chain.verify(repo)
    assert v.ok and v.checked == n, v


def test_the_committing_thread_indexes_behind_the_chain(repo: Repository) -> None:
    """Reads' records, and records appended elsewhere (a write transaction, in the store's own chain), get
    their patient and entity rows from the committing thread without any query asking (audit.side), in
    chunks between batches."""
    log = logs.reads_repo(repo)

    async def main(gc: GroupCommit) -> None:
        gc.start()
        await asyncio.gather(*(gc.write([_event(i)]) for i in range(150)))
        chain.write(repo, [_event(1000)])  # appended by a write transaction: found by the periodic tick
        for _ in range(100):
            if side.backlog(repo) == 0 and side.backlog(log) == 0:
                break
            await asyncio.sleep(0.05)

    with _group(repo) as gc:
        asyncio.run(main(gc))
        assert gc.indexed == 151
    assert side.backlog(repo) == 0 and side.backlog(log) == 0
    if log is repo:
        assert side.watermark(repo) == 151
    else:  # SQLite: two chains, each indexed up to its own head
        assert side.watermark(log) == 150 and side.watermark(repo) == 1
    entities = sum(r.fetch("SELECT count(*) FROM audit_entity", ())[0][0] for r in dict.fromkeys([repo, log]))
    assert entities == 2 * 151  # the Observation and the Patient of each record
    assert chain.verify(repo).ok and chain.verify(log).ok


@pytest.mark.parametrize("flush", [False, True])
def test_read_records_commit_asynchronously_unless_flush_is_asked(repo: Repository, flush: bool) -> None:
    """PostgreSQL: the committing thread's own connection skips the WAL flush per read record (the same
    guarantee as SQLite's synchronous=NORMAL), and waits for it with `serve --audit-read-flush`."""
    if repo.dialect != "postgresql":
        pytest.skip("a PostgreSQL session setting")
    gc = GroupCommit(repo, flush=flush)
    try:
        asyncio.run(gc.write([_event(1)]))
        writer = gc._writer_repo()
        assert writer is not repo
        assert writer.fetch("SHOW synchronous_commit", ())[0][0] == ("on" if flush else "off")
        assert repo.fetch("SHOW synchronous_commit", ())[0][0] == "on"  # requests' writes always flush
    finally:
        gc.close()


def test_sqlite_checkpoints_run_off_the_committing_thread(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite: the files the committing thread writes are checkpointed by a thread of their own
    (audit.checkpoint), so no read waits behind a WAL checkpoint; the writer keeps only a backstop."""
    if repo.dialect != "sqlite":
        pytest.skip("SQLite's write-ahead log")
    from samverka.audit import checkpoint

    monkeypatch.setattr(checkpoint, "INTERVAL", 0.05)
    log = logs.reads_repo(repo)

    async def main(gc: GroupCommit) -> None:
        gc.start()
        await asyncio.gather(*(gc.write([_event(i)]) for i in range(200)))
        for _ in range(100):
            if side.backlog(log) == 0 and gc._checkpointer is not None and gc._checkpointer.runs >= 2:
                break
            await asyncio.sleep(0.05)

    with _group(repo) as gc:
        asyncio.run(main(gc))
        assert gc._checkpointer is not None and gc._checkpointer.runs >= 2
        assert getattr(log, "path") in gc._checkpointer.paths  # noqa: B009
        writer = gc._writer_repo()
        assert writer.fetch("PRAGMA wal_autocheckpoint", ())[0][0] == checkpoint.BACKSTOP_PAGES
        # everything the thread wrote is back in the database file: nothing left for a checkpoint to copy
        busy, pages, done = log.fetch("PRAGMA wal_checkpoint(PASSIVE)", ())[0]
        assert busy == 0 and pages == done
    assert chain.verify(log).ok
