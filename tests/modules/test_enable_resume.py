"""`module disable` then `enable`: the module gets the events committed while it was disabled.

The registry switches the module's Subscriptions off; on enable it requests them again with the
`subscription-handover` afterSequence at the point where each was switched off (the event core's
`matchedSequence`), so the bookings made meanwhile are delivered after the new handshake, numbered on
from the last event. Real server (auth on, both backends), a real SDK receiver on loopback.
"""

from __future__ import annotations

from typing import Any

from authkit import AuthServer, fresh_key
from modkit import APPOINTMENTS, Admin, ThreadServer, manifest, unique, wait_for

from samverka.sdk import Notification, NotificationReceiver


def _booking(patient: str) -> dict[str, Any]:
    return {"resourceType": "Appointment", "status": "booked",
            "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"}]}


def test_enable_resumes_from_where_disable_stopped(module_server: AuthServer, admin: Admin) -> None:
    seen: list[Notification] = []

    async def on_event(e: Notification) -> None:
        seen.append(e)

    scope = "system/Appointment.cruds system/Patient.cruds"
    key = fresh_key()
    writer = module_server.fhir(module_server.token(module_server.register(scope, key), key, scope))
    receiver = NotificationReceiver(on_event, topics=[APPOINTMENTS])
    with ThreadServer(receiver.app) as rx, writer:
        mod = admin.register(manifest(unique("booking"), role=unique("booking"), endpoint=f"{rx.url}/notify",
                                      scopes=scope.split()))
        [sub] = mod["subscriptions"]
        receiver.subscriptions = {sub["id"]}
        wait_for(lambda: sub["id"] in receiver.handshakes, what="the handshake")

        def book() -> str:
            r = writer.post("/Appointment", json=_booking(patient))
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

        patient = writer.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Paus"}]}).json()["id"]
        first = book()
        wait_for(lambda: len(seen) == 1, what="the first booking")
        r = admin.call("POST", f"/{mod['id']}/disable")
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "disabled"
        receiver.handshakes.clear()
        during = [book(), book()]  # committed while the module is disabled
        r = admin.call("POST", f"/{mod['id']}/enable")
        assert r.status_code == 200, r.text
        wait_for(lambda: sub["id"] in receiver.handshakes, what="the handshake after enable")
        wait_for(lambda: len(seen) == 3, what="the bookings made while disabled")
        after = book()
        wait_for(lambda: len(seen) == 4, what="the next booking")
    assert [e.number for e in seen] == [1, 2, 3, 4]
    assert [e.focus.rsplit("/", 1)[1] for e in seen if e.focus] == [first, *during, after]
    assert receiver.duplicates == 0 and receiver.filled == 0
