"""The SDK's notification receiver, over real HTTP (uvicorn on loopback), driven with notification Bundles in
the backport shape (built from the conformance fixtures); gaps are filled from a small real `$events`
endpoint that serves the same shape."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from modkit import ThreadServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from samverka.sdk import AsyncFhirClient, FileState, Notification, NotificationReceiver

FIXTURES = Path("/work/shared/conformance/subscriptions-backport/inferno-fixtures")
BASE = "https://fhirserver.org/fhir"
SUB = "123"
TOPIC = "http://fhirserver.org/topics/patient-admission"


def _fixture(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


def handshake(sub: str = SUB, topic: str = TOPIC) -> dict[str, Any]:
    b = _fixture("handshake_bundle_example.json")
    params = b["entry"][0]["resource"]["parameter"]
    params[0]["valueReference"]["reference"] = f"{BASE}/Subscription/{sub}"
    params[1]["valueCanonical"] = topic
    return b


def notification(numbers: list[int], total: int | None = None, kind: str = "event-notification",
                 sub: str = SUB) -> dict[str, Any]:
    """The IG's id-only notification example with the given event numbers (one Encounter focus each)."""
    b = _fixture("id_only_notification_bundle_example.json")
    status = b["entry"][0]
    template = b["entry"][1]
    params = [p for p in status["resource"]["parameter"] if p["name"] != "notification-event"]
    for p in params:
        if p["name"] == "type":
            p["valueCode"] = kind
        if p["name"] == "events-since-subscription-start":
            p["valueString"] = str(total if total is not None else max(numbers, default=0))
        if p["name"] == "subscription":
            p["valueReference"]["reference"] = f"{BASE}/Subscription/{sub}"
    entries = [status]
    for n in numbers:
        url = f"{BASE}/Encounter/e{n}"
        params.append({"name": "notification-event", "part": [
            {"name": "event-number", "valueString": str(n)},
            {"name": "timestamp", "valueInstant": "2020-05-29T11:44:13.1882432-05:00"},
            {"name": "focus", "valueReference": {"reference": url}}]})
        entry = copy.deepcopy(template)
        entry["fullUrl"] = url
        entries.append(entry)
    status["resource"]["parameter"] = params
    b["entry"] = entries
    return b


class EventsEndpoint:
    """A tiny real `$events` endpoint: serves the events it has been given, records what was asked."""

    def __init__(self) -> None:
        self.have: set[int] = set()
        self.asked: list[tuple[int, int]] = []
        self.app = Starlette(routes=[Route("/fhir/Subscription/{id}/$events", self.events, methods=["GET"])])

    async def events(self, request: Request) -> JSONResponse:
        first = int(request.query_params["eventsSinceNumber"])
        last = int(request.query_params["eventsUntilNumber"])
        self.asked.append((first, last))
        numbers = [n for n in range(first, last + 1) if n in self.have]
        return JSONResponse(notification(numbers, total=max(self.have, default=0), kind="query-event",
                                         sub=request.path_params["id"]))


@pytest.fixture
def endpoint() -> Iterator[tuple[EventsEndpoint, ThreadServer]]:
    ep = EventsEndpoint()
    with ThreadServer(ep.app) as srv:
        yield ep, srv


class Seen:
    def __init__(self, fail_on: int | None = None) -> None:
        self.events: list[Notification] = []
        self.fail_on = fail_on

    async def __call__(self, e: Notification) -> None:
        if e.number == self.fail_on:
            self.fail_on = None  # fails once
            raise RuntimeError("the module's handler failed")
        self.events.append(e)

    @property
    def numbers(self) -> list[int]:
        return [e.number for e in self.events]


def _post(srv: ThreadServer, bundle: Any, **headers: str) -> httpx.Response:
    return httpx.post(f"{srv.url}/notify", json=bundle, headers=headers, timeout=30)


def test_handshake_is_verified() -> None:
    seen = Seen()
    rx = NotificationReceiver(seen, topics=[TOPIC], subscriptions=[SUB], header=("X-Module-Key", "s3cret"))
    with ThreadServer(rx.app) as srv:
        assert _post(srv, handshake(), **{"X-Module-Key": "s3cret"}).status_code == 200
        assert rx.handshakes == {SUB}
        assert _post(srv, handshake()).status_code == 401  # the channel header is missing
        assert _post(srv, handshake(topic="http://other/topic"), **{"X-Module-Key": "s3cret"}).status_code == 403
        assert _post(srv, handshake(sub="999"), **{"X-Module-Key": "s3cret"}).status_code == 403
        not_history = handshake()
        not_history["type"] = "collection"
        assert _post(srv, not_history, **{"X-Module-Key": "s3cret"}).status_code == 400
        no_status = handshake()
        no_status["entry"] = []
        assert _post(srv, no_status, **{"X-Module-Key": "s3cret"}).status_code == 400
    assert seen.events == []


def test_events_in_order_once_each() -> None:
    seen = Seen()
    rx = NotificationReceiver(seen)
    with ThreadServer(rx.app) as srv:
        assert _post(srv, handshake()).status_code == 200
        assert _post(srv, notification([1])).status_code == 200
        assert _post(srv, notification([2, 3])).status_code == 200
        assert _post(srv, notification([2, 3])).status_code == 200  # at-least-once: resent
        assert _post(srv, notification([1])).status_code == 200
    assert seen.numbers == [1, 2, 3]
    assert rx.duplicates == 3
    assert seen.events[0].focus == f"{BASE}/Encounter/e1" and seen.events[0].subscription == SUB
    assert seen.events[0].topic == TOPIC and not seen.events[0].replayed


def test_gaps_are_filled_from_events(endpoint: tuple[EventsEndpoint, ThreadServer]) -> None:
    ep, events_srv = endpoint
    ep.have = set(range(1, 8))
    seen = Seen()
    rx = NotificationReceiver(seen, client=AsyncFhirClient(f"{events_srv.url}/fhir"))
    with ThreadServer(rx.app) as srv:
        assert _post(srv, notification([1])).status_code == 200
        assert _post(srv, notification([5])).status_code == 200  # 2, 3 and 4 never arrived
        assert ep.asked == [(2, 4)]
        assert seen.numbers == [1, 2, 3, 4, 5]
        assert [e.replayed for e in seen.events] == [False, True, True, True, False]
        # a heartbeat says 7 events happened: 6 and 7 are fetched
        assert _post(srv, notification([], total=7, kind="heartbeat")).status_code == 200
        assert ep.asked[-1] == (6, 7)
        assert seen.numbers == [1, 2, 3, 4, 5, 6, 7]
        assert rx.filled == 5
        assert _post(srv, notification([6, 7])).status_code == 200  # late originals: duplicates
    assert seen.numbers == [1, 2, 3, 4, 5, 6, 7]


def test_an_unfillable_gap_is_refused_until_it_can_be_filled(endpoint: tuple[EventsEndpoint, ThreadServer]) -> None:
    ep, events_srv = endpoint
    ep.have = {1, 2}
    seen = Seen()
    rx = NotificationReceiver(seen, client=AsyncFhirClient(f"{events_srv.url}/fhir"))
    with ThreadServer(rx.app) as srv:
        assert _post(srv, notification([1])).status_code == 200
        r = _post(srv, notification([4]))  # 2 comes back from $events, 3 does not (yet)
        assert r.status_code == 503, r.text
        assert seen.numbers == [1, 2]
        ep.have.add(3)
        assert _post(srv, notification([4])).status_code == 200  # the server's retry
    assert seen.numbers == [1, 2, 3, 4]


def test_without_an_events_client_a_gap_is_refused() -> None:
    seen = Seen()
    rx = NotificationReceiver(seen)
    with ThreadServer(rx.app) as srv:
        assert _post(srv, notification([2])).status_code == 503
    assert seen.events == []


def test_a_failing_handler_gets_the_event_again_and_state_survives_a_restart(tmp_path: Path) -> None:
    seen = Seen(fail_on=2)
    state = tmp_path / "receiver-state.json"
    rx = NotificationReceiver(seen, state=FileState(state))
    with ThreadServer(rx.app) as srv:
        assert _post(srv, notification([1, 2])).status_code == 500
        assert seen.numbers == [1]
        assert _post(srv, notification([1, 2])).status_code == 200  # resent: 1 is a duplicate, 2 handled
    assert seen.numbers == [1, 2]
    assert json.loads(state.read_text()) == {SUB: 2}
    again = Seen()
    restarted = NotificationReceiver(again, state=FileState(state))
    with ThreadServer(restarted.app) as srv:
        assert _post(srv, notification([2, 3])).status_code == 200
    assert again.numbers == [3]


def test_full_resource_payload_reaches_the_handler() -> None:
    bundle = _fixture("full_resource_notification_bundle_example.json")
    seen = Seen()
    rx = NotificationReceiver(seen)
    with ThreadServer(rx.app) as srv:
        assert _post(srv, bundle).status_code == 200
    [e] = seen.events
    assert e.resource is not None and e.resource["resourceType"] == "Encounter"
    assert e.focus is not None and e.focus.endswith(f"Encounter/{e.resource['id']}")
