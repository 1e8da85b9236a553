"""The websocket channel against a real server and a real websocket client (the `websockets` library).

https://hl7.org/fhir/uv/subscriptions-backport/channels.html#websockets: `$get-ws-binding-token`, then
`bind-with-token`, a handshake, numbered event-notifications in order, heartbeats, and catch-up through
`$events` after a reconnect; with `--workers 2` a socket on either worker gets every event.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from typing import Any

import pytest
from eventkit import EXT, QUICK, TOPIC, Received, create, fixture, lab_result, shape
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from support.server import RunningServer, expect_outcome, launch


def ws_subscription(
    topic: str = "lab-result", payload: str = "id-only", heartbeat: int | None = None
) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "type": "websocket",
        "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": f"{EXT}backport-payload-content", "valueCode": payload}]},
    }
    if heartbeat:
        channel["extension"] = [{"url": f"{EXT}backport-heartbeat-period", "valueUnsignedInt": heartbeat}]
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [f"{EXT}backport-subscription"]},
        "status": "requested",
        "reason": "websocket test",
        "criteria": TOPIC + topic,
        "channel": channel,
    }


def params(body: dict[str, Any]) -> dict[str, Any]:
    assert body["resourceType"] == "Parameters", body
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in body["parameter"]}


def binding(server: RunningServer, sub_id: str, method: str = "GET") -> dict[str, Any]:
    r = server.client.request(method, f"/Subscription/{sub_id}/$get-ws-binding-token")
    assert r.status_code == 200, r.text
    return params(r.json())


def subscribe_ws(server: RunningServer, **kw: Any) -> str:
    r = server.client.post("/Subscription", json=ws_subscription(**kw))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


class Socket:
    """A real websocket client bound to one subscription; `frames` are the parsed Bundles received."""

    def __init__(self, server: RunningServer, sub_id: str) -> None:
        token = binding(server, sub_id)
        self._stack = ExitStack()
        self.conn: ClientConnection = self._stack.enter_context(connect(token["websocket-url"], open_timeout=10))
        self.conn.send(f"bind-with-token {token['token']}")
        self.frames: list[Received] = []

    def next(self, timeout: float = 20.0) -> Received:
        body = json.loads(self.conn.recv(timeout=timeout))
        assert body.get("resourceType") == "Bundle", body
        got = Received("ws", {}, body)
        self.frames.append(got)
        return got

    def events(self, count: int, timeout: float = 20.0) -> list[int]:
        """Read until `count` event numbers arrived (heartbeats skipped); the numbers in arrival order."""
        numbers: list[int] = []
        deadline = time.monotonic() + timeout
        while len(numbers) < count:
            got = self.next(max(0.1, deadline - time.monotonic()))
            if got.kind == "event-notification":
                numbers += got.numbers
        return numbers

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def patient(server: RunningServer) -> str:
    return str(create(server, {"resourceType": "Patient", "name": [{"family": "Websocket"}]})["id"])


def test_binding_token_parameters(server: RunningServer) -> None:
    sub_id = subscribe_ws(server)
    for method in ("GET", "POST"):
        p = binding(server, sub_id, method)
        assert set(p) == {"token", "expiration", "subscription", "websocket-url"}
        assert p["subscription"].endswith(f"/Subscription/{sub_id}")
        assert p["websocket-url"].startswith("ws://") and p["websocket-url"].endswith("/fhir/ws")
        assert p["expiration"] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    # the server activates a websocket subscription itself (there is no endpoint to handshake with)
    deadline = time.monotonic() + 20
    while server.client.get(f"/Subscription/{sub_id}").json()["status"] != "active":
        assert time.monotonic() < deadline, "the websocket subscription never became active"
        time.sleep(0.1)


def test_token_for_a_rest_hook_or_unknown_subscription_is_refused(server: RunningServer) -> None:
    body = ws_subscription()
    body["channel"] = {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook", "payload": "application/fhir+json"}
    r = server.client.post("/Subscription", json=body)
    assert r.status_code == 201, r.text
    issues = expect_outcome(server.client.get(f"/Subscription/{r.json()['id']}/$get-ws-binding-token"), 422)
    assert issues[0]["expression"] == ["Subscription.channel.type"]
    expect_outcome(server.client.get("/Subscription/nope/$get-ws-binding-token"), 404)
    expect_outcome(server.client.get("/Subscription/$get-ws-binding-token"), 400)
    bad = ws_subscription()
    bad["channel"]["type"] = "email"
    issues = expect_outcome(server.client.post("/Subscription", json=bad), 422)
    assert issues[0]["expression"] == ["Subscription.channel.type"]


def test_handshake_then_numbered_events_in_order(server: RunningServer, patient: str) -> None:
    sub_id = subscribe_ws(server)
    ws = Socket(server, sub_id)
    try:
        hs = ws.next()
        assert hs.kind == "handshake" and hs.subscription == sub_id
        assert hs.status["events-since-subscription-start"] == "0"
        assert shape(hs.body) == shape(fixture("handshake_bundle_example.json"))
        made = [create(server, lab_result(patient))["id"] for _ in range(5)]
        assert ws.events(5) == [1, 2, 3, 4, 5]
        notes = [f for f in ws.frames if f.kind == "event-notification"]
        assert [e["fullUrl"].rsplit("/", 1)[1] for f in notes for e in f.body["entry"][1:]] == made
        assert shape(notes[0].body) == shape(fixture("id_only_notification_bundle_example.json"))
    finally:
        ws.close()
    status = server.client.get(f"/Subscription/{sub_id}/$status").json()["entry"][0]["resource"]
    assert {p["name"]: p.get("valueString") for p in status["parameter"]}["events-since-subscription-start"] == "5"


def test_reconnect_catches_up_through_events(server: RunningServer, patient: str) -> None:
    sub_id = subscribe_ws(server)
    ws = Socket(server, sub_id)
    assert ws.next().kind == "handshake"
    create(server, lab_result(patient))
    assert ws.events(1) == [1]
    ws.close()
    missed = [create(server, lab_result(patient))["id"] for _ in range(2)]  # nobody connected
    deadline = time.monotonic() + 20
    while int(params_of_status(server, sub_id)["events-since-subscription-start"]) < 3:
        assert time.monotonic() < deadline, "the two events were never numbered"
        time.sleep(0.1)
    again = Socket(server, sub_id)
    try:
        hs = again.next()
        assert hs.kind == "handshake" and hs.status["events-since-subscription-start"] == "3"
        r = server.client.get(
            f"/Subscription/{sub_id}/$events", params={"eventsSinceNumber": "2", "eventsUntilNumber": "3"}
        )
        assert r.status_code == 200, r.text
        replay = Received("$events", {}, r.json())
        assert replay.numbers == [2, 3]
        assert [e["fullUrl"].rsplit("/", 1)[1] for e in r.json()["entry"][1:]] == missed
        create(server, lab_result(patient))
        assert again.events(1) == [4]  # the socket continues after the handshake's count: no gap
    finally:
        again.close()


def params_of_status(server: RunningServer, sub_id: str) -> dict[str, Any]:
    entry = server.client.get(f"/Subscription/{sub_id}/$status").json()["entry"][0]["resource"]
    return params(entry)


def test_heartbeat_when_idle(server: RunningServer) -> None:
    sub_id = subscribe_ws(server, heartbeat=1)
    ws = Socket(server, sub_id)
    try:
        assert ws.next().kind == "handshake"
        beat = ws.next(timeout=10)
        assert beat.kind == "heartbeat" and beat.subscription == sub_id
        assert shape(beat.body) == shape(fixture("heartbeat_bundle_example.json"))
    finally:
        ws.close()


def test_bad_tokens_are_refused(server: RunningServer) -> None:
    sub_id = subscribe_ws(server)
    token = binding(server, sub_id)
    with connect(token["websocket-url"], open_timeout=10) as conn:
        for message in ("bind-with-token not-a-token", f"bind-with-token {token['token'][:-4]}AAAA", "hello"):
            conn.send(message)
            answer = json.loads(conn.recv(timeout=10))
            assert answer["resourceType"] == "OperationOutcome", answer
        conn.send(f"bind-with-token {token['token']}")  # the socket stays usable: a good token binds
        assert json.loads(conn.recv(timeout=10))["type"] == "history"


def test_switched_off_subscription_stops_sending(server: RunningServer, patient: str) -> None:
    sub_id = subscribe_ws(server)
    ws = Socket(server, sub_id)
    try:
        assert ws.next().kind == "handshake"
        body = server.client.get(f"/Subscription/{sub_id}").json()
        body["status"] = "off"
        assert server.client.put(f"/Subscription/{sub_id}", json=body).status_code == 200
        create(server, lab_result(patient))
        with pytest.raises(TimeoutError):
            ws.next(timeout=2)
        expect_outcome(server.client.get(f"/Subscription/{sub_id}/$get-ws-binding-token"), 422)
    finally:
        ws.close()


@pytest.fixture(scope="module")
def two_workers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = launch(request, "sqlite", tmp_path_factory.mktemp("ws-workers"), [*QUICK, "--workers", "2"])
    try:
        yield srv
    finally:
        srv.stop()


def test_sockets_on_any_worker_get_every_event(two_workers: RunningServer) -> None:
    """Sockets on both worker processes (the server logs which process bound each); the one that does
    not hold the delivery lease learns of new events from the database alone, and every socket gets
    every event, in order."""
    srv = two_workers
    patient = str(create(srv, {"resourceType": "Patient", "name": [{"family": "Workers"}]})["id"])
    sub_id = subscribe_ws(srv)
    sockets: list[Socket] = []
    try:
        with ThreadPoolExecutor(8) as pool:  # connections at the same moment: both workers accept some
            while len(_binding_processes(srv, sub_id)) < 2:
                assert len(sockets) < 160, "every socket landed on the same worker process"
                batch = list(pool.map(lambda _: Socket(srv, sub_id), range(8)))
                sockets += batch
                assert all(ws.next().kind == "handshake" for ws in batch)
        leader = re.findall(r"delivering subscription notifications \(lease [^:]+:(\d+):", srv.log())
        assert leader and _binding_processes(srv, sub_id) - {leader[-1]}  # a socket away from the leader
        for _ in range(8):
            create(srv, lab_result(patient))
        for ws in sockets:
            assert ws.events(8) == list(range(1, 9))
    finally:
        for ws in sockets:
            with suppress(ConnectionClosed):
                ws.close()


def _binding_processes(srv: RunningServer, sub_id: str) -> set[str]:
    return set(re.findall(rf"websocket bound Subscription/{sub_id} in process (\d+)", srv.log()))
