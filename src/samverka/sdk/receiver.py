"""An ASGI (Starlette) receiver for rest-hook notifications of topic-based subscriptions.

https://hl7.org/fhir/uv/subscriptions-backport/notifications.html: each POST is a Bundle of type
`history` whose first entry is the SubscriptionStatus (a Parameters resource, backport-subscription-
status-r4) with the notification `type` (handshake, heartbeat, event-notification), the
`events-since-subscription-start` count and one `notification-event` (event-number, focus) per event;
the focus entries follow.

The receiver
- verifies handshakes: a well-formed status for a subscription and topic this module expects (when
  `subscriptions` / `topics` are given) and the shared header (when `header` is given);
- tracks, per subscription, the highest event number handled, and hands every event to `on_event`
  exactly once, in order: an event at or below that number is a duplicate (at-least-once delivery
  resends) and is answered 200 without calling `on_event` again;
- detects gaps (an event number beyond the next one, or a heartbeat / status count beyond the last
  handled) and fills them from `$events` (https://hl7.org/fhir/uv/subscriptions-backport/
  OperationDefinition-backport-subscription-events.html) before going on. If they cannot be filled,
  or `on_event` raises, it answers 503/500 and the server sends the notification again later.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .client import AsyncFhirClient

KINDS = ("handshake", "heartbeat", "event-notification", "query-event", "query-status")


@dataclass(frozen=True)
class Notification:
    """One event of one subscription, as handed to `on_event`."""

    subscription: str
    topic: str | None
    number: int
    timestamp: str | None
    focus: str | None  # the focus reference (absolute URL), None for an `empty` payload
    resource: dict[str, Any] | None  # the focus resource for `full-resource`, when the server sent it
    replayed: bool = False  # fetched with $events to fill a gap


@dataclass
class Status:
    """The SubscriptionStatus of one notification Bundle, with its events."""

    subscription: str
    topic: str | None
    status: str | None
    kind: str
    total: int | None  # events-since-subscription-start
    events: list[Notification] = field(default_factory=list)


class BadNotification(ValueError):
    """Not a backport notification Bundle; the message says why."""


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadNotification(f"{what} is not an integer: {value!r}") from None


def _value(p: dict[str, Any]) -> Any:
    for k, v in p.items():
        if k.startswith("value"):
            return v
    return None


def parse(bundle: Any, replayed: bool = False) -> Status:
    """The status and events of a notification Bundle (or a $events answer); BadNotification otherwise."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" or bundle.get("type") != "history":
        raise BadNotification("a notification is a Bundle of type history")
    entries = bundle.get("entry") or []
    first = entries[0].get("resource") if entries and isinstance(entries[0], dict) else None
    if not isinstance(first, dict) or first.get("resourceType") != "Parameters":
        raise BadNotification("the first entry of a notification must be the SubscriptionStatus (Parameters)")
    values: dict[str, Any] = {}
    raw_events: list[list[dict[str, Any]]] = []
    for p in first.get("parameter", []):
        if p.get("name") == "notification-event":
            raw_events.append(p.get("part", []))
        else:
            values[str(p.get("name"))] = _value(p)
    ref = values.get("subscription")
    ref = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(ref, str) or "Subscription/" not in ref:
        raise BadNotification("the status has no subscription reference")
    sub_id = ref.rsplit("Subscription/", 1)[1].split("/")[0]
    kind = values.get("type")
    if kind not in KINDS:
        raise BadNotification(f"unknown notification type {kind!r}")
    total = values.get("events-since-subscription-start")
    bodies = {e.get("fullUrl"): e.get("resource") for e in entries[1:] if isinstance(e, dict)}
    topic = values.get("topic")
    out = Status(sub_id, topic, values.get("status"), str(kind),
                 _int(total, "events-since-subscription-start") if total is not None else None)
    for parts in raw_events:
        ev = {str(p.get("name")): _value(p) for p in parts}
        focus = ev.get("focus", {}).get("reference") if isinstance(ev.get("focus"), dict) else None
        body = bodies.get(focus) if focus else None
        out.events.append(Notification(sub_id, topic, _int(ev.get("event-number"), "event-number"),
                                       ev.get("timestamp"), focus, body if isinstance(body, dict) else None,
                                       replayed))
    out.events.sort(key=lambda n: n.number)
    return out


class State(Protocol):
    """Where the receiver keeps each subscription's last handled event number."""

    def last(self, subscription: str) -> int: ...

    def set_last(self, subscription: str, number: int) -> None: ...


class MemoryState:
    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}

    def last(self, subscription: str) -> int:
        return self.numbers.get(subscription, 0)

    def set_last(self, subscription: str, number: int) -> None:
        self.numbers[subscription] = number


class FileState(MemoryState):
    """A JSON file of {subscription: last event number}, replaced atomically on every change, so a
    restarted module neither repeats nor skips events."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        if self.path.exists():
            self.numbers = {str(k): int(v) for k, v in json.loads(self.path.read_text()).items()}

    def set_last(self, subscription: str, number: int) -> None:
        super().set_last(subscription, number)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.numbers))
        os.replace(tmp, self.path)


Fetch = Callable[[str, int, int], Awaitable[dict[str, Any]]]  # (subscription, first, last) -> Bundle
Handler = Callable[[Notification], Awaitable[None] | None]


class GapNotFilled(Exception):
    """$events did not give the missing events (yet)."""


class NotificationReceiver:
    """The receiver; `app` is the Starlette application (mount it, or serve it with uvicorn)."""

    def __init__(self, on_event: Handler, fetch_events: Fetch | None = None, client: AsyncFhirClient | None = None,
                 topics: Iterable[str] | None = None, subscriptions: Iterable[str] | None = None,
                 state: State | None = None, path: str = "/notify", header: tuple[str, str] | None = None) -> None:
        if fetch_events is None and client is not None:
            api = client

            async def fetch(sub: str, first: int, last: int) -> dict[str, Any]:
                return await api.events(sub, first, last)

            fetch_events = fetch
        self.on_event = on_event
        self.fetch_events = fetch_events
        self.topics = set(topics) if topics is not None else None
        self.subscriptions = set(subscriptions) if subscriptions is not None else None
        self.state: State = state if state is not None else MemoryState()
        self.header = header
        self.handshakes: set[str] = set()
        self.handled = 0
        self.duplicates = 0
        self.filled = 0  # events fetched with $events
        self._locks: dict[str, asyncio.Lock] = {}
        self.app = Starlette(routes=[Route(path, self.receive, methods=["POST"])])

    def _refuse(self, s: Status) -> str | None:
        if self.subscriptions is not None and s.subscription not in self.subscriptions:
            return f"Subscription/{s.subscription} is not one of this module's subscriptions"
        if self.topics is not None and s.topic not in self.topics:
            return f"topic {s.topic!r} is not one this module subscribes to"
        return None

    async def receive(self, request: Request) -> Response:
        if self.header is not None and request.headers.get(self.header[0]) != self.header[1]:
            return JSONResponse({"error": f"missing or wrong {self.header[0]} header"}, 401)
        try:
            s = parse(json.loads(await request.body()))
        except (BadNotification, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        refused = self._refuse(s)
        if refused:
            return JSONResponse({"error": refused}, 403)
        lock = self._locks.setdefault(s.subscription, asyncio.Lock())
        async with lock:
            try:
                await self.process(s)
            except GapNotFilled as exc:
                return JSONResponse({"error": str(exc)}, 503)
        return JSONResponse({"ok": True, "last": self.state.last(s.subscription)})

    async def process(self, s: Status) -> None:
        """Handle one parsed notification (also usable without HTTP)."""
        if s.kind == "handshake":
            self.handshakes.add(s.subscription)
            return
        for e in s.events:
            last = self.state.last(s.subscription)
            if e.number <= last:
                self.duplicates += 1
                continue
            if e.number > last + 1:
                await self.fill(s.subscription, last + 1, e.number - 1)
            await self._handle(e)
        if s.total is not None and s.total > self.state.last(s.subscription):
            await self.fill(s.subscription, self.state.last(s.subscription) + 1, s.total)

    async def _handle(self, e: Notification) -> None:
        result = self.on_event(e)
        if inspect.isawaitable(result):
            await result
        self.state.set_last(e.subscription, e.number)
        self.handled += 1

    async def fill(self, subscription: str, first: int, last: int) -> None:
        """Fetch events first..last with $events and handle them in order."""
        if self.fetch_events is None:
            raise GapNotFilled(f"events {first}-{last} of Subscription/{subscription} are missing and there is "
                               "no $events client to fetch them")
        while self.state.last(subscription) < last:
            start = self.state.last(subscription) + 1
            try:
                got = parse(await self.fetch_events(subscription, start, last), replayed=True)
            except Exception as exc:
                raise GapNotFilled(f"$events {start}-{last} of Subscription/{subscription} failed: {exc}") from exc
            progressed = False
            for e in got.events:
                if e.number <= self.state.last(subscription) or e.number > last:
                    continue
                if e.number != self.state.last(subscription) + 1:
                    break
                await self._handle(Notification(subscription, e.topic, e.number, e.timestamp, e.focus, e.resource,
                                                True))
                self.filled += 1
                progressed = True
            if not progressed:
                raise GapNotFilled(f"$events did not return event {start} of Subscription/{subscription}")
