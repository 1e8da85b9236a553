"""What the replacement drill checks, from the modules' own state and the shared record.

`Seen` is what one module says it handled (read from its files: booking_a's JSON, booking_b's SQLite);
the platform's side comes from the module view (events numbered per subscription, the handover point)
and from FHIR searches. Every check counts, and a non-zero count where zero is required is a failure.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOPIC = "https://samverka.se/fhir/SubscriptionTopic/"
REFERRAL = TOPIC + "referral"
APPOINTMENT = TOPIC + "appointment-booked-cancelled"
BOOKING_A_ID = "https://booking-a.example.se/appointment"


def ref(focus: str | None) -> str | None:
    """`Type/id` of a focus URL."""
    if not focus:
        return None
    parts = focus.rstrip("/").split("/")
    return "/".join(parts[-2:])


@dataclass
class Seen:
    """A module's own account: events handled (subscription, topic, number, focus) and appointments known."""

    events: list[tuple[str, str, int, str | None]] = field(default_factory=list)
    booked: dict[str, str] = field(default_factory=dict)  # referral id -> appointment id it booked
    appointments: set[str] = field(default_factory=set)  # appointment ids it knows of

    def numbers(self, sub: str) -> dict[int, str | None]:
        return {n: ref(f) for s, _t, n, f in self.events if s == sub}


def booking_a_state(path: Path) -> Seen:
    doc = json.loads(path.read_text()) if path.exists() else {}
    seen = Seen([(str(s), str(t), int(n), f) for s, t, n, f, _r in doc.get("events", [])])
    seen.booked = {k: str(v["appointment"]) for k, v in doc.get("referrals", {}).items()}
    seen.appointments = set(doc.get("appointments", {}))
    return seen


def booking_b_state(path: Path) -> Seen:
    if not path.exists():
        return Seen()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        seen = Seen([(str(s), str(t), int(n), f) for s, t, n, f in db.execute(
            "SELECT subscription, topic, number, focus FROM events ORDER BY subscription, number")])
        seen.booked = {str(r): str(a) for r, a in db.execute("SELECT id, appointment FROM referrals WHERE adopted = 0")}
        seen.appointments = {str(a) for (a,) in db.execute("SELECT id FROM appointments")}
    finally:
        db.close()
    return seen


def lab_state(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


def subscriptions(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A module view's subscriptions by topic."""
    return {str(s["topic"]): s for s in view.get("subscriptions", [])}


@dataclass
class TopicResult:
    topic: str
    after_event: int  # the handover point: booking_a's last acknowledged event
    sent: int  # events the platform numbered for booking_b's subscription
    received: int  # distinct event numbers booking_b handled
    gaps: int  # numbers in 1..sent that booking_b never handled
    missed: int  # resources of the topic after the handover point that booking_b never got
    overlap: int  # events both handled: booking_a had them but had not acknowledged them (at-least-once)
    beyond: int  # events booking_b got although booking_a had acknowledged them (not allowed)
    unrecorded: int  # events booking_a acknowledged but has no record of handling (a loss)


def topic_result(topic: str, universe: set[str], a: Seen, b: Seen, a_view: dict[str, Any],
                 b_view: dict[str, Any]) -> TopicResult:
    a_sub, b_sub = subscriptions(a_view)[topic], subscriptions(b_view)[topic]
    point = int((b_sub.get("handover") or {}).get("afterEvent") or 0)
    a_numbers, b_numbers = a.numbers(a_sub["id"]), b.numbers(b_sub["id"])
    before = {f for n, f in a_numbers.items() if n <= point and f}
    after_a = {f for n, f in a_numbers.items() if n > point and f}
    b_focus = {f for f in b_numbers.values() if f}
    sent = int(b_sub.get("eventsSinceSubscriptionStart") or 0)
    return TopicResult(topic.removeprefix(TOPIC), point, sent, len(b_numbers),
                       len(set(range(1, sent + 1)) - set(b_numbers)), len(universe - before - b_focus),
                       len(b_focus & after_a), len(b_focus & before),
                       len(set(range(1, point + 1)) - set(a_numbers)))


@dataclass
class Report:
    backend: str
    seconds: float = 0.0
    referrals: int = 0
    lab_requests: int = 0
    desk_bookings: int = 0
    write_retries: int = 0
    a_killed_after: int = 0  # referral bookings booking_a had made when it was killed
    a_events: int = 0  # events booking_a handled (its own log)
    a_sent: int = 0  # events the platform numbered for booking_a's subscriptions, until they went off
    a_acknowledged: int = 0  # of those, acknowledged by booking_a (the handover points)
    topics: list[TopicResult] = field(default_factory=list)
    b_redelivered: int = 0  # notifications booking_b's receiver skipped as already handled
    b_filled: int = 0  # events booking_b fetched with $events
    booked_by_a: int = 0
    booked_by_b: int = 0
    unbooked: int = 0
    double_booked: int = 0
    a_bookings: int = 0  # Appointments in the record that booking_a made
    a_bookings_unknown_to_b: int = 0
    lab_sent: int = 0
    lab_received: int = 0
    lab_gaps: int = 0
    lab_unreported: int = 0
    platform_restarts: int = 0
    platform_down_seconds: float = 0.0
    a_token_status: int = 0
    a_new_token_refused: bool = False
    audit_handover: bool = False
    timeline: list[tuple[str, float]] = field(default_factory=list)  # (step, seconds since the start)
    failures: list[str] = field(default_factory=list)
    work_dir: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "topics"}
        out["topics"] = [t.__dict__ for t in self.topics]
        out["passed"] = self.passed
        return out

    def evaluate(self) -> None:
        f = self.failures
        for t in self.topics:
            for name in ("gaps", "missed", "beyond", "unrecorded"):
                if getattr(t, name):
                    f.append(f"{t.topic}: {name} = {getattr(t, name)}")
        for name in ("unbooked", "double_booked", "a_bookings_unknown_to_b", "lab_gaps", "lab_unreported"):
            if getattr(self, name):
                f.append(f"{name} = {getattr(self, name)}")
        if self.a_killed_after == 0:
            f.append("booking_a had booked nothing before it was killed")
        if self.a_token_status != 401:
            f.append(f"booking_a's access token was answered {self.a_token_status}, not 401")
        if not self.a_new_token_refused:
            f.append("booking_a could still get a new token")
        if not self.audit_handover:
            f.append("no AuditEvent?subtype=module-replace names booking_a and booking_b")
        if self.platform_restarts != 1:
            f.append(f"the platform was restarted {self.platform_restarts} times, not once")

    def text(self) -> str:
        sent = sum(t.sent for t in self.topics)
        received = sum(t.received for t in self.topics)
        gaps = sum(t.gaps + t.missed for t in self.topics)
        overlap = sum(t.overlap for t in self.topics)
        lines = [
            f"replace-module drill: {'PASS' if self.passed else 'FAIL'} ({self.backend}, {self.seconds:.1f} s)",
            f"  clinic      {self.referrals} referrals, {self.lab_requests} lab requests, {self.desk_bookings} desk "
            f"bookings ({self.write_retries} writes retried across the restart)",
            f"  booking_a   kill -9 after {self.a_killed_after} bookings; events sent {self.a_sent}, acknowledged "
            f"{self.a_acknowledged}, handled {self.a_events} (the rest went to booking_b)",
            "  handover    " + ", ".join(f"{t.topic} after event {t.after_event}" for t in self.topics),
            f"  booking_b   events sent {sent}, received {received}, gaps or missed {gaps}, duplicates "
            f"{overlap + self.b_redelivered}"
            f" (handled by both at the handover {overlap}, redelivered {self.b_redelivered}), filled by $events "
            f"{self.b_filled}",
        ]
        for t in self.topics:
            lines.append(f"    {t.topic:<30} sent {t.sent:>4}  received {t.received:>4}  gaps {t.gaps}  missed "
                         f"{t.missed}  overlap {t.overlap}  beyond the point {t.beyond}")
        lines += [
            f"  lab         events sent {self.lab_sent}, received {self.lab_received}, gaps {self.lab_gaps}; "
            f"unreported lab requests {self.lab_unreported}",
            f"  record      referrals booked by booking_a {self.booked_by_a}, by booking_b {self.booked_by_b}, "
            f"unbooked {self.unbooked}, booked twice {self.double_booked}; booking_b knows "
            f"{self.a_bookings - self.a_bookings_unknown_to_b}/{self.a_bookings} of booking_a's bookings",
            f"  platform    kill -9 and restart x{self.platform_restarts} (down {self.platform_down_seconds:.1f} s)",
            f"  booking_a   old token answered {self.a_token_status}; new token refused: "
            f"{'yes' if self.a_new_token_refused else 'NO'}",
            f"  audit       AuditEvent?subtype=module-replace: {'found' if self.audit_handover else 'MISSING'}",
        ]
        lines.append("  timeline    " + ", ".join(f"{step} {t:.1f}" for step, t in self.timeline))
        lines += [f"  FAILED: {x}" for x in self.failures]
        if self.work_dir:
            lines.append(f"  logs and state in {self.work_dir}")
        return "\n".join(lines)
