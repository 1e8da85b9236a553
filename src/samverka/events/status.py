"""$status: the current status of a topic-based Subscription.

https://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition-backport-subscription-status.html
`GET [base]/Subscription/{id}/$status` answers a `searchset` Bundle with one Parameters
(backport-subscription-status-r4) of type `query-status`: the status, the topic and
`events-since-subscription-start`, plus the last delivery error while the subscription is failing.
`GET [base]/Subscription/$status?id=&status=` answers one per matching subscription (ids and statuses
each joined by OR; none given: all of them).
"""

from __future__ import annotations

import uuid
from typing import Any

from ..errors import not_found
from ..fhir.instant import format_instant, now_us
from ..interactions.context import Result
from . import notify


def sub_status(repo: Any, sub_id: str) -> notify.SubStatus:
    rows = repo.fetch("SELECT topic, status, events_since_start, last_error FROM event_subscription WHERE id = ?",
                      (sub_id,))
    if not rows:
        raise not_found(f"Subscription/{sub_id} is not a topic-based subscription on this server")
    topic, status, count, error = rows[0]
    return notify.SubStatus(sub_id, topic, status, int(count), error)


def _bundle(base: str, subs: list[notify.SubStatus]) -> Result:
    entries = []
    for sub in subs:
        params = notify.status_parameters(base, sub, "query-status", [], "id-only")
        entries.append({"fullUrl": f"urn:uuid:{params['id']}", "resource": params, "search": {"mode": "match"}})
    bundle = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "searchset", "total": len(entries),
              "timestamp": format_instant(now_us()), "entry": entries}
    return Result(200, resource=bundle)


def status(repo: Any, base: str, sub_id: str) -> Result:
    return _bundle(base, [sub_status(repo, sub_id)])


def status_all(repo: Any, base: str, pairs: list[tuple[str, str]], owner: str | None = None) -> Result:
    """The type-level operation: the subscriptions with any of the `id`s and any of the `status`es
    (only those `owner` created, when given: the caller's client without a user/system grant)."""
    ids = {v for k, raw in pairs if k == "id" for v in raw.split(",") if v}
    statuses = {v for k, raw in pairs if k == "status" for v in raw.split(",") if v}
    rows = repo.fetch("SELECT id, topic, status, events_since_start, last_error, owner FROM event_subscription"
                      " ORDER BY id", ())
    subs = [notify.SubStatus(i, t, st, int(n), e) for i, t, st, n, e, o in rows
            if (not ids or i in ids) and (not statuses or st in statuses) and (owner is None or o == owner)]
    return _bundle(base, subs)
