"""The transactional outbox: every committed resource change appends its event in the same transaction.

The pattern: https://microservices.io/patterns/data/transactional-outbox.html; what the events feed:
https://hl7.org/fhir/uv/subscriptions-backport/ (topic-based subscriptions).

`Outboxing` wraps a `Repository` the way `audit.recorder.Auditing` does: its unit of work remembers
each `write`, and just before the transaction commits it takes the next numbers from `event_head`
(an `UPDATE ... RETURNING`, so the row stays locked until commit and numbers follow commit order
without gaps, also across PostgreSQL connections) and appends one `event_outbox` row per write. A
rollback takes the rows with it, so a rolled-back change never has an event and a committed one
always has. Writes of Subscription resources are checked here too (topic, filter, channel) and keep
`event_subscription` — the server's delivery state — in step with the resource, in the same transaction.
The store knows nothing of this: it only sees more rows to write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from ..search.params import Registry
from ..store import Current, HistoryEntry, HistoryQuery, IndexRows, Repository, UnitOfWork, Version, Write
from ..store.base import Head
from . import subscriptions

_CHUNK = 100  # outbox rows per INSERT (7 parameters each; SQLite allows 32,766)


@dataclass(frozen=True)
class Owner:
    """The client whose token created a Subscription: notifications carry only what it may read."""

    client_id: str
    scope: str
    patient: str | None = None


def interaction(w: Write) -> str:
    if w.data is None:
        return "delete"
    return "create" if w.previous_pk is None or w.version == 1 else "update"


def _handover_ext(body: dict[str, Any]) -> list[Any]:
    return [e for e in body.get("extension") or () if isinstance(e, dict) and e.get("url") == subscriptions.HANDOVER]


class OutboxUnitOfWork:
    """A UnitOfWork that notes every version written, for the outbox rows appended before commit."""

    def __init__(self, inner: UnitOfWork, registry: Callable[[], Registry], owner: Owner | None,
                 internal: bool, trusted: bool = False) -> None:
        self.inner = inner
        self.registry = registry
        self.owner = owner
        self.internal = internal  # the delivery worker's own status changes
        self.trusted = trusted  # the module registry: may set where a Subscription starts (handover)
        self.writes: list[tuple[str, str, int, str, int]] = []  # (type, id, version, interaction, at_us)

    def current(self, type: str, id: str) -> Current | None:
        return self.inner.current(type, id)

    def write(self, w: Write) -> None:
        if w.type == "Subscription":
            self._subscription(w)
        self.inner.write(w)
        self.writes.append((w.type, w.id, w.version, interaction(w), w.last_updated_us))

    def _subscription(self, w: Write) -> None:
        ex = self.inner.execute
        rows = ex("SELECT status FROM event_subscription WHERE id = ?", (w.id,))
        state = str(rows[0][0]) if rows else None
        if w.data is None:
            ex("DELETE FROM event_notification WHERE sub = ?", (w.id,))
            ex("DELETE FROM event_subscription WHERE id = ?", (w.id,))
            return
        body = orjson.loads(w.data)
        spec = subscriptions.read_spec(self.registry(), body)
        if not self.internal:
            subscriptions.check_client_status(spec.status, state)
        point = subscriptions.handover_point(body)
        if point is not None and not (self.trusted or self.internal) and (
                state is None or self._handover_changed(w.id, body)):
            raise subscriptions.refuse_handover(point[1])
        after = point[0] if point is not None and (self.trusted or self.internal) else None
        values = (spec.topic, spec.filter, spec.payload, spec.endpoint, orjson.dumps(list(spec.headers)).decode(),
                  spec.heartbeat, spec.timeout, spec.max_count, spec.end_us, spec.status)
        cols = ("topic, filter, payload, endpoint, headers, heartbeat, timeout, max_count, end_us, status")
        if state is None:
            owner = self.owner
            start = int(ex("SELECT seq FROM event_head WHERE id = 1", ())[0][0])
            if after is not None:  # a replacement continues after its predecessor (dispatch.catch_up)
                start = min(start, after)
            ex(f"INSERT INTO event_subscription (id, {cols}, owner, owner_scope, owner_patient, start_seq)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (w.id, *values, owner.client_id if owner else None, owner.scope if owner else None,
                owner.patient if owner else None, start))
            return
        sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
        retry = ", error_count = 0, failing_since = NULL, next_try = 0" if spec.status == "requested" else ""
        if self.internal:
            retry = ""
        if state == "off" and spec.status == "requested":
            # switched on again: an off subscription is not matched (dispatch leaves its start_seq where it
            # went off). The registry resumes it from that point (`enable`: afterSequence); anyone else
            # starts afresh with what is committed from now on
            retry += ", start_seq = ?"
            start = after if after is not None else int(ex("SELECT seq FROM event_head WHERE id = 1", ())[0][0])
            ex(f"UPDATE event_subscription SET {sets}{retry} WHERE id = ?", (*values, start, w.id))
            return
        ex(f"UPDATE event_subscription SET {sets}{retry} WHERE id = ?", (*values, w.id))

    def _handover_changed(self, sub_id: str, body: dict[str, Any]) -> bool:
        """Does this update bring a `subscription-handover` the stored version does not carry (a client
        may PUT back the extension the registry wrote, but not add or change one)?"""
        v = self.inner.read("Subscription", sub_id)
        before = orjson.loads(v.data) if v is not None and v.data is not None else {}
        return _handover_ext(before) != _handover_ext(body)

    def append(self) -> int:
        """The outbox rows of this transaction's writes; call last, just before commit."""
        if not self.writes:
            return 0
        n = len(self.writes)
        last = int(self.inner.execute("UPDATE event_head SET seq = seq + ? WHERE id = 1 RETURNING seq", (n,))[0][0])
        first = last - n + 1
        rows = [(first + i, type_, id_, version, version - 1 if version > 1 else None, kind, at_us)
                for i, (type_, id_, version, kind, at_us) in enumerate(self.writes)]
        for start in range(0, n, _CHUNK):  # multi-row INSERTs: one round trip per chunk on PostgreSQL
            chunk = rows[start:start + _CHUNK]
            marks = ", ".join("(?, ?, ?, ?, ?, ?, ?)" for _ in chunk)
            self.inner.execute("INSERT INTO event_outbox (seq, type, id, version, before_version, interaction, at_us)"
                               f" VALUES {marks}", [v for row in chunk for v in row])
        return n

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


class Outboxing:
    """A Repository whose write transactions also append their outbox events.

    `on_commit` is called after each transaction that appended events commits (the delivery worker of
    this process wakes up at once instead of at its next poll).
    """

    def __init__(self, inner: Repository, registry: Callable[[], Registry], owner: Owner | None = None,
                 internal: bool = False, on_commit: Wakeup | None = None, trusted: bool = False) -> None:
        self.inner = inner
        self.registry = registry
        self.owner = owner
        self.internal = internal
        self.on_commit = on_commit
        self.trusted = trusted
        self.dialect = inner.dialect

    def owned_by(self, owner: Owner | None) -> Outboxing:
        """The same repository for one request: Subscriptions it creates belong to `owner`."""
        return Outboxing(self.inner, self.registry, owner, self.internal, self.on_commit, self.trusted)

    def as_internal(self) -> Outboxing:
        return Outboxing(self.inner, self.registry, None, True, self.on_commit)

    def as_registry(self) -> Outboxing:
        """The module registry's writes: only they may carry `subscription-handover` afterSequence (a
        client that can write Subscriptions cannot make one start before it subscribed)."""
        return Outboxing(self.inner, self.registry, self.owner, self.internal, self.on_commit, True)

    @contextmanager
    def transaction(self) -> Iterator[OutboxUnitOfWork]:
        with self.inner.transaction() as uow:
            rec = OutboxUnitOfWork(uow, self.registry, self.owner, self.internal, self.trusted)
            yield rec
            appended = rec.append()
        if appended and self.on_commit is not None:
            self.on_commit()

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


class Wakeup:
    """Wakes this process's delivery worker after a local commit (thread-safe, loop-aware)."""

    def __init__(self) -> None:
        self.event: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def bind(self) -> asyncio.Event:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        return self.event

    def __call__(self) -> None:
        if self.event is None or self.loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.event.set()
        else:
            self.loop.call_soon_threadsafe(self.event.set)
