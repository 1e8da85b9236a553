"""Booking module A: for every active referral (a ServiceRequest on the `referral` topic, full resource)
it books one Appointment, and it records every booked Appointment it is told about.

Vendor A keeps everything in one JSON file, `booking_a.json` in its data folder, replaced atomically on
each change: the last handled event number per Subscription (the SDK's `State`), the referrals it has
booked, the appointments it has seen and a log of the events it handled. Booking is a conditional
create (`If-None-Exist: based-on=ServiceRequest/<id>`), so an event handled twice (at-least-once
delivery, or a restart between booking and saving) never books the referral twice.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from samverka.sdk import Notification, NotificationReceiver

from .._module import Context, Startup, run

NAME = "booking_a"
SCOPE = "system/ServiceRequest.rs system/Appointment.cruds system/Patient.rs"
REFERRAL = "https://samverka.se/fhir/SubscriptionTopic/referral"
APPOINTMENT = "https://samverka.se/fhir/SubscriptionTopic/appointment-booked-cancelled"
IDENTIFIER = "https://booking-a.example.se/appointment"


class Ledger:
    """The module's JSON file; it is also the receiver's `State` (event numbers per Subscription)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.doc: dict[str, Any] = {"cursor": {}, "referrals": {}, "appointments": {}, "events": []}
        if path.exists():
            self.doc.update(json.loads(path.read_text()))

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.doc))
        os.replace(tmp, self.path)

    def last(self, subscription: str) -> int:
        return int(self.doc["cursor"].get(subscription, 0))

    def set_last(self, subscription: str, number: int) -> None:
        self.doc["cursor"][subscription] = number
        self.save()


def appointment_for(referral: dict[str, Any]) -> dict[str, Any]:
    """Vendor A's booking: the next weekday at 09:00 UTC, 30 minutes."""
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    while start.weekday() >= 5:
        start += timedelta(days=1)
    return {
        "resourceType": "Appointment", "status": "booked",
        "identifier": [{"system": IDENTIFIER, "value": referral["id"]}],
        "basedOn": [{"reference": f"ServiceRequest/{referral['id']}"}],
        "description": "Bokad av bokningsmodul A",
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
        "participant": [{"actor": referral["subject"], "status": "accepted"}],
    }


def build(ctx: Context) -> tuple[NotificationReceiver, Startup | None]:
    ledger = Ledger(ctx.options.data / f"{NAME}.json")

    async def on_event(e: Notification) -> None:
        focus_id = e.focus.rsplit("/", 1)[1] if e.focus else None
        if e.topic == REFERRAL and focus_id:
            referral = e.resource or await ctx.fhir.read("ServiceRequest", focus_id)
            booked = await ctx.fhir.request("POST", "Appointment", json=appointment_for(referral), headers={
                "If-None-Exist": f"based-on=ServiceRequest/{focus_id}", "Prefer": "return=representation"})
            ledger.doc["referrals"][focus_id] = {"appointment": booked["id"], "event": e.number,
                                                 "subscription": e.subscription}
            ledger.doc["appointments"].setdefault(booked["id"], {"referral": focus_id, "by": NAME})
        elif e.topic == APPOINTMENT and focus_id:
            ledger.doc["appointments"].setdefault(focus_id, {"event": e.number})
        ledger.doc["events"].append([e.subscription, e.topic, e.number, e.focus, e.replayed])
        ledger.save()

    receiver = NotificationReceiver(on_event, client=ctx.fhir, topics=[REFERRAL, APPOINTMENT], state=ledger)
    return receiver, None


def main() -> None:
    run(NAME, 8101, SCOPE, build)
