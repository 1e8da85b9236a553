"""The shipped topics trigger on exactly the changes they describe."""

from __future__ import annotations

from typing import Any

from eventkit import Receiver, create, subscribe

from support.server import RunningServer


def _put(server: RunningServer, resource: dict[str, Any], **changes: Any) -> dict[str, Any]:
    resource = {**resource, **changes}
    r = server.client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _focus(receiver: Receiver, sub_id: str, count: int) -> list[tuple[str, str]]:
    """(focus id, request method) of the first `count` events."""
    out = []
    for r in receiver.events(sub_id, count):
        for i, _n in enumerate(r.numbers):
            out.append(
                (
                    r.status["notification-event"][i]["focus"]["reference"].rsplit("/", 1)[-1],
                    r.body["entry"][1 + i]["request"]["method"],
                )
            )
    return out[:count]


def test_referral_created_or_status_changed(server: RunningServer, receiver: Receiver) -> None:
    sub_id = subscribe(server, receiver, "referral", filter_="ServiceRequest?patient=Patient/p-ref")
    sr = create(
        server,
        {
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "order",
            "subject": {"reference": "Patient/p-ref"},
        },
    )  # created: event 1
    sr = _put(server, sr, note=[{"text": "only a note"}])  # same status: no event
    _put(server, sr, status="active")  # status change: event 2
    assert _focus(receiver, sub_id, 2) == [(sr["id"], "POST"), (sr["id"], "PUT")]
    assert [n for r in receiver.of(sub_id, "event-notification") for n in r.numbers] == [1, 2]  # no 3rd event


def test_appointment_booked_or_cancelled(server: RunningServer, receiver: Receiver) -> None:
    sub_id = subscribe(server, receiver, "appointment-booked-cancelled", filter_="Appointment?patient=Patient/p-appt")
    appt = create(
        server,
        {
            "resourceType": "Appointment",
            "status": "proposed",
            "participant": [{"actor": {"reference": "Patient/p-appt"}, "status": "needs-action"}],
        },
    )
    appt = _put(server, appt, status="booked")  # event 1
    appt = _put(server, appt, comment="moved room")  # still booked: no event
    _put(server, appt, status="cancelled")  # event 2
    assert [m for _id, m in _focus(receiver, sub_id, 2)] == ["PUT", "PUT"]
    numbers = [n for r in receiver.of(sub_id, "event-notification") for n in r.numbers]
    assert numbers == [1, 2]


def test_patient_demographics_change(server: RunningServer, receiver: Receiver) -> None:
    pat = create(
        server, {"resourceType": "Patient", "name": [{"family": "Öberg", "given": ["Åsa"]}], "gender": "female"}
    )
    sub_id = subscribe(server, receiver, "patient-demographics", filter_=f"Patient?_id={pat['id']}")
    pat = _put(server, pat, active=True)  # not demographics: no event
    pat = _put(server, pat, name=[{"family": "Lind", "given": ["Åsa"]}])  # event 1
    _put(server, pat, birthDate="1960-01-02")  # event 2
    assert _focus(receiver, sub_id, 2) == [(pat["id"], "PUT"), (pat["id"], "PUT")]
    assert [n for r in receiver.of(sub_id, "event-notification") for n in r.numbers] == [1, 2]


def test_encounter_deleted_while_in_progress_is_not_an_end(server: RunningServer, receiver: Receiver) -> None:
    """Only starts and ends trigger: a delete is not one of the topic's interactions."""
    sub_id = subscribe(server, receiver, "encounter-start-end", filter_="Encounter?patient=Patient/p-del")
    enc = create(
        server,
        {
            "resourceType": "Encounter",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/p-del"},
        },
    )
    assert server.client.delete(f"/Encounter/{enc['id']}").status_code in (200, 204)
    later = create(server, {**{k: v for k, v in enc.items() if k not in ("id", "meta")}, "status": "finished"})
    assert _focus(receiver, sub_id, 2) == [(enc["id"], "POST"), (later["id"], "POST")]
