"""No event lost: an endpoint that was down, a retry period that ran out, a server killed with -9, and
several worker processes (exactly one delivers)."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from eventkit import QUICK, Receiver, create, lab_result, subscribe, subscription
from test_outbox import _store

from samverka.api.server import build_services
from samverka.config import Settings
from samverka.events import Outboxing, delivery_state
from samverka.interactions import create as create_interaction
from support.server import BACKENDS, RunningServer, expect_outcome, launch, start_server


def _status_params(server: RunningServer, sub_id: str) -> dict[str, object]:
    res = server.client.get(f"/Subscription/{sub_id}/$status").json()["entry"][0]["resource"]
    return {p["name"]: next((v for k, v in p.items() if k.startswith("value")), None) for p in res["parameter"]}


def test_events_reach_an_endpoint_that_was_down(server: RunningServer, receiver: Receiver) -> None:
    """While the receiver is down the events wait (with the error visible in $status); once it is back
    up they arrive, all of them, numbered 1..n in order."""
    sub_id = subscribe(server, receiver, "lab-result", filter_="Observation?patient=Patient/p-down", max_count=2)
    receiver.stop()
    for _ in range(5):
        create(server, lab_result("p-down"))
    deadline = time.monotonic() + 20
    while "error" not in _status_params(server, sub_id):
        assert time.monotonic() < deadline, "the failed delivery never showed in $status"
        time.sleep(0.2)
    assert _status_params(server, sub_id)["status"] == "active"
    receiver.start()
    got = receiver.events(sub_id, 5)
    numbers = [n for r in got for n in r.numbers]
    assert sorted(set(numbers)) == [1, 2, 3, 4, 5]
    assert numbers == sorted(numbers), "delivered out of order"
    assert all(len(r.numbers) <= 2 for r in got)  # max-count
    time.sleep(0.5)
    assert "error" not in _status_params(server, sub_id)


@pytest.mark.parametrize("backend", BACKENDS)
def test_failures_past_the_retry_period_set_status_error(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, receiver: Receiver
) -> None:
    """After --event-retry-period seconds of failures the Subscription reads status error; a client that
    asks for requested again gets a handshake and then every event, from the first undelivered one."""
    srv = launch(request, backend, tmp_path, [*QUICK, "--event-retry-period", "1.5"])
    try:
        sub_id = subscribe(srv, receiver, "lab-result", filter_="Observation?patient=Patient/p-err")
        receiver.answer = 503
        create(srv, lab_result("p-err"))
        deadline = time.monotonic() + 30
        while srv.client.get(f"/Subscription/{sub_id}").json()["status"] != "error":
            assert time.monotonic() < deadline, "the subscription never went to status error"
            time.sleep(0.2)
        assert _status_params(srv, sub_id)["status"] == "error"
        create(srv, lab_result("p-err"))  # still numbered while in error, for $events
        receiver.answer = 200
        sub = srv.client.get(f"/Subscription/{sub_id}").json()
        sub["status"] = "requested"
        assert srv.client.put(f"/Subscription/{sub_id}", json=sub).status_code == 200
        got = receiver.events(sub_id, 2)
        assert [n for r in got for n in r.numbers] == [1, 2]
        assert len(receiver.of(sub_id, "handshake")) == 2
    finally:
        srv.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_event_committed_before_a_kill_is_delivered_after_restart(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, receiver: Receiver
) -> None:
    """kill -9 right after the commit, before delivery (the endpoint refuses): the restarted server
    delivers the event with its number."""
    srv = launch(request, backend, tmp_path, QUICK)
    database = srv.args[srv.args.index("--database") + 1] if "--database" in srv.args else None
    sub_id = subscribe(srv, receiver, "lab-result", filter_="Observation?patient=Patient/p-kill")
    receiver.stop()  # nothing can be delivered before the kill
    made = create(srv, lab_result("p-kill"))
    store = _store(srv)
    try:
        deadline = time.monotonic() + 10
        while not store.fetch("SELECT 1 FROM event_notification WHERE sub = ?", (sub_id,)):
            assert time.monotonic() < deadline, "the event was never matched"
            time.sleep(0.05)
    finally:
        store.close()
    os.killpg(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(timeout=10)
    srv.client.close()
    receiver.start()
    assert receiver.of(sub_id, "event-notification") == []
    again = start_server(tmp_path, database, QUICK, backend=backend)
    try:
        [note] = receiver.events(sub_id, 1, timeout=30)
        assert note.numbers == [1]
        assert note.status["notification-event"][0]["focus"]["reference"].endswith(made["id"])
    finally:
        again.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_several_workers_deliver_once_in_order(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, receiver: Receiver
) -> None:
    """With --workers 2 one process holds the lease: 20 events arrive once each, in order."""
    srv = launch(request, backend, tmp_path, [*QUICK, "--workers", "2"])
    try:
        r = srv.client.post(
            "/Subscription", json=subscription("lab-result", receiver.url, filter_="Observation?patient=Patient/p-many")
        )
        assert r.status_code == 201, r.text
        sub_id = r.json()["id"]
        for _ in range(20):
            create(srv, lab_result("p-many"))
        got = receiver.events(sub_id, 20, timeout=40)
        assert [n for r in got for n in r.numbers] == list(range(1, 21))
        assert len(receiver.of(sub_id, "handshake")) == 1
    finally:
        srv.stop()


def test_handover_continues_after_the_predecessors_last_acknowledged_event(
    server: RunningServer, receiver: Receiver
) -> None:
    """A Subscription with `subscription-handover` afterSequence (written by the module registry, the
    only writer allowed to set it: `Outboxing.as_registry`) gets every matching event committed after
    that outbox position — also those committed before it existed —
    numbered from 1, in order, and then the live ones."""
    old = subscribe(server, receiver, "lab-result", filter_="Observation?patient=Patient/p-hand")
    first = [create(server, lab_result("p-hand"))["id"] for _ in range(2)]
    receiver.events(old, 2)
    store = _store(server)
    try:
        # the receiver has the POST before the server has recorded its 2xx: wait for the acknowledgement
        deadline = time.monotonic() + 15
        while (
            (state := delivery_state(store, old)) is not None
            and state["acknowledgedEvent"] != 2
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        body = server.client.get(f"/Subscription/{old}").json()
        assert server.client.put(f"/Subscription/{old}", json={**body, "status": "off"}).status_code == 200
        [(after,)] = store.fetch("SELECT seq FROM event_notification WHERE sub = ? AND number = 2", (old,))
        state = delivery_state(store, old)
        assert state is not None and state["acknowledgedEvent"] == 2 and state["acknowledgedSequence"] == after
    finally:
        store.close()
    missed = [create(server, lab_result("p-hand"))["id"] for _ in range(2)]  # nobody is subscribed now
    new = subscription("lab-result", receiver.url, filter_="Observation?patient=Patient/p-hand")
    new["extension"] = [
        {
            "url": "https://samverka.se/fhir/StructureDefinition/subscription-handover",
            "extension": [{"url": "afterSequence", "valueString": str(after)}],
        }
    ]
    issues = expect_outcome(server.client.post("/Subscription", json=new), 422)  # not from a client
    assert issues[0]["expression"] == ["Subscription.extension[0].extension[0].valueString"]
    new_id = _registry_create(server, new)  # as `samverka module replace` writes it
    live = create(server, lab_result("p-hand"))["id"]
    got = receiver.events(new_id, 3)
    focus = [e["focus"]["reference"].rsplit("/", 1)[-1] for r in got for e in r.status["notification-event"]]
    assert [n for r in got for n in r.numbers] == [1, 2, 3]
    assert focus == [*missed, live]
    assert not set(first) & set(focus)
    bad = {
        **new,
        "extension": [
            {"url": new["extension"][0]["url"], "extension": [{"url": "afterSequence", "valueString": "-1"}]}
        ],
    }
    issues = expect_outcome(server.client.post("/Subscription", json=bad), 422)
    assert issues[0]["expression"] == ["Subscription.extension[0].extension[0].valueString"]


def _registry_create(server: RunningServer, body: dict[str, Any]) -> str:
    """Create a Subscription through the event core as the module registry does (in this process, on the
    running server's store; its delivery worker picks it up from the database)."""
    args = server.args
    database = args[args.index("--database") + 1] if "--database" in args else None
    data_dir = Path(args[args.index("--data-dir") + 1]) if "--data-dir" in args else None
    svc = build_services(Settings(data_dir=data_dir, database=database, auth=False))
    try:
        assert isinstance(svc.repo, Outboxing)
        registry = dataclasses.replace(svc, repo=svc.repo.as_registry())
        result = create_interaction.create(registry, "Subscription", body, None)
        assert result.status == 201 and result.version is not None
        return result.version.id
    finally:
        svc.repo.close()
