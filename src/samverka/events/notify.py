"""Notification bundles: handshake, heartbeat, event-notification, query-status and query-event.

https://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition-backport-subscription-notification-r4.html
and https://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition-backport-subscription-status-r4.html:
a Bundle of type `history` whose first entry is a Parameters resource (the R5 SubscriptionStatus), then
one entry per event focus: `id-only` sends the fullUrl with request/response, `full-resource` adds the
resource, `empty` sends no focus at all. Shapes follow the IG's R4 examples (the conformance fixtures).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..fhir.instant import format_instant, now_us

STATUS_PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"
BUNDLE_PROFILE = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                  "backport-subscription-notification-r4")
_METHOD = {"create": "POST", "update": "PUT", "delete": "DELETE"}
_STATUS = {"create": "201", "update": "200", "delete": "204"}


@dataclass(frozen=True)
class Event:
    """One numbered event of a subscription, with the version it is about."""

    number: int
    seq: int
    type: str
    id: str
    version: int
    interaction: str
    at_us: int


@dataclass(frozen=True)
class SubStatus:
    """What the status Parameters says about a subscription."""

    id: str
    topic: str
    status: str
    events_since_start: int
    error: str | None = None


def status_parameters(base: str, sub: SubStatus, kind: str, events: Sequence[Event], content: str
                      ) -> dict[str, Any]:
    """The SubscriptionStatus as Parameters (backport-subscription-status-r4)."""
    pid = str(uuid.uuid4())
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{sub.id}"}},
        {"name": "topic", "valueCanonical": sub.topic},
        {"name": "status", "valueCode": sub.status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(sub.events_since_start)},
    ]
    for e in events:
        part: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(e.number)},
                                      {"name": "timestamp", "valueInstant": format_instant(e.at_us)}]
        if content != "empty":
            part.append({"name": "focus", "valueReference": {"reference": f"{base}/{e.type}/{e.id}"}})
        params.append({"name": "notification-event", "part": part})
    if sub.error:
        params.append({"name": "error", "valueCodeableConcept": {"text": sub.error}})
    return {"resourceType": "Parameters", "id": pid, "meta": {"profile": [STATUS_PROFILE]}, "parameter": params}


def status_entry(base: str, params: dict[str, Any], sub_id: str) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{params['id']}", "resource": params,
            "request": {"method": "GET", "url": f"{base}/Subscription/{sub_id}/$status"},
            "response": {"status": "200"}}


def focus_entry(base: str, e: Event, body: bytes | None) -> dict[str, Any]:
    """An event's focus: fullUrl, request and response; `body` (the version's JSON) for full-resource."""
    url = e.type if e.interaction == "create" else f"{e.type}/{e.id}"
    entry: dict[str, Any] = {"fullUrl": f"{base}/{e.type}/{e.id}"}
    if body is not None:
        entry["resource"] = orjson.Fragment(body)
    entry["request"] = {"method": _METHOD.get(e.interaction, "PUT"), "url": url}
    entry["response"] = {"status": _STATUS.get(e.interaction, "200")}
    return entry


def notification(base: str, sub: SubStatus, kind: str, events: Sequence[Event], content: str,
                 body_of: Callable[[Event], bytes | None] | None = None) -> dict[str, Any]:
    """A notification Bundle (type history). `body_of` returns a focus's JSON for full-resource, or None
    when it may not be sent (the entry then stays id-only)."""
    params = status_parameters(base, sub, kind, events, content)
    entries = [status_entry(base, params, sub.id)]
    if content != "empty":
        seen: set[tuple[str, str, int]] = set()
        for e in events:
            key = (e.type, e.id, e.version)
            if key in seen:
                continue
            seen.add(key)
            body = body_of(e) if content == "full-resource" and body_of is not None else None
            entries.append(focus_entry(base, e, body))
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "meta": {"profile": [BUNDLE_PROFILE]},
            "type": "history", "timestamp": format_instant(now_us()), "entry": entries}
