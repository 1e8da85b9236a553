"""A module's Subscription resources (R4 with the Subscriptions Backport IG,
https://hl7.org/fhir/uv/subscriptions-backport/), written through the normal write path.

The standard backport Subscription is the contract with the event core (`samverka.events`): the topic
canonical in `criteria`, `backport-filter-criteria`, `backport-payload-content`, a rest-hook channel
to the module's endpoint, status `requested` (the event core does the handshake and activates it) or
`off`. Two Samverka extensions say what the backport IG has no element for:

- `subscription-subscriber` (valueIdentifier, system `urn:ietf:params:oauth:client-id`): the client
  whose scopes every notification must respect;
- `subscription-handover` (on a replacement's subscription): `predecessor` (valueReference to the
  replaced module's Subscription), `afterEvent` (valueString: the predecessor's last acknowledged event
  number) and `afterSequence` (valueString: that event's outbox position). The event core starts such
  a subscription with the first event after that point instead of the first event after its creation.

Delivery figures (`delivery`) come from the event core: `samverka.events.delivery_state(repo, id)` when
it exists, else its `event_subscription` / `event_notification` rows (read only), else only the
Subscription resource (status, error).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from ..errors import not_found
from ..fhir.instant import format_instant
from ..interactions.context import Services
from ..interactions.writes import commit, new_id, prepare, stamp_us, validate
from ..store import UnitOfWork
from .manifest import Manifest, Subscribed

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
PROFILE = BACKPORT + "backport-subscription"
FILTER = BACKPORT + "backport-filter-criteria"
PAYLOAD = BACKPORT + "backport-payload-content"
SUBSCRIBER = "https://samverka.se/fhir/StructureDefinition/subscription-subscriber"
HANDOVER = "https://samverka.se/fhir/StructureDefinition/subscription-handover"
CLIENT_ID = "urn:ietf:params:oauth:client-id"


def resource(m: Manifest, s: Subscribed, client_id: str, handover: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The backport Subscription for one declared subscription of module `m`."""
    assert m.endpoint is not None, "a manifest with subscriptions has an endpoint (manifest.validate)"
    ext: list[dict[str, Any]] = [{"url": SUBSCRIBER, "valueIdentifier": {"system": CLIENT_ID, "value": client_id}}]
    if handover is not None:
        parts: list[dict[str, Any]] = [{"url": "predecessor",
                                        "valueReference": {"reference": f"Subscription/{handover['predecessor']}"}}]
        for key, name in (("after_event", "afterEvent"), ("after_seq", "afterSequence")):
            if handover.get(key) is not None:
                parts.append({"url": name, "valueString": str(handover[key])})
        ext.append({"url": HANDOVER, "extension": parts})
    sub: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [PROFILE]},
        "extension": ext,
        "status": "requested",
        "reason": f"module {m.id} ({m.name}, {m.vendor} {m.version}), role {m.role}",
        "criteria": s.topic,
        "channel": {
            "type": "rest-hook",
            "endpoint": m.endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD, "valueCode": s.payload}]},
        },
    }
    if s.filter:
        sub["_criteria"] = {"extension": [{"url": FILTER, "valueString": s.filter}]}
    return sub


def create(svc: Services, uow: UnitOfWork, body: dict[str, Any]) -> str:
    """Create a Subscription inside the open unit of work (validated and indexed as any create); its id."""
    validate(svc, body)
    p = prepare(svc, body, new_id())
    v = commit(uow, svc, p, None, "POST", stamp_us())
    return v.id


def set_status(svc: Services, uow: UnitOfWork, sub_id: str, status: str) -> bool:
    """Set a Subscription's status (`off`, or `requested` to start again) inside the open unit of work;
    False when it already had it."""
    current = uow.current("Subscription", sub_id)
    stored = uow.read("Subscription", sub_id)
    if current is None or stored is None or stored.data is None:
        raise not_found(f"Subscription/{sub_id} of this module no longer exists")
    body = orjson.loads(stored.data)
    if body.get("status") == status:
        return False
    body["status"] = status
    body.pop("error", None)
    body["meta"] = {"profile": [PROFILE]}
    validate(svc, body)
    p = prepare(svc, body, sub_id)
    commit(uow, svc, p, current, "PUT", stamp_us())
    return True


def resume(svc: Services, uow: UnitOfWork, sub_id: str) -> int | None:
    """Request a disabled module's Subscription again, continuing where it was switched off: the
    event core's `matchedSequence` (how far it was matched when it went off) becomes the
    `subscription-handover` afterSequence, so the events committed meanwhile are delivered after
    `enable` (numbered on from the last event). The point used, or None without the event core."""
    state = _state(svc, sub_id, uow.fetch)
    point = state.get("matchedSequence") if state is not None else None
    if not isinstance(point, int):
        set_status(svc, uow, sub_id, "requested")
        return None
    current = uow.current("Subscription", sub_id)
    stored = uow.read("Subscription", sub_id)
    if current is None or stored is None or stored.data is None:
        raise not_found(f"Subscription/{sub_id} of this module no longer exists")
    body = orjson.loads(stored.data)
    ext = [e for e in body.get("extension") or () if not (isinstance(e, dict) and e.get("url") == HANDOVER)]
    old = next((e for e in body.get("extension") or () if isinstance(e, dict) and e.get("url") == HANDOVER), None)
    parts = [p for p in (old or {}).get("extension") or () if p.get("url") == "predecessor"]
    parts = parts or [{"url": "predecessor", "valueReference": {"reference": f"Subscription/{sub_id}"}}]
    parts.append({"url": "afterSequence", "valueString": str(point)})
    body["extension"] = [*ext, {"url": HANDOVER, "extension": parts}]
    body["status"] = "requested"
    body.pop("error", None)
    body["meta"] = {"profile": [PROFILE]}
    validate(svc, body)
    commit(uow, svc, prepare(svc, body, sub_id), current, "PUT", stamp_us())
    return point


def read(svc: Services, sub_id: str) -> dict[str, Any] | None:
    v = svc.repo.read("Subscription", sub_id)
    return orjson.loads(v.data) if v is not None and v.data is not None else None


def _events() -> Any:
    """The event core package, when this build has it (it is optional to this module)."""
    try:
        return importlib.import_module("samverka.events")
    except ImportError:
        return None


def owned(svc: Services, client_id: str | None, scope: str = "") -> Services:
    """Services whose writes append outbox events and whose new Subscriptions belong to the module's
    client: the event core then filters every notification (and `full-resource` payload) by that
    client's scopes."""
    ev = _events()
    if ev is None:
        return svc
    svc = ev.wrap(svc)  # a no-op when the services already append outbox events
    as_registry = getattr(svc.repo, "as_registry", None)
    if as_registry is not None:  # the registry's writes may set a handover point; a client's may not
        svc = dataclasses.replace(svc, repo=as_registry())
    owned_by = getattr(svc.repo, "owned_by", None)
    if owned_by is None or client_id is None:
        return svc
    return dataclasses.replace(svc, repo=owned_by(ev.Owner(client_id, scope)))


_STATE_SQL = ("SELECT status, events_since_start, delivered, error_count, failing_since, last_sent, last_error,"
              " start_seq, (SELECT n.seq FROM event_notification n WHERE n.sub = s.id AND n.number = s.delivered)"
              " FROM event_subscription s WHERE s.id = ?")


Fetch = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


@dataclasses.dataclass
class _Reader:
    """A read-only view with `fetch` (e.g. of an open unit of work) for the event core's queries."""

    fetch: Fetch


def _state(svc: Services, sub_id: str, fetch: Fetch | None = None) -> dict[str, Any] | None:
    """The event core's delivery state of one subscription: `samverka.events.delivery_state` when it
    exists, else its `event_subscription` row (read only), else None."""
    ev = _events()
    if ev is None:
        return None
    fn = getattr(ev, "delivery_state", None)
    if callable(fn):
        found = fn(_Reader(fetch) if fetch is not None else svc.repo, sub_id)
        return dict(found) if isinstance(found, Mapping) else None
    rows = (fetch or svc.repo.fetch)(_STATE_SQL, (sub_id,))
    if not rows:
        return None
    status, count, delivered, errors, failing_us, sent_us, error, start_seq, ack_seq = rows[0]
    return {"status": status, "eventsSinceSubscriptionStart": int(count), "acknowledgedEvent": int(delivered),
            "acknowledgedSequence": int(ack_seq) if ack_seq is not None else int(start_seq) if not delivered
            else None, "lag": int(count) - int(delivered),
            "lastDelivery": format_instant(int(sent_us)) if sent_us else None,
            "consecutiveFailures": int(errors),
            "failingSince": format_instant(int(failing_us)) if failing_us else None, "error": error,
            "source": "event_subscription"}


def delivery(svc: Services, sub_id: str, fetch: Fetch | None = None) -> dict[str, Any]:
    """Status and delivery figures of one Subscription: status, eventsSinceSubscriptionStart, the last
    acknowledged event (and its outbox position), lag, last delivery, failures; `source` says where
    they came from (the event core, or only the Subscription resource)."""
    body = read(svc, sub_id)
    out: dict[str, Any] = {"status": body.get("status") if body else "deleted",
                           "error": body.get("error") if body else None, "eventsSinceSubscriptionStart": None,
                           "acknowledgedEvent": None, "acknowledgedSequence": None, "lag": None,
                           "lastDelivery": None, "consecutiveFailures": None, "failingSince": None, "errorRate": None,
                           "source": "subscription-resource"}
    state = _state(svc, sub_id, fetch)  # `fetch`: inside the caller's transaction
    if state is not None:
        out.update({k: v for k, v in state.items() if v is not None or k not in ("status", "error")})
        out.setdefault("source", "samverka.events.delivery_state")
    return out
