"""The websocket channel: `$get-ws-binding-token`, `bind-with-token`, and numbered notifications.

https://hl7.org/fhir/uv/subscriptions-backport/channels.html#websockets and
https://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition-backport-subscription-get-ws-binding-token.html.
A Subscription with `channel.type = websocket` is numbered by the dispatcher like any other (the leader
matches events into `event_notification`); nothing is POSTed for it. A client asks
`Subscription/{id}/$get-ws-binding-token` (which needs read access to that Subscription) for a short-lived
token naming that one subscription, opens the `websocket-url` and sends `bind-with-token <token>`. The
server answers with a handshake Bundle whose `events-since-subscription-start` is the count N at that
moment, then sends every event numbered N+1, N+2, ... in order (event-notification Bundles, the same
shapes as rest-hook) and heartbeats when idle; a reconnecting client fetches what it missed up to N with
`$events`.

The socket may be held by any worker process while another one leads dispatch, so no process pushes
to another: each process's `Hub` polls `event_subscription.events_since_start` of the subscriptions
bound in it (one indexed query per `event_poll` while sockets are bound) and reads the new numbered
events itself. Tokens are JWTs signed with the server's keys (shared by every worker through the
database), so a token from one worker binds on another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError

from ..auth import store as auth_store
from ..auth.access import Access
from ..auth.tokens import ALG, KeyRing, mint
from ..errors import Category, FhirError, Issue, invalid
from ..fhir.instant import format_instant, now_us
from ..interactions.context import Result, Services
from . import notify
from .delivery import base_url, events_of, focus_body
from .matching import Scratch
from .outbox import Owner
from .subscriptions import WEBSOCKET

log = logging.getLogger(__name__)

LIFETIME = 60  # seconds a binding token is valid (it is used once, to bind; the socket then stays bound)
ISSUER = "urn:samverka:ws-binding"
TYP = "ws-binding+jwt"
PATH = "/fhir/ws"  # the websocket endpoint (api/websocket.py)
_COLS = "topic, payload, status, events_since_start, heartbeat, max_count, owner, owner_scope, owner_patient"

Send = Callable[[str], Awaitable[None]]


def websocket_url(base: str) -> str:
    """ws(s)://host/fhir/ws for an http(s)://host/fhir base."""
    scheme, _, rest = base.partition("://")
    host = rest.split("/", 1)[0]
    return f"{'wss' if scheme == 'https' else 'ws'}://{host}{PATH}"


def _unprocessable(message: str, expression: str | None = None) -> FhirError:
    return FhirError(Category.UNPROCESSABLE, [Issue("error", "processing", message, expression)])


def binding_token(repo: Any, keys: KeyRing, base: str, sub_id: str, access: Access | None) -> Result:
    """`$get-ws-binding-token` on one Subscription: a Parameters with token, expiration, subscription
    and websocket-url. The caller already holds read access to the Subscription (auth.access)."""
    rows = repo.fetch("SELECT endpoint, status, owner FROM event_subscription WHERE id = ?", (sub_id,))
    if not rows:
        raise FhirError.of(Category.NOT_FOUND, f"Subscription/{sub_id} is not a topic-based subscription on "
                           "this server", code="not-found")
    endpoint, status, owner = rows[0]
    if endpoint != WEBSOCKET:
        raise _unprocessable(f"Subscription/{sub_id} does not use the websocket channel",
                             "Subscription.channel.type")
    if status == "off":
        raise _unprocessable(f"Subscription/{sub_id} is off", "Subscription.status")
    client = access.client_id if access is not None else None
    if access is not None and owner != client and not any(
            g.context != "patient" and g.covers("r", "Subscription") for g in access.grants):
        raise FhirError.of(Category.FORBIDDEN, f"Subscription/{sub_id} belongs to another client", code="forbidden")
    claims: dict[str, Any] = {"iss": ISSUER, "aud": ISSUER, "sub": sub_id, "subscriptions": [sub_id]}
    if client is not None:
        claims["client_id"] = client
    token, full = mint(keys, claims, LIFETIME, TYP)
    params = [{"name": "token", "valueString": token},
              {"name": "expiration", "valueDateTime": format_instant(int(full["exp"]) * 1_000_000)},
              {"name": "subscription", "valueString": f"{base}/Subscription/{sub_id}"},
              {"name": "websocket-url", "valueUrl": websocket_url(base)}]
    return Result(200, resource={"resourceType": "Parameters", "parameter": params})


def verify(repo: Any, keys: KeyRing, token: str) -> dict[str, Any]:
    """The claims of a valid binding token; ValueError (with the reason) otherwise."""
    try:
        header = dict(jws.extract_compact(token.encode()).protected)
        decoded = jwt.decode(token, keys.verification_set(header.get("kid")), algorithms=[ALG])
    except (JoseError, ValueError) as exc:
        raise ValueError("the binding token is malformed or its signature does not verify") from exc
    claims = dict(decoded.claims)
    if decoded.header.get("typ") != TYP or claims.get("iss") != ISSUER or claims.get("aud") != ISSUER:
        raise ValueError("not a websocket binding token")
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= int(time.time()):
        raise ValueError("the binding token has expired")
    client = claims.get("client_id")
    if isinstance(client, str) and auth_store.token_withdrawn(repo, str(claims.get("jti")), client,
                                                              int(claims.get("iat") or 0)):
        raise ValueError("the binding token's client is revoked or disabled")
    subs = claims.get("subscriptions")
    if not isinstance(subs, list) or not subs or not all(isinstance(s, str) for s in subs):
        raise ValueError("the binding token names no subscription")
    return claims


def outcome(message: str, code: str = "security") -> str:
    """An OperationOutcome text frame (a refused bind or an unknown command)."""
    return orjson.dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": code, "diagnostics": message}]}).decode()


@dataclass(eq=False)
class Connection:
    """One client socket; frames to it are sent one at a time (notifications stay in order)."""

    send_text: Send
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    bindings: dict[str, Binding] = field(default_factory=dict)

    async def send(self, frame: dict[str, Any]) -> None:
        async with self.lock:
            await self.send_text(orjson.dumps(frame).decode())


@dataclass
class Binding:
    sub_id: str
    topic: str
    payload: str
    heartbeat: int | None
    max_count: int
    owner: Owner | None
    sent: int  # the last event number sent on this socket
    last_frame: float  # monotonic


class Hub:
    """This process's bound sockets, and the poller that feeds them (runs while any socket is bound)."""

    def __init__(self, svc: Services, keys: KeyRing) -> None:
        self.svc = svc
        self.repo = svc.repo
        self.keys = keys
        self.connections: set[Connection] = set()
        self.scratch: Scratch | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def connect(self, send_text: Send) -> Connection:
        conn = Connection(send_text)
        self.connections.add(conn)
        return conn

    def disconnect(self, conn: Connection) -> None:
        self.connections.discard(conn)

    async def command(self, conn: Connection, text: str) -> None:
        """One message from the client: `bind-with-token <token>` (the only command of the channel)."""
        verb, _, arg = text.strip().partition(" ")
        if verb != "bind-with-token" or not arg.strip():
            await conn.send_text(outcome(f"unknown command {verb!r}; send 'bind-with-token <token>'", "invalid"))
            return
        try:
            claims = verify(self.repo, self.keys, arg.strip())
        except ValueError as exc:
            await conn.send_text(outcome(str(exc)))
            return
        for sub_id in claims["subscriptions"]:
            await self._bind(conn, sub_id)
        self._ensure_running()

    async def _bind(self, conn: Connection, sub_id: str) -> None:
        rows = self.repo.fetch(f"SELECT {_COLS} FROM event_subscription WHERE id = ? AND endpoint = ?",
                               (sub_id, WEBSOCKET))
        if not rows or rows[0][2] == "off":
            await conn.send_text(outcome(f"Subscription/{sub_id} is not an active websocket subscription",
                                         "not-found"))
            return
        topic, payload, status, count, heartbeat, max_count, owner, scope, patient = rows[0]
        b = Binding(sub_id, topic, payload, heartbeat, int(max_count or 1),
                    Owner(str(owner), str(scope or ""), patient) if owner else None, int(count), time.monotonic())
        sub = notify.SubStatus(sub_id, topic, "active" if status == "requested" else status, int(count))
        await conn.send(notify.notification(base_url(self.svc), sub, "handshake", [], payload))
        conn.bindings[sub_id] = b  # after the handshake: events follow it, never precede it
        log.info("websocket bound Subscription/%s in process %d", sub_id, os.getpid())

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        poll = float(self.svc.settings.event_poll)
        while any(c.bindings for c in self.connections):
            try:
                await self.round()
            except Exception:  # a database hiccup must not end the channel: log and poll again
                log.exception("websocket notification round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    async def round(self) -> None:
        """Send every bound socket its new events (in number order), or a heartbeat when idle."""
        bound = {sid for c in self.connections for sid in c.bindings}
        if not bound:
            return
        marks = ", ".join("?" for _ in bound)
        counts = {str(i): (st, int(n)) for i, st, n in self.repo.fetch(
            f"SELECT id, status, events_since_start FROM event_subscription WHERE id IN ({marks})", sorted(bound))}
        sent: dict[str, int] = {}
        for conn in list(self.connections):
            try:
                for sid, b in list(conn.bindings.items()):
                    status, count = counts.get(sid, ("off", 0))
                    if status == "off":  # switched off or deleted: this socket gets nothing more for it
                        del conn.bindings[sid]
                        continue
                    if count > b.sent:
                        await self._events(conn, b, count)
                        sent[sid] = max(sent.get(sid, 0), b.sent)
                    elif b.heartbeat and time.monotonic() - b.last_frame >= b.heartbeat:
                        sub = notify.SubStatus(sid, b.topic, "active", count)
                        await conn.send(notify.notification(base_url(self.svc), sub, "heartbeat", [], b.payload))
                        b.last_frame = time.monotonic()
            except Exception as exc:  # the socket went away: forget it
                log.info("websocket closed while sending: %s", exc)
                self.disconnect(conn)
        if sent:
            self._mark(sent)

    async def _events(self, conn: Connection, b: Binding, count: int) -> None:
        if self.scratch is None:
            self.scratch = Scratch(self.svc.searchable)
        scratch = self.scratch

        def body_of(e: notify.Event) -> bytes | None:
            return focus_body(self.svc, scratch, b.owner, e)

        while b.sent < count:
            events = events_of(self.repo, b.sub_id, b.sent + 1, min(count, b.sent + b.max_count))
            if not events:
                return
            sub = notify.SubStatus(b.sub_id, b.topic, "active", events[-1].number)
            await conn.send(notify.notification(base_url(self.svc), sub, "event-notification", events, b.payload,
                                                body_of))
            b.sent = events[-1].number
            b.last_frame = time.monotonic()

    def _mark(self, sent: dict[str, int]) -> None:
        """The module view's figures: the last event sent counts as delivered (a websocket has no ack)."""
        now = now_us()
        with self.repo.transaction() as uow:
            for sid, n in sent.items():
                uow.execute("UPDATE event_subscription SET delivered = CASE WHEN delivered < ? THEN ? ELSE delivered"
                            " END, last_sent = ?, error_count = 0, last_error = NULL WHERE id = ?", (n, n, now, sid))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.scratch is not None:
            self.scratch.close()


class Channel:
    """What the API layer holds for the websocket channel (one per process): the signing keys for
    binding tokens and the hub of bound sockets, both created on first use."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self._keys: KeyRing | None = None
        self._hub: Hub | None = None

    @property
    def keys(self) -> KeyRing:
        if self._keys is None:
            self._keys = KeyRing(self.svc.repo)
        return self._keys

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            self._hub = Hub(self.svc, self.keys)
        return self._hub

    def binding_token(self, base: str, sub_id: str, access: Access | None) -> Result:
        return binding_token(self.svc.repo, self.keys, base, sub_id, access)

    async def stop(self) -> None:
        if self._hub is not None:
            await self._hub.stop()


def refuse_type_level() -> FhirError:
    return invalid("$get-ws-binding-token is supported on one Subscription: Subscription/{id}/$get-ws-binding-token"
                   " (a token is for a single subscription)", None, "not-supported")
