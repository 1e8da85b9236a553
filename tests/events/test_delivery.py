"""rest-hook delivery against a live server: handshake, numbered notifications, payloads, filters, retries."""

from __future__ import annotations

import time
from typing import Any

from eventkit import Receiver, create, encounter, lab_result, subscribe, subscription

from samverka.fhir.instant import format_instant, now_us
from support.server import RunningServer, expect_outcome


def test_handshake_then_subscription_becomes_active(server: RunningServer, receiver: Receiver) -> None:
    """A new Subscription gets a handshake bundle (status requested, 0 events), then reads as active."""
    sub_id = subscribe(server, receiver, "encounter-start-end", headers=["X-Module-Key: secret-1"])
    hs = receiver.of(sub_id, "handshake")[0]
    assert hs.status["status"] == "requested"
    assert hs.status["events-since-subscription-start"] == "0"
    assert hs.headers["x-module-key"] == "secret-1"
    assert hs.headers["content-type"] == "application/fhir+json"
    receiver.wait(
        lambda: server.client.get(f"/Subscription/{sub_id}").json()["status"] == "active", what="status active"
    )


def test_notifications_arrive_in_order_with_numbers(server: RunningServer, receiver: Receiver) -> None:
    """Encounters that start and end produce events 1..n in commit order; other changes none."""
    sub_id = subscribe(server, receiver, "encounter-start-end", max_count=1)
    ids = []
    for _ in range(3):
        enc = create(server, encounter("p-order", "in-progress"))  # starts: an event
        ids.append(enc["id"])
        enc["status"] = "finished"
        assert server.client.put(f"/Encounter/{enc['id']}", json=enc).status_code == 200  # ends: an event
        ids.append(enc["id"])
    create(server, encounter("p-order", "planned"))  # neither: no event
    got = receiver.events(sub_id, 6)
    numbers = [n for r in got for n in r.numbers]
    assert numbers == [1, 2, 3, 4, 5, 6]
    focus = [r.status["notification-event"][0]["focus"]["reference"].rsplit("/", 1)[-1] for r in got]
    assert focus == ids
    assert [r.status["events-since-subscription-start"] for r in got] == ["1", "2", "3", "4", "5", "6"]
    assert [r.body["entry"][1]["request"]["method"] for r in got] == ["POST", "PUT"] * 3


def test_payload_kinds(server: RunningServer, receiver: Receiver) -> None:
    """empty: status only; id-only: a focus entry without resource; full-resource: the version itself."""
    subs = {
        kind: subscribe(server, receiver, "lab-result", payload=kind, filter_="Observation?patient=Patient/p-pay")
        for kind in ("empty", "id-only", "full-resource")
    }
    obs = create(server, lab_result("p-pay"))
    for kind, sub_id in subs.items():
        [note] = receiver.events(sub_id, 1)
        entries = note.body["entry"]
        event = note.status["notification-event"][0]
        if kind == "empty":
            assert len(entries) == 1 and "focus" not in event
            continue
        assert event["focus"]["reference"].endswith(f"/Observation/{obs['id']}")
        assert entries[1]["fullUrl"].endswith(f"/Observation/{obs['id']}")
        if kind == "id-only":
            assert "resource" not in entries[1]
        else:
            assert entries[1]["resource"]["id"] == obs["id"]
            assert entries[1]["resource"]["meta"]["versionId"] == "1"


def test_filter_criteria_select_events(server: RunningServer, receiver: Receiver) -> None:
    """Only lab results of the filtered patient; other categories never trigger the lab topic."""
    sub_id = subscribe(server, receiver, "lab-result", filter_="Observation?patient=Patient/p-filter")
    create(server, lab_result("someone-else"))
    vital = lab_result("p-filter")
    vital["category"] = [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}
    ]
    create(server, vital)
    mine = create(server, lab_result("p-filter"))
    [note] = receiver.events(sub_id, 1)
    assert note.status["notification-event"][0]["focus"]["reference"].endswith(mine["id"])
    assert (
        server.client.get(f"/Subscription/{sub_id}/$status").json()["entry"][0]["resource"]["parameter"][4][
            "valueString"
        ]
        == "1"
    )


def test_bad_topic_or_filter_is_refused(server: RunningServer, receiver: Receiver) -> None:
    """An unknown topic, a parameter the topic cannot filter by, or a chain: 422 naming the element."""
    bad = subscription("no-such-topic", receiver.url)
    issues = expect_outcome(server.client.post("/Subscription", json=bad), 422)
    assert issues[0]["expression"] == ["Subscription.criteria"]
    bad = subscription("lab-result", receiver.url, filter_="Observation?value-quantity=5")
    issues = expect_outcome(server.client.post("/Subscription", json=bad), 422)
    assert issues[0]["expression"] == ["Subscription.criteria.extension[0].valueString"]
    bad = subscription("lab-result", receiver.url, filter_="Observation?patient.name=x")
    expect_outcome(server.client.post("/Subscription", json=bad), 422)
    bad = subscription("lab-result", receiver.url)
    bad["status"] = "active"
    issues = expect_outcome(server.client.post("/Subscription", json=bad), 422)
    assert issues[0]["expression"] == ["Subscription.status"]


def test_subscription_past_its_end_is_switched_off(server: RunningServer, receiver: Receiver) -> None:
    """Subscription.end reached: the server sets status off and sends nothing more."""
    sub = subscription("lab-result", receiver.url, filter_="Observation?patient=Patient/p-end")
    sub["end"] = format_instant(now_us() + 3_000_000)
    r = server.client.post("/Subscription", json=sub)
    assert r.status_code == 201, r.text
    sub_id = r.json()["id"]
    receiver.wait(
        lambda: server.client.get(f"/Subscription/{sub_id}").json()["status"] == "off", timeout=20, what="status off"
    )
    create(server, lab_result("p-end"))
    time.sleep(1.0)
    assert receiver.of(sub_id, "event-notification") == []


def test_a_subscription_switched_off_while_behind_gets_nothing_more(server: RunningServer, receiver: Receiver) -> None:
    """Five events numbered at once, one per POST: the client switches the subscription off while the first
    POST is in flight, and the task delivering the backlog stops there instead of sending the other four."""
    sub_id = subscribe(server, receiver, "lab-result", max_count=1, filter_="Observation?patient=Patient/p-behind")
    receiver.wait(lambda: server.client.get(f"/Subscription/{sub_id}").json()["status"] == "active",
                  what="status active")
    switched: list[int] = []

    def switch_off(bundle: dict[str, Any]) -> None:
        status = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
        if status["type"]["valueCode"] == "event-notification" and not switched:
            body = server.client.get(f"/Subscription/{sub_id}").json()
            assert server.client.put(f"/Subscription/{sub_id}", json={**body, "status": "off"}).status_code == 200
            switched.append(1)

    receiver.on_post = switch_off
    entries = [{"resource": lab_result("p-behind"), "request": {"method": "POST", "url": "Observation"}}
               for _ in range(5)]  # one transaction: all five are numbered before the first POST
    r = server.client.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert r.status_code == 200, r.text
    receiver.wait(lambda: bool(receiver.of(sub_id, "event-notification")), what="the first notification")
    time.sleep(1.5)  # several delivery rounds: a task that went on would have sent more by now
    assert [n for got in receiver.of(sub_id, "event-notification") for n in got.numbers] == [1]
    assert server.client.get(f"/Subscription/{sub_id}").json()["status"] == "off"
