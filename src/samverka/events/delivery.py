"""The rest-hook delivery worker: handshake, numbered notifications in order, retries, heartbeats.

https://hl7.org/fhir/uv/subscriptions-backport/channels.html#rest-hook and
https://hl7.org/fhir/uv/subscriptions-backport/notifications.html. One asyncio task per server process;
with `--workers N` they compete for a lease in `event_state` and only the holder dispatches and
delivers (a crashed holder's lease expires after `event_lease` seconds and another process takes over).

Per subscription, at most one POST is in flight, always of the lowest undelivered event numbers
(`delivered + 1 ...`, up to max-count per Bundle, `DEFAULT_MAX_COUNT` without one), so delivery is in
order and at-least-once: the `delivered` mark moves only after a 2xx, so a crash between the POST and
that mark resends the events with their same numbers. A failed POST is retried with exponential
backoff (`event_backoff` doubling up to `event_backoff_max`); when failures have lasted
`event_retry_period` (default 24 h) the Subscription's status becomes `error` and delivery stops until
the client asks for `requested` again (it resumes from the first unacknowledged event; `$events`
replays any range meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..fhir.instant import now_us
from ..interactions import writes
from ..interactions.context import Services
from . import dispatch, notify, retention
from .hooks import HookClient, HookError
from .matching import Scratch
from .outbox import Outboxing, Owner, Wakeup
from .subscriptions import WEBSOCKET

log = logging.getLogger(__name__)

# events per notification Bundle for a subscription without the backport max-count extension: a
# subscription that is behind catches up with several notification-events per POST (in order)
DEFAULT_MAX_COUNT = 20
# between full rounds the leader looks at the outbox head this often: a commit in another worker process
# (which cannot wake this one) is dispatched within this, not within event_poll
PEEK = 0.02
# but a peek starts a round at most this long after the previous one began: under a steady stream of
# commits every round costs its fixed queries and a POST per subscription, so rounds stay batched
MIN_ROUND = 0.1

_SUB_COLS = ("id, topic, payload, endpoint, headers, heartbeat, timeout, max_count, end_us, owner, owner_scope,"
             " owner_patient, status, events_since_start, delivered, error_count, failing_since, next_try,"
             " last_sent")
_EVENT_SQL = ("SELECT n.number, n.seq, o.type, o.id, o.version, o.interaction, o.at_us FROM event_notification n"
              " JOIN event_outbox o ON o.seq = n.seq WHERE n.sub = ? AND n.number >= ? AND n.number <= ?"
              " ORDER BY n.number")


@dataclass(frozen=True)
class Sub:
    id: str
    topic: str
    payload: str
    endpoint: str
    headers: list[str]
    heartbeat: int | None
    timeout: int | None
    max_count: int | None
    end_us: int | None
    owner: Owner | None
    status: str
    events_since_start: int
    delivered: int
    error_count: int
    failing_since: int | None
    next_try: int
    last_sent: int

    @classmethod
    def of(cls, r: tuple[Any, ...]) -> Sub:
        owner = Owner(str(r[9]), str(r[10] or ""), r[11]) if r[9] else None
        return cls(str(r[0]), r[1], r[2], r[3], orjson.loads(r[4]), r[5], r[6], r[7], r[8], owner, r[12],
                   int(r[13]), int(r[14]), int(r[15]), r[16], int(r[17]), int(r[18]))


def base_url(svc: Services) -> str:
    s = svc.settings
    return f"{s.public_url.rstrip('/')}/fhir" if s.public_url else s.base_url


def events_of(repo: Any, sub_id: str, first: int, last: int) -> list[notify.Event]:
    return [notify.Event(int(n), int(seq), t, i, int(v), k, int(at))
            for n, seq, t, i, v, k, at in repo.fetch(_EVENT_SQL, (sub_id, first, last))]


def focus_body(svc: Services, scratch: Scratch, owner: Owner | None, e: notify.Event) -> bytes | None:
    """A focus's JSON for a full-resource payload, or None when the subscriber may not read it."""
    v = svc.repo.vread(e.type, e.id, e.version)
    if v is None or v.data is None:
        return None
    if owner is None:
        return v.data if not svc.settings.auth else None  # no token to check: id-only unless auth is off
    with scratch.loaded(orjson.loads(v.data)) as loaded:
        return v.data if loaded.readable(owner) else None


def set_status(svc: Services, sub_id: str, status: str) -> None:
    """Write a new version of the Subscription with the server-owned status (and its delivery state)."""
    with svc.repo.transaction() as uow:
        current = uow.current("Subscription", sub_id)
        v = uow.read("Subscription", sub_id)
        if current is None or current.deleted or v is None or v.data is None:
            return
        body = orjson.loads(v.data)
        if body.get("status") == status:
            return
        body["status"] = status
        writes.commit(uow, svc, writes.prepare(svc, body, sub_id), current, "PUT", writes.stamp_us())


class Worker:
    """Delivers every subscription's notifications while this process holds the delivery lease."""

    def __init__(self, svc: Services, wakeup: Wakeup | None = None) -> None:
        repo = svc.repo
        inner = repo.inner if isinstance(repo, Outboxing) else repo
        self.raw = inner
        self.svc = Services(Outboxing(inner, svc.searchable).as_internal(), svc.registry, None, svc.settings,
                            svc.live)
        self.settings = svc.settings
        self.wakeup = wakeup
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader = False
        self.lease_until = 0
        self.next_prune = 0
        self.scratch: Scratch | None = None
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self.client: HookClient | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for t in list(self.inflight.values()):
            t.cancel()
        if self.client is not None:
            await self.client.aclose()
        if self.scratch is not None:
            self.scratch.close()
        if self.leader:
            with contextlib.suppress(Exception):
                self._release()

    async def run(self) -> None:
        woken = self.wakeup.bind() if self.wakeup is not None else asyncio.Event()
        self.client = HookClient()
        poll = float(self.settings.event_poll)
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            head = self._head() if self.leader else None  # read first: a commit after it is seen as a change
            try:
                self.tick()
            except Exception:  # a database hiccup must not end delivery: log and try again next round
                log.exception("event delivery round failed")
            woken.clear()
            began, deadline = loop.time(), loop.time() + poll
            while not woken.is_set() and not self._stop.is_set() and (left := deadline - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(PEEK, left) if self.leader else left)
                if self.leader and not woken.is_set() and self._head() != head:
                    rest = began + MIN_ROUND - loop.time()
                    if rest > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(woken.wait(), rest)
                    break

    def _head(self) -> int | None:
        """The newest outbox row (an index lookup); None when it cannot be read (the next round will tell)."""
        try:
            rows = self.raw.fetch("SELECT max(seq) FROM event_outbox", ())
        except Exception:
            log.debug("reading the outbox head failed", exc_info=True)
            return None
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def tick(self) -> None:
        now = now_us()
        lease = int(self.settings.event_lease * 1e6)
        if now >= self.lease_until - lease * 2 // 3:
            self.leader = self._acquire(now, lease)
        if not self.leader:
            return
        if self.scratch is None:
            self.scratch = Scratch(self.svc.searchable)
        for _ in range(20):  # at most 10,000 outbox rows per round, then deliver
            if dispatch.dispatch(self.raw, self.scratch) == 0:
                break
        self._schedule(now_us())
        if now >= self.next_prune:
            self.next_prune = now + int(retention.EVERY * 1e6)
            if retention.prune(self.raw, self.settings.event_retention, now):
                log.debug("outbox pruned")

    def _acquire(self, now: int, lease: int) -> bool:
        with self.raw.transaction() as uow:
            rows = uow.execute("UPDATE event_state SET lease_holder = ?, lease_until = ? WHERE id = 1"
                               " AND (lease_holder = ? OR lease_holder IS NULL OR lease_until < ?)"
                               " RETURNING lease_until", (self.holder, now + lease, self.holder, now))
        if rows:
            if not self.leader:
                log.info("delivering subscription notifications (lease %s)", self.holder)
            self.lease_until = now + lease
            return True
        self.lease_until = now + lease // 3  # try again after a third of a lease
        return False

    def _release(self) -> None:
        with self.raw.transaction() as uow:
            uow.execute("UPDATE event_state SET lease_until = 0 WHERE id = 1 AND lease_holder = ?", (self.holder,))

    def _schedule(self, now: int) -> None:
        rows = self.raw.fetch(f"SELECT {_SUB_COLS} FROM event_subscription WHERE status IN ('requested', 'active')"
                              " AND next_try <= ?", (now,))
        for r in rows:
            sub = Sub.of(r)
            if sub.id in self.inflight:
                continue
            if sub.end_us is not None and now >= sub.end_us:
                set_status(self.svc, sub.id, "off")
                continue
            if sub.endpoint == WEBSOCKET:  # nothing to POST: events.websocket sends to the bound sockets
                if sub.status == "requested":
                    set_status(self.svc, sub.id, "active")
                continue
            job = None
            if sub.status == "requested":
                job = self._handshake(sub)
            elif sub.delivered < sub.events_since_start:
                job = self._deliver(sub)
            elif sub.heartbeat and now - sub.last_sent >= sub.heartbeat * 1_000_000:
                job = self._heartbeat(sub)
            if job is not None:
                task = asyncio.get_running_loop().create_task(job)
                self.inflight[sub.id] = task
                task.add_done_callback(self._done_callback(sub.id))

    def _done_callback(self, sub_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self.inflight.pop(sub_id, None)
            if self.wakeup is not None:
                self.wakeup()
        return done

    def _status(self, sub: Sub, status: str) -> notify.SubStatus:
        return notify.SubStatus(sub.id, sub.topic, status, sub.events_since_start)

    async def _handshake(self, sub: Sub) -> None:
        bundle = notify.notification(base_url(self.svc), self._status(sub, "requested"), "handshake", [],
                                     sub.payload)
        if await self._post(sub, bundle):
            self._mark(sub, None)
            set_status(self.svc, sub.id, "active")

    async def _heartbeat(self, sub: Sub) -> None:
        bundle = notify.notification(base_url(self.svc), self._status(sub, "active"), "heartbeat", [], sub.payload)
        if await self._post(sub, bundle):
            self._mark(sub, None)

    async def _deliver(self, sub: Sub) -> None:
        """POST the subscription's undelivered events in order, a Bundle at a time, for as long as it has
        some (the dispatcher numbers new ones meanwhile) and this process still holds the lease."""
        scratch = self.scratch
        assert scratch is not None
        current: Sub | None = sub
        while current is not None and current.delivered < current.events_since_start:
            s = current
            last = min(s.events_since_start, s.delivered + (s.max_count or DEFAULT_MAX_COUNT))
            events = events_of(self.raw, s.id, s.delivered + 1, last)
            if not events:
                return

            def body_of(e: notify.Event, owner: Owner | None = s.owner) -> bytes | None:
                return focus_body(self.svc, scratch, owner, e)

            # events-since-subscription-start counts up to this notification's last event, inclusive
            status = notify.SubStatus(s.id, s.topic, "active", events[-1].number)
            bundle = notify.notification(base_url(self.svc), status, "event-notification", events, s.payload,
                                         body_of)
            if not await self._post(s, bundle):
                return
            current = self._mark(s, events[-1].number)
            if (current is None or current.status != "active" or self._stop.is_set() or not self._holding(current)
                    or (current.end_us is not None and now_us() >= current.end_us)):
                return  # the next round decides (an ended subscription is turned off there)

    def _holding(self, sub: Sub) -> bool:
        """This process still holds the lease with a margin for one more POST (at most a third of a lease:
        the lease is renewed once two thirds of it are left)."""
        margin = int(min(float(sub.timeout or self.settings.event_timeout), self.settings.event_lease / 3) * 1e6)
        return self.leader and now_us() + margin < self.lease_until

    async def _post(self, sub: Sub, bundle: dict[str, Any]) -> bool:
        headers = {"Content-Type": "application/fhir+json"}
        for h in sub.headers:
            name, _, value = h.partition(":")
            headers[name.strip()] = value.strip()
        assert self.client is not None
        try:
            code = await self.client.post(sub.endpoint, orjson.dumps(bundle), headers,
                                          float(sub.timeout or self.settings.event_timeout))
            if 200 <= code < 300:
                return True
            error = f"HTTP {code} from {sub.endpoint}"
        except HookError as exc:
            error = f"posting to {sub.endpoint}: {exc}"
        self._failed(sub, error)
        return False

    def _counted(self, now: int, failed: bool) -> tuple[str, tuple[Any, ...]]:
        """SET clauses recording one POST's outcome in the error-rate windows (rolled in the same UPDATE)."""
        w = int(self.settings.event_error_window * 1e6)
        roll = "? - window_us >= ?"
        prev = f"CASE WHEN {roll} THEN CASE WHEN ? - window_us < ? THEN {{c}} ELSE 0 END ELSE prev_{{c}} END"
        cur = f"CASE WHEN {roll} THEN 0 ELSE {{c}} END + {{add}}"
        sql = (f", prev_attempts = {prev.format(c='attempts')}, prev_failures = {prev.format(c='failures')},"
               f" attempts = {cur.format(c='attempts', add=1)}, failures = {cur.format(c='failures', add=int(failed))},"
               f" window_us = CASE WHEN {roll} THEN ? ELSE window_us END")
        return sql, (now, w, now, 2 * w) * 2 + (now, w) * 2 + (now, w, now)

    def _mark(self, sub: Sub, delivered: int | None) -> Sub | None:
        """Record a 2xx (and the events it acknowledged); the subscription's state after it."""
        now = now_us()
        counted, counts = self._counted(now, False)
        moved = ", delivered = CASE WHEN delivered < ? THEN ? ELSE delivered END" if delivered is not None else ""
        params: tuple[Any, ...] = (delivered, delivered) if delivered is not None else ()
        with self.raw.transaction() as uow:
            rows = uow.execute("UPDATE event_subscription SET error_count = 0, failing_since = NULL, next_try = 0,"
                               f" last_sent = ?, last_error = NULL{moved}{counted} WHERE id = ?"
                               f" RETURNING {_SUB_COLS}", (now, *params, *counts, sub.id))
        return Sub.of(rows[0]) if rows else None

    def _failed(self, sub: Sub, error: str) -> None:
        now = now_us()
        s = self.settings
        since = sub.failing_since if sub.failing_since is not None else now
        delay = min(s.event_backoff * 2 ** sub.error_count, s.event_backoff_max)
        log.warning("subscription %s: %s (failure %d, next try in %.1f s)", sub.id, error, sub.error_count + 1,
                    delay)
        counted, counts = self._counted(now, True)
        with self.raw.transaction() as uow:
            uow.execute("UPDATE event_subscription SET error_count = error_count + 1, failing_since = ?,"
                        f" next_try = ?, last_error = ?{counted} WHERE id = ?",
                        (since, now + int(delay * 1e6), error, *counts, sub.id))
        if now - since >= s.event_retry_period * 1e6:
            log.error("subscription %s: failing for %.0f s, status error", sub.id, (now - since) / 1e6)
            set_status(self.svc, sub.id, "error")
