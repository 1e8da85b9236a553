"""Read records, appended by one committing thread per process while the event loop goes on.

IHE BALP (https://profiles.ihe.net/ITI/BALP/) read records (https://hl7.org/fhir/R4/auditevent.html):
one short transaction per batch, everything that arrived while the previous batch committed (at least
everything of one event-loop turn). Each read's response waits for the commit of its record: durable
before the data leaves the server, at the cost of one commit per batch rather than per read. The
records' patient and entity rows (`side`) are written behind them in small chunks: every `side.TICK`
seconds once `start`ed, and sooner once `side.EAGER` reads are behind -- on SQLite in the same thread
when no read is waiting, on PostgreSQL in a thread and connection of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..store import Repository, UnitOfWork
from . import chain, checkpoint, logs, side

log = logging.getLogger(__name__)


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
                n, left = side.index_chunk(uow, repo.dialect, side.CHUNK, side.ROW_BUDGET)
            self.indexed += n
            more = more or left
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
        if self._checkpointer is None:
            self._checkpointer = checkpoint.Checkpointer()
        self._checkpointer.add(getattr(writer, "path"))  # noqa: B009 (a SQLite repository has one)

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
