"""Booking module B: another vendor's module for the role `booking`.

Vendor B keeps its state in SQLite (`booking_b.sqlite` in its data folder), one transaction per event:
the event itself (the `events` table, which is also how it knows the last handled number per
Subscription), the referral it booked and the appointments it knows of. It does not trust that it saw
everything that happened before it: at start-up and on every handshake (which is when it takes a role
over, `samverka module replace`) it imports every booked Appointment from the shared record, so the
bookings its predecessor made are its bookings too. For a referral it first looks in the record for an
Appointment based on it (a predecessor may have booked it already), and only then books one, with a
conditional create as the last guard against booking twice.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from samverka.sdk import Notification, NotificationReceiver
from samverka.sdk.receiver import Status

from .._module import Context, Startup, run

NAME = "booking_b"
SCOPE = "system/ServiceRequest.rs system/Appointment.cruds system/Patient.rs"
REFERRAL = "https://samverka.se/fhir/SubscriptionTopic/referral"
APPOINTMENT = "https://samverka.se/fhir/SubscriptionTopic/appointment-booked-cancelled"
IDENTIFIER = "urn:oid:1.2.752.29.4.19.booking-b"  # vendor B's booking numbers

log = logging.getLogger(NAME)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (subscription TEXT NOT NULL, number INTEGER NOT NULL, topic TEXT,
    focus TEXT, replayed INTEGER NOT NULL, handled_at TEXT NOT NULL, PRIMARY KEY (subscription, number));
CREATE TABLE IF NOT EXISTS appointments (id TEXT PRIMARY KEY, referral TEXT, source TEXT NOT NULL,
    seen_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS referrals (id TEXT PRIMARY KEY, appointment TEXT NOT NULL, adopted INTEGER NOT NULL);
"""


def now() -> str:
    return datetime.now(UTC).isoformat()


class Store:
    """The module's SQLite file; `last`/`set_last` make it the receiver's `State`."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def last(self, subscription: str) -> int:
        row = self.db.execute("SELECT max(number) FROM events WHERE subscription = ?", (subscription,)).fetchone()
        return int(row[0] or 0)

    def set_last(self, subscription: str, number: int) -> None:
        pass  # the event row written with the handling is the mark

    def handled(self, e: Notification, referral: tuple[str, str, bool] | None, appointment: str | None,
                source: str) -> None:
        with self.db:  # one transaction: the event, its booking and the appointment
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)",
                            (e.subscription, e.number, e.topic, e.focus, int(e.replayed), now()))
            if referral is not None:
                self.db.execute("INSERT OR IGNORE INTO referrals VALUES (?, ?, ?)",
                                (referral[0], referral[1], int(referral[2])))
            if appointment is not None:
                self.db.execute("INSERT OR IGNORE INTO appointments VALUES (?, ?, ?, ?)",
                                (appointment, referral[0] if referral else None, source, now()))

    def imported(self, appointments: list[tuple[str, str | None]]) -> int:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            before = self.db.total_changes
            self.db.executemany("INSERT OR IGNORE INTO appointments VALUES (?, ?, 'record', ?)",
                                [(a, r, now()) for a, r in appointments])
            return self.db.total_changes - before


def appointment_for(referral: dict[str, Any], number: str) -> dict[str, Any]:
    """Vendor B's booking: two working days ahead at 13:00 UTC, 20 minutes, a booking number of its own."""
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=13, minute=0, second=0, microsecond=0)
    while start.weekday() >= 5:
        start += timedelta(days=1)
    return {
        "resourceType": "Appointment", "status": "booked",
        "identifier": [{"system": IDENTIFIER, "value": number}],
        "basedOn": [{"reference": f"ServiceRequest/{referral['id']}"}],
        "comment": "Bokad av bokningsmodul B",
        "start": start.isoformat().replace("+00:00", "Z"), "minutesDuration": 20,
        "end": (start + timedelta(minutes=20)).isoformat().replace("+00:00", "Z"),
        "participant": [{"actor": referral["subject"], "status": "accepted"}],
    }


def _based_on(appointment: dict[str, Any]) -> str | None:
    for ref in appointment.get("basedOn", []):
        r = str(ref.get("reference", ""))
        if r.startswith("ServiceRequest/"):
            return r.removeprefix("ServiceRequest/")
    return None


class Receiver(NotificationReceiver):
    """The SDK receiver, importing the shared record after each handshake (in the background, retried until
    the platform answers); `info` is shown on /healthz."""

    sync: Any = None
    info: dict[str, int]
    tasks: set[asyncio.Task[None]]

    async def process(self, s: Status) -> None:
        await super().process(s)
        if s.kind == "handshake" and self.sync is not None:
            self.start_sync(after_handshake=True)

    def start_sync(self, after_handshake: bool = False) -> None:
        async def go() -> None:
            await self.sync()
            if after_handshake:
                self.info["imports_after_handshake"] = self.info.get("imports_after_handshake", 0) + 1

        task = asyncio.get_running_loop().create_task(go())
        self.tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self.tasks.discard)


def build(ctx: Context) -> tuple[NotificationReceiver, Startup | None]:
    store = Store(ctx.options.data / f"{NAME}.sqlite")

    async def on_event(e: Notification) -> None:
        focus_id = e.focus.rsplit("/", 1)[1] if e.focus else None
        if e.topic == REFERRAL and focus_id:
            found = await ctx.fhir.search("Appointment", {"based-on": f"ServiceRequest/{focus_id}"})
            existing = [x["resource"] for x in found.get("entry", []) if "resource" in x]
            if existing:
                store.handled(e, (focus_id, existing[0]["id"], True), existing[0]["id"], "predecessor")
                return
            referral = e.resource or await ctx.fhir.read("ServiceRequest", focus_id)
            body = appointment_for(referral, f"B-{e.subscription[:8]}-{e.number}")
            booked = await ctx.fhir.request("POST", "Appointment", json=body, headers={
                "If-None-Exist": f"based-on=ServiceRequest/{focus_id}", "Prefer": "return=representation"})
            store.handled(e, (focus_id, booked["id"], False), booked["id"], "booked")
        elif e.topic == APPOINTMENT and focus_id:
            store.handled(e, None, focus_id, "event")
        else:
            store.handled(e, None, None, "event")

    async def sync() -> None:
        """Import every booked Appointment of the shared record; retried until the platform answers."""
        delay = 0.5
        while True:
            try:
                found = [(a["id"], _based_on(a)) async for a in ctx.fhir.search_all("Appointment", {
                    "status": "booked", "_count": "500"})]
                break
            except Exception as exc:  # the platform may be down or restarting: try again
                log.warning("could not import the shared record (again in %.1f s): %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        log.info("imported %d of %d booked appointments from the shared record", store.imported(found), len(found))

    receiver = Receiver(on_event, client=ctx.fhir, topics=[REFERRAL, APPOINTMENT], state=store)
    receiver.sync, receiver.info, receiver.tasks = sync, {}, set()

    async def startup(_: Context) -> None:
        receiver.start_sync()

    return receiver, startup


def main() -> None:
    run(NAME, 8102, SCOPE, build)
