"""$status and $events against a live server, and the notification shapes of the IG's examples."""

from __future__ import annotations

from typing import Any

from eventkit import Receiver, create, encounter, fixture, lab_result, shape, subscribe, subscription

from support.server import RunningServer, expect_outcome


def _params(resource: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: next((v for k, v in p.items() if k.startswith("value")), None) for p in resource["parameter"]}


def test_status_reports_the_subscription(server: RunningServer, receiver: Receiver) -> None:
    """$status: a searchset with one query-status Parameters: status, topic and the event count."""
    sub_id = subscribe(server, receiver, "lab-result", filter_="Observation?patient=Patient/p-status")
    for _ in range(2):
        create(server, lab_result("p-status"))
    receiver.events(sub_id, 2)
    r = server.client.get(f"/Subscription/{sub_id}/$status")
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "searchset" and bundle["total"] == 1
    params = _params(bundle["entry"][0]["resource"])
    assert params["type"] == "query-status"
    assert params["status"] == "active"
    assert params["topic"].endswith("/lab-result")
    assert params["events-since-subscription-start"] == "2"
    assert params["subscription"]["reference"].endswith(f"/Subscription/{sub_id}")
    expected = fixture("subscription_status_example.json")
    assert shape(bundle)["entry"][0]["resource"]["meta"] == shape(expected)["entry"][0]["resource"]["meta"]
    assert [p["name"] for p in bundle["entry"][0]["resource"]["parameter"]] == [
        p["name"] for p in expected["entry"][0]["resource"]["parameter"]
    ][:5]
    expect_outcome(server.client.get("/Subscription/nope/$status"), 404)
    other = subscribe(server, receiver, "referral")
    both = server.client.get("/Subscription/$status", params={"id": f"{sub_id},{other}"}).json()
    assert both["total"] == 2
    refs = sorted(_params(e["resource"])["subscription"]["reference"].rsplit("/", 1)[-1] for e in both["entry"])
    assert refs == sorted([sub_id, other])
    none = server.client.get("/Subscription/$status", params={"id": sub_id, "status": "error"}).json()
    assert none["total"] == 0 and none["entry"] == []


def test_events_replays_a_range_by_number(server: RunningServer, receiver: Receiver) -> None:
    """$events?eventsSinceNumber=2&eventsUntilNumber=3 returns exactly events 2 and 3 with their focus."""
    sub_id = subscribe(
        server, receiver, "lab-result", payload="full-resource", filter_="Observation?patient=Patient/p-replay"
    )
    made = [create(server, lab_result("p-replay", code)) for code in ("1-8", "2-6", "3-4", "4-2")]
    receiver.events(sub_id, 4)
    r = server.client.get(
        f"/Subscription/{sub_id}/$events", params={"eventsSinceNumber": "2", "eventsUntilNumber": "3"}
    )
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "history"
    status = bundle["entry"][0]["resource"]
    assert _params(status)["type"] == "query-event"
    events = [p for p in status["parameter"] if p["name"] == "notification-event"]
    assert [e["part"][0]["valueString"] for e in events] == ["2", "3"]
    assert [e["resource"]["id"] for e in bundle["entry"][1:]] == [made[1]["id"], made[2]["id"]]
    id_only = server.client.get(
        f"/Subscription/{sub_id}/$events", params={"eventsSinceNumber": "4", "content": "id-only"}
    ).json()
    assert [e["fullUrl"].rsplit("/", 1)[-1] for e in id_only["entry"][1:]] == [made[3]["id"]]
    assert "resource" not in id_only["entry"][1]
    expect_outcome(server.client.get(f"/Subscription/{sub_id}/$events", params={"eventsSinceNumber": "x"}), 400)


def test_notification_shapes_match_the_ig_examples(server: RunningServer, receiver: Receiver) -> None:
    """Handshake, heartbeat and empty/id-only/full-resource notifications have the fixtures' structure."""
    subs = {
        kind: subscribe(
            server,
            receiver,
            "encounter-start-end",
            payload=kind,
            heartbeat=1,
            filter_="Encounter?patient=Patient/p-shape",
        )
        for kind in ("empty", "id-only", "full-resource")
    }
    create(server, encounter("p-shape", "in-progress"))
    hs = receiver.of(subs["empty"], "handshake")[0].body
    assert shape(hs) == shape(fixture("handshake_bundle_example.json"))
    names = {
        "empty": "empty_notification_bundle_example.json",
        "id-only": "id_only_notification_bundle_example.json",
        "full-resource": "full_resource_notification_bundle_example.json",
    }
    for kind, sub_id in subs.items():
        [note] = receiver.events(sub_id, 1)
        assert shape(note.body) == shape(fixture(names[kind])), kind
        assert note.body["meta"] == fixture(names[kind])["meta"]
    receiver.wait(lambda: bool(receiver.of(subs["id-only"], "heartbeat")), what="a heartbeat")
    beat = receiver.of(subs["id-only"], "heartbeat")[0]
    assert shape(beat.body) == shape(fixture("heartbeat_bundle_example.json"))
    assert beat.status["events-since-subscription-start"] == "1"


def test_capability_statement_advertises_the_topics(server: RunningServer) -> None:
    statement = server.client.get("/metadata").json()
    [sub] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    urls = [
        e["valueCanonical"]
        for e in sub["extension"]
        if e["url"].endswith("/capabilitystatement-subscriptiontopic-canonical")
    ]
    assert len(urls) == 5 and all(u.startswith("https://samverka.se/fhir/SubscriptionTopic/") for u in urls)
    assert {o["name"] for o in sub["operation"]} >= {"status", "events"}
    for url in urls:  # every advertised topic can be subscribed to
        r = server.client.post("/Subscription", json=subscription(url.rsplit("/", 1)[-1], "http://127.0.0.1:9/x"))
        assert r.status_code == 201, r.text
        assert server.client.delete(f"/Subscription/{r.json()['id']}").status_code in (200, 204)
