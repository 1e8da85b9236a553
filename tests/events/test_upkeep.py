"""Delivery error rate (the module view) and outbox retention, against a live server (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eventkit import Receiver, create, lab_result, subscribe
from test_outbox import _store

from samverka.events import delivery_state
from samverka.events.retention import prune
from samverka.fhir.instant import now_us
from samverka.store.base import Repository
from support.server import RunningServer


@pytest.fixture(scope="module")
def store(server: RunningServer) -> Iterator[Repository]:
    repo = _store(server)
    try:
        yield repo
    finally:
        repo.close()


def _seqs(store: Repository, sub_id: str) -> dict[int, int]:
    return {
        int(n): int(s)
        for n, s in store.fetch(
            "SELECT n.number, n.seq FROM event_notification n JOIN event_outbox o ON o.seq = n.seq WHERE n.sub = ?",
            (sub_id,),
        )
    }


def _state(store: Repository, sub_id: str) -> dict[str, Any]:
    found = delivery_state(store, sub_id)
    assert found is not None
    return found


def test_error_rate_and_retention(server: RunningServer, receiver: Receiver, store: Repository) -> None:
    """Failed POSTs count in the error rate; pruning keeps young rows and every unacknowledged event,
    deletes old acknowledged ones, and `$events` still replays what is kept."""
    sub_id = subscribe(server, receiver, "lab-result", filter_="Observation?patient=Patient/p-upkeep", max_count=1)
    for _ in range(3):
        create(server, lab_result("p-upkeep"))
    receiver.events(sub_id, 3)
    receiver.wait(lambda: _state(store, sub_id)["acknowledgedEvent"] == 3, what="3 acknowledged")
    ok = _state(store, sub_id)
    assert ok["failedAttempts"] == 0 and ok["deliveryAttempts"] >= 4  # handshake + 3 notifications
    assert ok["errorRate"] == 0

    receiver.answer = 500  # the endpoint fails: events 4 and 5 stay unacknowledged
    for _ in range(2):
        create(server, lab_result("p-upkeep"))
    receiver.wait(lambda: _state(store, sub_id)["failedAttempts"] >= 2, what="failed attempts")
    failing = _state(store, sub_id)
    assert failing["acknowledgedEvent"] == 3 and failing["eventsSinceSubscriptionStart"] == 5
    assert 0 < failing["errorRate"] < 1
    assert failing["errorRate"] == round(failing["failedAttempts"] / failing["deliveryAttempts"], 4)

    seqs = _seqs(store, sub_id)
    assert sorted(seqs) == [1, 2, 3, 4, 5]
    assert prune(store, 3600) == 0  # everything is younger than the retention
    later = now_us() + 2 * 3600 * 1_000_000
    assert prune(store, 3600, later) > 0
    kept = _seqs(store, sub_id)
    assert sorted(kept) == [4, 5]  # acknowledged and old: gone; unacknowledged: kept
    assert store.fetch("SELECT COUNT(*) FROM event_outbox WHERE seq >= ?", (seqs[4],))[0][0] >= 2
    replay = server.client.get(f"/Subscription/{sub_id}/$events", params={"eventsSinceNumber": "4"}).json()
    numbers = [
        p["part"][0]["valueString"]
        for p in replay["entry"][0]["resource"]["parameter"]
        if p["name"] == "notification-event"
    ]
    assert numbers == ["4", "5"]

    receiver.answer = 200  # recovers: once acknowledged, they may go too
    receiver.wait(lambda: _state(store, sub_id)["acknowledgedEvent"] == 5, timeout=30, what="5 acknowledged")
    assert prune(store, 3600, later) > 0
    assert _seqs(store, sub_id) == {}
    assert _state(store, sub_id)["acknowledgedSequence"] >= seqs[5]  # the handover point survives pruning
