"""$events: the events of a topic-based Subscription by number, for a subscriber that missed some.

https://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition-backport-subscription-events.html
`GET [base]/Subscription/{id}/$events?eventsSinceNumber=&eventsUntilNumber=&content=` answers a
notification Bundle (type `history`) whose status Parameters has type `query-event` and one
`notification-event` per event in the range (both bounds inclusive; at most `MAX_EVENTS`), followed
by the focus entries. `content` may ask for less than the subscription's payload, never more; a
full-resource focus is sent only when the caller (or, without auth, the subscription's owner) may
read it, as for delivery.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import invalid
from ..interactions.context import Result
from . import notify, subscriptions
from .delivery import events_of
from .status import sub_status

MAX_EVENTS = 1000
_RANK = {c: i for i, c in enumerate(subscriptions.CONTENTS)}


def _number(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise invalid(f"{name} must be a non-negative event number, not {value!r}", name)
    return int(value)


def events(repo: Any, base: str, sub_id: str, params: dict[str, str],
           body_of: Callable[[notify.Event], bytes | None]) -> Result:
    sub = sub_status(repo, sub_id)
    rows = repo.fetch("SELECT payload FROM event_subscription WHERE id = ?", (sub_id,))
    payload = str(rows[0][0])
    since = _number(params.get("eventsSinceNumber"), "eventsSinceNumber")
    until = _number(params.get("eventsUntilNumber"), "eventsUntilNumber")
    content = params.get("content") or payload
    if content not in _RANK:
        raise invalid(f"content must be one of {', '.join(subscriptions.CONTENTS)}", "content")
    if _RANK[content] > _RANK[payload]:
        content = payload  # a hint, and never more than the subscription itself carries
    first = max(since or 1, 1)
    last = min(until if until is not None else sub.events_since_start, sub.events_since_start,
               first + MAX_EVENTS - 1)
    found = events_of(repo, sub_id, first, last) if last >= first else []
    return Result(200, resource=notify.notification(base, sub, "query-event", found, content, body_of))
