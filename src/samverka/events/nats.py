"""The optional NATS JetStream bridge: every committed outbox event, in outbox order, at least once.

https://docs.nats.io/nats-concepts/jetstream (streams, publish acknowledgements) and
https://docs.nats.io/using-nats/developer/develop_jetstream/model_deep_dive#message-deduplication
(`Nats-Msg-Id`). `samverka serve --nats URL [--nats-stream NAME]` starts one `Bridge` per server
process; like the delivery worker (`delivery`), they compete for a lease, here in their own
`event_bridge` row (migration 0012), so exactly one process publishes, and a crashed holder's lease
expires after `event_lease` seconds.

Subjects: every event is published once to `samverka.events.all`, the complete ordered feed, and
once more to `samverka.events.<topic>` for each shipped SubscriptionTopic it triggers (`<topic>` is
the last segment of the topic's canonical URL, e.g. `samverka.events.lab-result`); an event that
triggers no topic goes to `samverka.events.all` alone. The body is compact JSON (`message`).

Guarantees: the leader reads outbox rows after its cursor (`event_bridge.published`) in sequence
order and publishes them one at a time, each only after the previous one's PubAck, so the stream
holds them in outbox order; the cursor moves only after JetStream has acknowledged every message of
an event. A crash or a NATS outage between the acknowledgement and the cursor update publishes those
events again: they carry `Nats-Msg-Id` = the outbox sequence (`<seq>:<topic>` on topic subjects), so
inside the stream's duplicate window (default two minutes) JetStream drops the repeat, and after it
the repeat is an at-least-once duplicate with the same `sequence`. The stream is created if missing
(subjects `samverka.events.>`, file storage); a new bridge starts at sequence 0 and publishes the
whole outbox from the first event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Any

import nats
import orjson
from nats.js.errors import NotFoundError

from ..fhir.instant import format_instant, now_us
from ..interactions.context import Services
from . import topics
from .dispatch import OutboxRow, triggered
from .matching import Scratch
from .outbox import Outboxing

log = logging.getLogger(__name__)

PREFIX = "samverka.events"
ALL = f"{PREFIX}.all"
_BATCH = 200  # outbox rows per round (the cursor moves once per round)
_PUBLISH_TIMEOUT = 5.0


def token(url: str) -> str:
    """A topic's subject token: the last segment of its canonical URL (`.../lab-result` → `lab-result`)."""
    return url.rstrip("/").rsplit("/", 1)[-1].replace(".", "-")


def message(row: OutboxRow, topic_urls: list[str]) -> bytes:
    """The message body: which change, where it sits in the outbox, and the topics it triggers."""
    return orjson.dumps({"sequence": row.seq, "resourceType": row.type, "id": row.id,
                         "versionId": str(row.version), "interaction": row.interaction,
                         "timestamp": format_instant(row.at_us), "topics": topic_urls})


def publications(row: OutboxRow, topic_urls: list[str]) -> list[tuple[str, str]]:
    """(subject, Nats-Msg-Id) of each message of one event: the complete feed first, then its topics."""
    return [(ALL, str(row.seq)), *((f"{PREFIX}.{token(u)}", f"{row.seq}:{token(u)}") for u in topic_urls)]


def _body(repo: Any, type_: str, id_: str, version: int | None) -> dict[str, Any] | None:
    if version is None:
        return None
    v = repo.vread(type_, id_, version)
    return orjson.loads(v.data) if v is not None and v.data is not None else None


async def _quiet(_exc: Exception) -> None:
    """nats-py's error callback: failures surface where they happen (publish, connect) instead."""


class Bridge:
    """Publishes the outbox to JetStream while this process holds the bridge lease."""

    def __init__(self, svc: Services) -> None:
        repo = svc.repo
        self.raw = repo.inner if isinstance(repo, Outboxing) else repo
        self.svc = svc
        self.settings = svc.settings
        assert self.settings.nats is not None
        self.url = self.settings.nats
        self.stream = self.settings.nats_stream
        self.name = f"nats:{self.stream}"
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader = False
        self.lease_until = 0
        self.nc: Any = None
        self.js: Any = None
        self.scratch: Scratch | None = None
        self._failing = False
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
        await self._disconnect()
        if self.scratch is not None:
            self.scratch.close()
        if self.leader:
            with contextlib.suppress(Exception), self.raw.transaction() as uow:
                uow.execute("UPDATE event_bridge SET lease_until = 0 WHERE name = ? AND lease_holder = ?",
                            (self.name, self.holder))

    async def run(self) -> None:
        poll = float(self.settings.event_poll)
        delay = poll
        while not self._stop.is_set():
            try:
                done = await self.round()
                if self._failing:
                    log.info("NATS bridge: publishing to %s again", self.url)
                self._failing = False
                delay = poll
            except Exception as exc:  # NATS or the database away: keep the cursor, reconnect, try again
                if not self._failing:
                    log.warning("NATS bridge: cannot publish to %s (%s: %s); retrying", self.url,
                                type(exc).__name__, exc)
                self._failing = True
                await self._disconnect()
                done = 0
                delay = min(max(delay * 2, poll), 5.0)
            if done < _BATCH:  # caught up (or failing): wait; a full batch goes on at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), poll if not self._failing else delay)

    async def round(self) -> int:
        """Publish the next batch of outbox rows if this process leads; the number of events published."""
        if not self._lease():
            await self._disconnect()  # a follower holds no connection
            return 0
        cursor = self._cursor()
        rows = [OutboxRow(*r) for r in self.raw.fetch(
            "SELECT seq, type, id, version, before_version, interaction, at_us FROM event_outbox"
            " WHERE seq > ? ORDER BY seq LIMIT ?", (cursor, _BATCH))]
        if not rows:
            return 0
        js = await self._connect()
        published = cursor
        try:
            for row in rows:
                if not self._lease():
                    break  # lost the lease mid-batch: what was acknowledged still counts
                urls = self._topics(row)
                body = message(row, urls)
                for subject, msg_id in publications(row, urls):
                    await js.publish(subject, body, timeout=_PUBLISH_TIMEOUT, stream=self.stream,
                                     headers={"Nats-Msg-Id": msg_id})
                published = row.seq
        finally:
            if published > cursor:
                self._advance(published)
        return published - cursor

    def _topics(self, row: OutboxRow) -> list[str]:
        """The canonical URLs of the shipped topics this change triggers."""
        candidates = [t for t in topics.TOPICS if row.type in t.types]
        if not candidates:
            return []
        if self.scratch is None:
            self.scratch = Scratch(self.svc.searchable)
        current = _body(self.raw, row.type, row.id, row.version)
        previous = _body(self.raw, row.type, row.id, row.before_version)
        return [t.url for t in candidates if triggered(t, row, self.scratch, previous, current)]

    def _cursor(self) -> int:
        rows = self.raw.fetch("SELECT published FROM event_bridge WHERE name = ?", (self.name,))
        return int(rows[0][0]) if rows else 0

    def _advance(self, published: int) -> None:
        """Move the cursor (never back: a former leader's late update cannot undo a newer one)."""
        with self.raw.transaction() as uow:
            uow.execute("UPDATE event_bridge SET published = ? WHERE name = ? AND published < ?",
                        (published, self.name, published))

    def _lease(self) -> bool:
        now = now_us()
        lease = int(self.settings.event_lease * 1e6)
        if now < self.lease_until - lease * 2 // 3:
            return self.leader
        with self.raw.transaction() as uow:
            uow.execute("INSERT INTO event_bridge (name, published, lease_holder, lease_until) VALUES (?, 0, NULL, 0)"
                        " ON CONFLICT (name) DO NOTHING", (self.name,))
            rows = uow.execute("UPDATE event_bridge SET lease_holder = ?, lease_until = ? WHERE name = ?"
                               " AND (lease_holder = ? OR lease_holder IS NULL OR lease_until < ?)"
                               " RETURNING lease_until", (self.holder, now + lease, self.name, self.holder, now))
        if rows:
            if not self.leader:
                log.info("NATS bridge: publishing the outbox to %s, stream %s (lease %s)", self.url, self.stream,
                         self.holder)
            self.leader = True
            self.lease_until = now + lease
        else:
            self.leader = False
            self.lease_until = now + lease // 3  # try again after a third of a lease
        return self.leader

    async def _connect(self) -> Any:
        if self.js is not None and self.nc is not None and self.nc.is_connected:
            return self.js
        await self._disconnect()
        # one attempt, no client-side reconnects (nats-py would otherwise retry for minutes inside connect,
        # and buffer publishes while reconnecting): `run` reconnects with its own backoff
        self.nc = await nats.connect(self.url, name=f"samverka {self.holder}", allow_reconnect=False,
                                     connect_timeout=2, max_reconnect_attempts=1, reconnect_time_wait=0,
                                     error_cb=_quiet)
        js = self.nc.jetstream(timeout=_PUBLISH_TIMEOUT)
        try:
            await js.stream_info(self.stream)
        except NotFoundError:
            await js.add_stream(name=self.stream, subjects=[f"{PREFIX}.>"])
            log.info("NATS bridge: created stream %s (subjects %s.>)", self.stream, PREFIX)
        self.js = js
        return js

    async def _disconnect(self) -> None:
        nc, self.nc, self.js = self.nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
