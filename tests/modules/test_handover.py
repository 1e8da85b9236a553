"""Replacement with events flowing: the handover point is what OLD really acknowledged.

A module built on the SDK (backend-services token, NotificationReceiver on loopback) receives the
event core's rest-hook notifications; it then goes down while bookings continue, and is replaced. The
module view shows its deliveries (acknowledged event, lag, last delivery) and the replacement's
subscription records OLD's last acknowledged event and its outbox position as the handover point.
"""

from __future__ import annotations

from typing import Any

from authkit import AuthServer
from modkit import APPOINTMENTS, Admin, ThreadServer, manifest, private_jwk, unique, wait_for

from samverka.sdk import AsyncFhirClient, BackendAuth, FhirClient, Notification, NotificationReceiver


def _booking(patient: str) -> dict[str, Any]:
    return {"resourceType": "Appointment", "status": "booked",
            "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"}]}


def test_handover_point_is_the_last_acknowledged_event(module_server: AuthServer, admin: Admin) -> None:
    role = unique("booking")
    seen: list[Notification] = []
    scope = "system/Appointment.cruds system/Patient.cruds"

    async def on_event(e: Notification) -> None:
        seen.append(e)

    receiver = NotificationReceiver(on_event, topics=[APPOINTMENTS])
    with ThreadServer(receiver.app) as rx:
        old = admin.register(manifest(unique("booking-a"), role=role, endpoint=f"{rx.url}/notify",
                                      scopes=scope.split()))
        [sub] = old["subscriptions"]
        auth = BackendAuth(old["clientId"], private_jwk("ES384"), scope)
        receiver.fetch_events = _fetcher(module_server, auth)
        receiver.subscriptions = {sub["id"]}
        wait_for(lambda: sub["id"] in receiver.handshakes, what="the handshake")
        with FhirClient(module_server.srv.base, auth) as fhir:
            patient = fhir.create({"resourceType": "Patient", "name": [{"family": "Lind"}]})["id"]
            booked = [fhir.create(_booking(patient))["id"] for _ in range(3)]
            fhir.create({**_booking(patient), "status": "proposed"})  # filtered out: not booked
            wait_for(lambda: len(seen) == 3, what="three notifications")
            assert [e.number for e in seen] == [1, 2, 3]
            assert [e.focus.rsplit("/", 1)[1] for e in seen if e.focus] == booked
            view = wait_for(lambda: (v := admin.view(old["id"]))["subscriptions"][0]["acknowledgedEvent"] == 3
                            and v, what="the acknowledged mark")
    # the module is down now: two more bookings cannot be delivered
    with FhirClient(module_server.srv.base, auth) as fhir:
        for _ in range(2):
            fhir.create(_booking(patient))
    s = wait_for(lambda: (v := admin.view(old["id"])["subscriptions"][0])["eventsSinceSubscriptionStart"] == 5
                 and v, what="five events")
    assert s["acknowledgedEvent"] == 3 and s["lag"] == 2
    failing = wait_for(lambda: (v := admin.view(old["id"]))["consecutiveFailures"] and v, what="failed deliveries")
    assert failing["eventLag"] == 2 and failing["subscriptions"][0]["failingSince"] is not None
    assert failing["subscriptions"][0]["source"] == "event_subscription"
    assert view["lastDelivery"] is not None and view["eventLag"] == 0
    missed = [e for e in _appointments(module_server, auth, patient) if e not in booked]
    assert len(missed) == 2
    got: list[Notification] = []

    async def on_new(e: Notification) -> None:
        got.append(e)

    new_rx = NotificationReceiver(on_new, topics=[APPOINTMENTS])
    with ThreadServer(new_rx.app) as rx2:
        new = admin.register(manifest(unique("booking-b"), alg="RS384", role=role, endpoint=f"{rx2.url}/notify"))
        assert new["state"] == "standby"
        r = admin.call("POST", f"/{old['id']}/replace/{new['id']}")
        assert r.status_code == 200, r.text
        [handed] = r.json()["subscriptions"]
        point = handed["handover"]
        assert point["predecessor"] == f"Subscription/{sub['id']}"
        assert point["afterEvent"] == 3
        assert isinstance(point["afterSequence"], int) and point["afterSequence"] > 0
        # NEW continues from the handover point: the two bookings OLD never acknowledged come first,
        # numbered from 1, then what happens next; no gap, nothing from before the point
        wait_for(lambda: len(got) == 2, what="the events OLD missed")
        new_auth = BackendAuth(new["clientId"], private_jwk("RS384"), "system/Appointment.cruds")
        with FhirClient(module_server.srv.base, new_auth) as fhir:
            later = fhir.create(_booking(patient))["id"]
        wait_for(lambda: len(got) == 3, what="the next booking")
    assert [e.number for e in got] == [1, 2, 3]
    assert [e.focus.rsplit("/", 1)[1] for e in got if e.focus] == [*missed, later]
    assert all(e.subscription == handed["id"] for e in got)
    assert new_rx.duplicates == 0 and new_rx.filled == 0


def _appointments(server: AuthServer, auth: BackendAuth, patient: str) -> list[str]:
    """The booked Appointments of `patient` in the order they were written."""
    with FhirClient(server.srv.base, auth) as fhir:
        found = list(fhir.search_all("Appointment", {"actor": f"Patient/{patient}", "status": "booked",
                                                     "_sort": "_lastUpdated"}))
    return [a["id"] for a in found]


def _fetcher(server: AuthServer, auth: BackendAuth) -> Any:
    async def fetch(sub: str, first: int, last: int) -> dict[str, Any]:
        async with AsyncFhirClient(server.srv.base, auth) as fhir:
            return await fhir.events(sub, first, last)
    return fetch


