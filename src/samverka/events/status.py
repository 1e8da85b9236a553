"""$status: the current status of a topic-based Subscription.

https://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition-backport-subscription-status.html
`GET [base]/Subscription/{id}/$status` answers a `searchset` Bundle with one Parameters
(backport-subscription-status-r4) of type `query-status`: the status, the topic and
`events-since-subscription-start`, plus the last delivery error while the subscription is failing.
"""

from __future__ import annotations

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


def status(repo: Any, base: str, sub_id: str) -> Result:
    sub = sub_status(repo, sub_id)
    params = notify.status_parameters(base, sub, "query-status", [], "id-only")
    bundle = {"resourceType": "Bundle", "id": params["id"], "type": "searchset", "total": 1,
              "timestamp": format_instant(now_us()),
              "entry": [{"fullUrl": f"urn:uuid:{params['id']}", "resource": params,
                         "search": {"mode": "match"}}]}
    return Result(200, resource=bundle)
