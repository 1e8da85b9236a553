"""The receiver against the real event core: a module built on the SDK subscribes, loses track of events
(it restarts with an old state), and fills the gap from the server's own `$events`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from authkit import AuthServer, ig_key
from modkit import APPOINTMENTS, ThreadServer, private_jwk, wait_for

from samverka.sdk import AsyncFhirClient, BackendAuth, FhirClient, FileState, Notification, NotificationReceiver
from samverka.sdk.receiver import MemoryState

PAYLOAD = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content"
SCOPE = "system/Appointment.cruds system/Patient.cruds system/Subscription.cruds"


def _subscription(endpoint: str) -> dict[str, Any]:
    return {"resourceType": "Subscription", "status": "requested", "reason": "sdk test", "criteria": APPOINTMENTS,
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": PAYLOAD, "valueCode": "full-resource"}]}}}


def _booking(patient: str) -> dict[str, Any]:
    return {"resourceType": "Appointment", "status": "booked",
            "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"}]}


def test_a_restarted_module_fills_its_gap_from_the_servers_events(sdk_server: AuthServer, tmp_path: Path) -> None:
    client_id = sdk_server.register(SCOPE, ig_key("ES384"))
    auth = BackendAuth(client_id, private_jwk("ES384"), SCOPE)
    first: list[Notification] = []
    rx1 = NotificationReceiver(first.append, state=MemoryState())
    with ThreadServer(rx1.app) as srv, FhirClient(sdk_server.srv.base, auth) as fhir:
        port = srv.port
        sub = fhir.create(_subscription(f"{srv.url}/notify"))["id"]
        wait_for(lambda: sub in rx1.handshakes, what="the handshake")
        patient = fhir.create({"resourceType": "Patient", "name": [{"family": "Berg"}]})["id"]
        booked = [fhir.create(_booking(patient))["id"] for _ in range(3)]
        wait_for(lambda: len(first) == 3, what="three events")
    # the module restarts from a state saved after event 1: events 2 and 3 were acknowledged to the
    # server but never handled; two more bookings happen while it is down
    state = tmp_path / "state.json"
    state.write_text(json.dumps({sub: 1}))
    with FhirClient(sdk_server.srv.base, auth) as fhir:
        booked += [fhir.create(_booking(patient))["id"] for _ in range(2)]
    second: list[Notification] = []
    rx2 = NotificationReceiver(second.append, client=AsyncFhirClient(sdk_server.srv.base, auth),
                               state=FileState(state), subscriptions=[sub], topics=[APPOINTMENTS])
    with ThreadServer(rx2.app, port=port):
        wait_for(lambda: len(second) == 4, timeout=60, what="events 2 to 5")
    assert [e.number for e in second] == [2, 3, 4, 5]
    assert [e.replayed for e in second] == [True, True, False, False]
    assert [e.focus.rsplit("/", 1)[1] for e in second if e.focus] == booked[1:]
    assert all(e.resource is not None and e.resource["resourceType"] == "Appointment" for e in second)
    assert rx2.duplicates == 0 and json.loads(state.read_text()) == {sub: 5}
