"""Event test helpers: a real rest-hook receiver on loopback and Subscription/resource builders."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from support.server import RunningServer, free_port

EXT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "https://samverka.se/fhir/SubscriptionTopic/"
FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "subscriptions-backport"
# server options for quick retries, shared by the event modules that start their own server
QUICK = ["--event-backoff", "0.2", "--event-backoff-max", "1", "--event-lease", "2"]
LAB = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def status(self) -> dict[str, Any]:
        """The SubscriptionStatus parameters of this notification, by name (notification-event: a list)."""
        params = self.body["entry"][0]["resource"]["parameter"]
        out: dict[str, Any] = {"notification-event": []}
        for p in params:
            if p["name"] == "notification-event":
                out["notification-event"].append(
                    {q["name"]: next(v for k, v in q.items() if k.startswith("value")) for q in p["part"]}
                )
            else:
                out[p["name"]] = next(v for k, v in p.items() if k.startswith("value"))
        return out

    @property
    def kind(self) -> str:
        return str(self.status["type"])

    @property
    def subscription(self) -> str:
        return str(self.status["subscription"]["reference"]).rsplit("/", 1)[-1]

    @property
    def numbers(self) -> list[int]:
        return [int(e["event-number"]) for e in self.status["notification-event"]]


class Receiver:
    """A rest-hook endpoint: records every POST; `answer` is the HTTP status it replies with.

    `stop()` closes the socket (the endpoint is down: connections are refused); `start()` binds the same
    port again.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.answer = 200
        self.on_post: Callable[[dict[str, Any]], None] | None = None  # runs before the answer is sent
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                if outer.on_post is not None:
                    outer.on_post(json.loads(raw))
                status = outer.answer
                if status < 300:
                    with outer._cond:
                        outer.received.append(
                            Received(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw))
                        )
                        outer._cond.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        for _ in range(50):
            try:
                self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
                break
            except OSError:
                time.sleep(0.1)
        assert self._server is not None
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of(self, sub_id: str, kind: str | None = None) -> list[Received]:
        with self._cond:
            return [r for r in self.received if r.subscription == sub_id and (kind is None or r.kind == kind)]

    def wait(self, cond: Callable[[], bool], timeout: float = 20.0, what: str = "notifications") -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not cond():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out waiting for {what}; received: "
                        f"{[(r.subscription, r.kind, r.numbers) for r in self.received]}"
                    )
                self._cond.wait(min(left, 0.2))

    def events(self, sub_id: str, count: int, timeout: float = 20.0) -> list[Received]:
        """Wait until `count` distinct event numbers arrived for `sub_id`; the event notifications."""

        def enough() -> bool:
            return len({n for r in self.of(sub_id, "event-notification") for n in r.numbers}) >= count

        self.wait(enough, timeout, f"{count} events of Subscription/{sub_id}")
        return self.of(sub_id, "event-notification")


def subscription(
    topic: str,
    endpoint: str,
    payload: str = "id-only",
    filter_: str | None = None,
    heartbeat: int | None = None,
    max_count: int | None = None,
    headers: list[str] | None = None,
) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": f"{EXT}backport-payload-content", "valueCode": payload}]},
        "extension": [{"url": f"{EXT}backport-timeout", "valueUnsignedInt": 5}],
    }
    if heartbeat:
        channel["extension"].append({"url": f"{EXT}backport-heartbeat-period", "valueUnsignedInt": heartbeat})
    if max_count:
        channel["extension"].append({"url": f"{EXT}backport-max-count", "valuePositiveInt": max_count})
    if headers:
        channel["header"] = headers
    sub: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [f"{EXT}backport-subscription"]},
        "status": "requested",
        "reason": "test",
        "criteria": TOPIC + topic,
        "channel": channel,
    }
    if filter_:
        sub["_criteria"] = {"extension": [{"url": f"{EXT}backport-filter-criteria", "valueString": filter_}]}
    return sub


def encounter(patient: str, status: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient}"},
    }


def lab_result(patient: str, code: str = "2345-7") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [LAB],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


def subscribe(server: RunningServer, receiver: Receiver, topic: str, **kw: Any) -> str:
    """POST a Subscription and wait for its handshake; its id."""
    r = server.client.post("/Subscription", json=subscription(topic, receiver.url, **kw))
    assert r.status_code == 201, r.text
    sub_id = str(r.json()["id"])
    receiver.wait(lambda: bool(receiver.of(sub_id, "handshake")), what="the handshake")
    return sub_id


def create(server: RunningServer, resource: dict[str, Any]) -> dict[str, Any]:
    r = server.client.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "inferno-fixtures" / name).read_text())
    return data


def shape(value: Any) -> Any:
    """The structure of a notification with ids, timestamps, URLs and numbers taken out: the keys of
    every object, parameter names in order with their value[x] types; a focus resource counts only by
    its resourceType being present."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k == "resource" and isinstance(v, dict) and v.get("resourceType") != "Parameters":
                out[k] = "resource"
            elif k == "name" and isinstance(v, str):
                out[k] = v
            else:
                out[k] = shape(v)
        return out
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__
