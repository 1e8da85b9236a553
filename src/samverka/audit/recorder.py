"""Recording what a request did: writes inside their own transaction, reads before their response.

IHE BALP (https://profiles.ihe.net/ITI/BALP/) records for FHIR REST interactions
(https://hl7.org/fhir/R4/auditevent.html):
- **Writes.** `Auditing` wraps the request's repository: each unit of work remembers what it writes,
  and appends one AuditEvent per action (C, U, D) to the chain inside the same transaction, just
  before it commits. A rolled-back write leaves no success record (the API logs the failure).
- **Reads.** `GroupCommit` appends read records from one committing thread, in one short transaction
  per batch: everything that arrived while the previous batch committed (at least everything of one
  event-loop turn). Each read's response waits for the commit of its record: durable before the data
  leaves the server, at the cost of one commit per batch rather than per read.
- **Index.** The same thread writes the records' patient and entity rows (`side`) in small chunks when
  no read is waiting: every `side.TICK` seconds once `start`ed, and sooner once `side.EAGER` reads are
  behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import orjson

from ..errors import Category, FhirError
from ..store import Current, HistoryEntry, HistoryQuery, IndexRows, Repository, UnitOfWork, Version, Write
from ..store.base import Head
from ..store.hashing import h64
from . import chain, checkpoint, logs, side
from .model import Entity, Who, event

log = logging.getLogger(__name__)
_SUBTYPE = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class RecordingUnitOfWork:
    """A UnitOfWork that remembers every version written (with the patient it concerns)."""

    def __init__(self, inner: UnitOfWork) -> None:
        self.inner = inner
        self.writes: list[tuple[str, Entity, str | None]] = []  # (method, entity, patient)

    def current(self, type: str, id: str) -> Current | None:
        return self.inner.current(type, id)

    def write(self, w: Write) -> None:
        if w.type == "AuditEvent":
            raise FhirError.of(Category.METHOD_NOT_ALLOWED, "AuditEvent records are written by the server only")
        patient = w.compartment
        if w.data is None and w.previous_pk is not None:  # a delete: the compartment it had
            rows = self.inner.execute("SELECT compartment FROM resources WHERE pk = ?", (w.previous_pk,))
            patient = rows[0][0] if rows else None
        self.inner.write(w)
        self.writes.append((w.method, Entity(w.type, w.id, w.version), patient))

    def read(self, type: str, id: str) -> Version | None:
        return self.inner.read(type, id)

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.inner.fetch(sql, params)

    def lock(self, key: int) -> None:
        self.inner.lock(key)

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.inner.execute(sql, params)

    def param_generation(self, bump: bool = False) -> int:
        return self.inner.param_generation(bump)

    def heads(self, after_pk: int, max_pk: int, limit: int, types: Sequence[str] | None) -> list[Head]:
        return self.inner.heads(after_pk, max_pk, limit, types)

    def replace_index(self, params: Sequence[int], rows: Sequence[tuple[int, IndexRows]]) -> None:
        self.inner.replace_index(params, rows)


def write_events(who: Who, writes: Sequence[tuple[str, Entity, str | None]], system_hsa_id: str,
                 ) -> list[dict[str, Any]]:
    """One AuditEvent per kind of write (create, update, patch, delete) in one transaction."""
    by_kind: dict[str, list[tuple[Entity, str | None]]] = {}
    for method, entity, patient in writes:
        by_kind.setdefault(_SUBTYPE.get(method, "update"), []).append((entity, patient))
    out = []
    for subtype, items in by_kind.items():
        patients = sorted({p for _e, p in items if p})
        out.append(event(who, subtype, "0", patients, [e for e, _p in items], system_hsa_id))
    return out


class Auditing:
    """The request's view of the repository: every write transaction also appends its audit records."""

    def __init__(self, inner: Repository, who: Who, system_hsa_id: str) -> None:
        self.inner = inner
        self.who = who
        self.system_hsa_id = system_hsa_id
        self.dialect = inner.dialect
        self.written = 0  # audit records appended by this request's write transactions

    @contextmanager
    def transaction(self) -> Iterator[RecordingUnitOfWork]:
        with self.inner.transaction() as uow:
            rec = RecordingUnitOfWork(uow)
            yield rec
            if rec.writes:
                events = write_events(self.who, rec.writes, self.system_hsa_id)
                chain.append(uow, events, self.dialect)
                self.written += len(events)

    def read(self, type: str, id: str) -> Version | None:
        return self.inner.read(type, id)

    def vread(self, type: str, id: str, version: int) -> Version | None:
        return self.inner.vread(type, id, version)

    def history(self, q: HistoryQuery) -> list[HistoryEntry]:
        return self.inner.history(q)

    def history_count(self, q: HistoryQuery) -> int:
        return self.inner.history_count(q)

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.inner.fetch(sql, params)

    def check(self) -> list[str]:
        return self.inner.check()

    def iter_current(self, batch: int = 1000) -> Iterator[Version]:
        return self.inner.iter_current(batch)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def returned(resource: dict[str, Any] | None, version: Version | None) -> list[Entity]:
    """The resources a read answer carries: the version, or a Bundle's matches and includes (nested too)."""
    out: list[Entity] = []
    if version is not None and version.data is not None:
        out.append(Entity(version.type, version.id, version.version))
    if resource is None or resource.get("resourceType") != "Bundle":
        return out
    kind = resource.get("type")
    for entry in resource.get("entry") or ():
        inner = entry.get("resource")
        if isinstance(inner, dict) and inner.get("resourceType") == "Bundle":
            out += returned(inner, None)
            continue
        full = entry.get("fullUrl")
        if not full or inner is None:
            continue
        if kind in ("batch-response", "transaction-response") and "location" in (entry.get("response") or {}):
            continue  # a write: its own transaction recorded it
        parts = full.rstrip("/").split("/")
        if len(parts) >= 2:
            out.append(Entity(parts[-2], parts[-1]))
    return out


def compartments(repo: Repository, entities: Sequence[Entity]) -> list[str]:
    """The patients (patient compartments) of `entities`, by one indexed lookup per 500 of them."""
    wanted = {(e.type, e.id) for e in entities}
    patients: set[str] = set()
    refs = sorted({h64(f"{t}/{i}") for t, i in wanted})
    for start in range(0, len(refs), 500):
        chunk = refs[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        for t, i, comp in repo.fetch(f"SELECT type, id, compartment FROM resources WHERE ref IN ({marks})", chunk):
            if (t, i) in wanted and comp:
                patients.add(str(comp))
    return sorted(patients)


class GroupCommit:
    """Read records of one process, appended by one committing thread while the event loop goes on.

    Pipelined group commit: at most one audit transaction is in flight. Records that arrive while it
    commits wait, and all of them go into the next transaction together, so the batch grows with the
    load (one commit per event-loop turn when idle, one per commit time when busy) and the loop never
    blocks on the database write lock, a WAL checkpoint or a PostgreSQL round trip. Every read's
    response still waits for the commit of its own record. On SQLite the thread has a connection of its
    own (readers on the loop's connection are never held up by its transaction); the chain head is
    cached between commits and checked in the same UPDATE that moves it (`chain.append_prepared`).
    """

    def __init__(self, repo: Repository, max_batch: int = 512, flush: bool = False) -> None:
        self.repo = repo
        self.flush = flush  # PostgreSQL: wait for the WAL flush (Settings.audit_read_flush)
        self.max_batch = max_batch
        self._pending: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
        self._scheduled = False
        self._busy = False
        self._writer: Repository | None = None
        self._store: Repository | None = None  # SQLite: this thread's connection to the store's own file
        self._anchored = 0  # the read chain's position last anchored in the store (audit.logs.anchor)
        self._head: chain.Head | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="audit-commit")
        # PostgreSQL: the index is written by a thread and connection of its own, so a read's record never
        # waits behind a chunk (on SQLite the file's one write lock would make it wait all the same)
        self._separate_index = repo.dialect == "postgresql" and bool(getattr(repo, "url", None))
        self._index_pool = ThreadPoolExecutor(1, thread_name_prefix="audit-index") if self._separate_index \
            else self._pool
        self._indexer: Repository | None = None
        self.commits = 0
        self.records = 0
        self.indexed = 0
        self._unindexed = False  # records may be waiting for their patient and entity rows
        self._indexing = False  # a chunk is queued or running in the committing thread
        self._behind = 0  # reads committed since the last chunk started
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._checkpointer: checkpoint.Checkpointer | None = None  # SQLite: WAL checkpoints off this thread

    async def write(self, events: list[dict[str, Any]]) -> None:
        """Return once `events` are committed; raise if they could not be (the read must then fail)."""
        if not events:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((events, fut))
        if not self._busy and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start, loop)  # after the rest of this turn: its reads join the batch
        await fut

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        if self._busy or not self._pending:
            return
        batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        self._busy = True
        events = [ev for evs, _f in batch for ev in evs]
        try:
            done = self._pool.submit(self._commit, events)
        except RuntimeError as exc:  # closed: nothing will commit these, so their reads fail
            failed: Future[None] = Future()
            failed.set_exception(exc)
            self._finish(loop, batch, failed)
            return
        done.add_done_callback(lambda d: self._wake(loop, batch, d))

    def _wake(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[list[dict[str, Any]], asyncio.Future[None]]],
              done: Future[None]) -> None:
        """In the committing thread: hand the outcome back to the event loop (if it still runs)."""
        try:
            loop.call_soon_threadsafe(self._finish, loop, batch, done)
        except RuntimeError:  # that loop is closed, and its waiting reads with it: a later loop may go on
            self._busy = False

    def _finish(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[list[dict[str, Any]],
                asyncio.Future[None]]], done: Future[None]) -> None:
        self._busy = False
        exc = done.exception()
        for _e, f in batch:
            if f.done():  # the request went away (cancelled); its record is committed all the same
                continue
            if exc is None:
                f.set_result(None)
            else:  # every waiting read fails rather than answering unaudited
                f.set_exception(exc)
        if exc is None:
            self._behind += len(batch)
            if self._behind >= side.EAGER:  # else the next tick: not after every read (it would wait)
                self._unindexed = True
        self._next(loop)

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reads waiting go first; when none are, one chunk of the patient and entity index (audit.side).

        On SQLite the chunk runs in the same thread, so a batch arriving meanwhile waits at most one chunk;
        on PostgreSQL in a thread of its own, alongside. Its completion is noted by that thread itself: a
        loop that ends meanwhile leaves nothing stuck."""
        if not self._busy and self._pending:
            self._start(loop)
        if (self._unindexed and not self._indexing and not self._closed
                and (self._separate_index or (not self._busy and not self._pending))):
            self._indexing, self._unindexed, self._behind = True, False, 0
            try:
                done = self._index_pool.submit(self._index)
            except RuntimeError:  # closed
                self._indexing = False
                return
            done.add_done_callback(lambda d: self._indexed(loop, d))

    def _indexed(self, loop: asyncio.AbstractEventLoop, done: Future[bool]) -> None:
        """In the committing thread: when more records wait, ask the loop for another chunk."""
        self._indexing = False
        exc = done.exception()
        if exc is not None:  # the index waits for the next chunk or query; reads are not affected
            log.error("audit index chunk failed", exc_info=exc)
        elif done.result():
            self._unindexed = True
            with contextlib.suppress(RuntimeError):  # that loop is closed: the next tick or query goes on
                loop.call_soon_threadsafe(self._next, loop)

    def _index(self) -> bool:
        """In the committing thread: index the next chunk of records (ours and other processes'), of the
        read chain and of the store's own (write records, appended by write transactions); True when more
        records wait."""
        reads = self._index_repo() if self._separate_index else self._writer_repo()
        store = reads if self._separate_index else self._store_writer()
        more = False
        for repo in dict.fromkeys([reads, store]):
            if side.backlog(repo) <= 0:
                continue
            with repo.transaction() as uow:
                self._async_commit(repo, uow)  # derived rows: written again by the next chunk if ever lost
                n = side.index_chunk(uow, repo.dialect, side.CHUNK, side.ROW_BUDGET)
            self.indexed += n
            more = more or (n > 0 and side.backlog(repo) > 0)
        if store is not reads:  # SQLite: keep the store's anchor of the read chain
            self._anchored = max(self._anchored, logs.anchor(store, reads, self._anchored))
        return more

    def start(self) -> None:
        """Index at least every `side.TICK` seconds, also what other processes and write transactions
        appended (call from the event loop; `close` stops it)."""
        loop = asyncio.get_running_loop()

        def tick() -> None:
            if self._closed or self._timer is None:
                return
            self._unindexed = True
            self._next(loop)
            self._timer = loop.call_later(side.TICK, tick)

        self._timer = loop.call_later(side.TICK, tick)

    def _commit(self, events: list[dict[str, Any]]) -> None:
        """In the committing thread: prepare, link and append `events` in one transaction."""
        prepared = [chain.prepare(ev) for ev in events]
        repo = self._writer_repo()
        try:
            head = None
            if repo.dialect == "postgresql" and self._head is not None and repo is not self.repo:
                head = chain.append_one_statement(repo, prepared, self._head)  # one round trip, or None
            if head is None:
                with repo.transaction() as uow:
                    # a read's record commits asynchronously: no WAL flush (~5 ms on a virtual disk) per read
                    self._async_commit(repo, uow)
                    head = chain.append_prepared(uow, prepared, repo.dialect, self._head)
        except BaseException:
            self._head = None  # read it again under the lock next time
            raise
        self._head = head
        self.commits += 1
        self.records += len(events)

    def _store_writer(self) -> Repository:
        """A connection of this thread's own to the store's file (indexing the write records), or the store."""
        reads = logs.reads_repo(self.repo)
        if reads is self.repo:
            return self._writer_repo()
        if self._store is None:
            from ..store.sqlite import SqliteRepository

            self._store = SqliteRepository(getattr(self.repo, "path"))  # noqa: B009 (a SQLite store has one)
            self._store.fetch("PRAGMA cache_size = -8192", ())
            self._checkpoint(self._store)
        return self._store

    def _writer_repo(self) -> Repository:
        if self._writer is None:
            reads = logs.reads_repo(self.repo)
            path = getattr(reads, "path", None)
            url = getattr(self.repo, "url", None)
            if self.repo.dialect == "sqlite" and path is not None:
                from ..store.sqlite import SqliteRepository

                # the read chain's file (audit.logs), on a connection of its own: the loop's stays free for reads
                self._writer = SqliteRepository(path)
                # it only appends (a batch touches the right edges and a few index pages per record): 8 MiB, not 32
                self._writer.fetch("PRAGMA cache_size = -8192", ())
                self._checkpoint(self._writer)
            elif self.repo.dialect == "postgresql" and url:
                from ..store.postgres import PostgresRepository

                # one connection of its own, no pool checkout per batch; asynchronous commit is set once
                # for the session rather than with a SET LOCAL round trip per transaction
                self._writer = PostgresRepository(str(url), min_size=1, max_size=1,
                                                  session=None if self.flush else {"synchronous_commit": "off"})
            else:
                self._writer = self.repo
        return self._writer

    def _index_repo(self) -> Repository:
        """PostgreSQL: the index thread's own connection; derived rows, so asynchronous commit always."""
        if self._indexer is None:
            from ..store.postgres import PostgresRepository

            self._indexer = PostgresRepository(str(getattr(self.repo, "url")), min_size=1, max_size=1,  # noqa: B009
                                               session={"synchronous_commit": "off"})
        return self._indexer

    def _checkpoint(self, writer: Repository) -> None:
        """A SQLite file this thread writes is checkpointed by a thread of its own (`audit.checkpoint`)."""
        checkpoint.hand_over(writer)
        paths = [*(self._checkpointer.paths if self._checkpointer else []), getattr(writer, "path")]  # noqa: B009
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._checkpointer = checkpoint.Checkpointer(paths)

    def _async_commit(self, repo: Repository, uow: UnitOfWork) -> None:
        """PostgreSQL without `flush`: commit without waiting for the WAL flush (unless the session does)."""
        if repo.dialect == "postgresql" and not self.flush and repo is self.repo:
            uow.execute("SET LOCAL synchronous_commit = off", ())

    def stop(self) -> None:
        """Stop the periodic indexing (`start`); reads still commit."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self._closed = True
        self.stop()
        self._pool.shutdown(wait=True)
        self._index_pool.shutdown(wait=True)
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        for repo in (self._writer, self._store, self._indexer):
            if repo is not None and repo is not self.repo:  # connections of these threads' own
                repo.close()
        self._writer = self._store = self._indexer = None


def dumps(events: Sequence[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)
