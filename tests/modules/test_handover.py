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
    new = admin.register(manifest(unique("booking-b"), alg="RS384", role=role))
    assert new["state"] == "standby"
    r = admin.call("POST", f"/{old['id']}/replace/{new['id']}")
    assert r.status_code == 200, r.text
    [handed] = r.json()["subscriptions"]
    point = handed["handover"]
    assert point["predecessor"] == f"Subscription/{sub['id']}"
    assert point["afterEvent"] == 3
    assert isinstance(point["afterSequence"], int) and point["afterSequence"] > 0


def _fetcher(server: AuthServer, auth: BackendAuth) -> Any:
    async def fetch(sub: str, first: int, last: int) -> dict[str, Any]:
        async with AsyncFhirClient(server.srv.base, auth) as fhir:
            return await fhir.events(sub, first, last)
    return fetch


