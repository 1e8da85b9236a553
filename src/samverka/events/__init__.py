"""Topic-based subscriptions from a transactional outbox (FHIR Subscriptions R5 Backport IG for R4).

https://hl7.org/fhir/uv/subscriptions-backport/. The pieces, in the order an event travels:
- `outbox`: `Outboxing` wraps the repository; every write transaction appends its `event_outbox` rows
  before it commits (and keeps `event_subscription` in step with Subscription resources);
- `topics`: the shipped SubscriptionTopics (canonical URLs, resource triggers, criteria, filters);
- `subscriptions`: reading and checking a backport Subscription;
- `dispatch`: outbox rows → numbered events per subscription (triggers, then filters, via `matching`);
- `delivery`: the rest-hook worker (lease, handshake, notifications, retries, heartbeats);
- `notify`: the notification Bundles; `status` ($status) and `replay` ($events);
- `nats`: the optional bridge that publishes every committed event to NATS JetStream (`--nats`).

`Events` is what the API layer holds (one per process). This package imports interactions, search,
store and auth, never api or cli.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..auth.access import Access
from ..fhir.instant import format_instant, now_us
from ..interactions.context import Result, Services
from . import replay, status, topics
from .delivery import Worker, focus_body
from .matching import Scratch
from .notify import Event
from .outbox import Outboxing, Owner, Wakeup

__all__ = ["Events", "Outboxing", "Owner", "Wakeup", "delivery_state", "topics", "wrap"]


def wrap(svc: Services, wakeup: Wakeup | None = None) -> Services:
    """The services with an outbox on every write transaction (done once, when the services are built)."""
    if isinstance(svc.repo, Outboxing):
        return svc
    return dataclasses.replace(svc, repo=Outboxing(svc.repo, svc.searchable, on_commit=wakeup))


_STATE = ("SELECT status, events_since_start, delivered, error_count, failing_since, last_sent, last_error, start_seq,"
          " (SELECT n.seq FROM event_notification n WHERE n.sub = s.id AND n.number = s.delivered),"
          " (SELECT n.seq FROM event_notification n WHERE n.sub = s.id AND n.number = s.delivered + 1),"
          " window_us, attempts, failures, prev_attempts, prev_failures FROM event_subscription s WHERE s.id = ?")


def attempts(row: tuple[Any, ...], now: int, window: float) -> tuple[int, int]:
    """(POSTs, failed POSTs) over the last one to two error windows, from (window_us, attempts, failures,
    prev_attempts, prev_failures) as `delivery.Worker` rolls them."""
    start, cur, cur_failed, prev, prev_failed = (int(x) for x in row)
    w = int(window * 1e6)
    if now - start >= 2 * w:
        return 0, 0
    if now - start >= w:
        return cur, cur_failed
    return cur + prev, cur_failed + prev_failed


def delivery_state(repo: Any, sub_id: str, window: float = 3600.0) -> dict[str, Any] | None:
    """A subscription's delivery figures for the module view (samverka.modules), None if unknown.

    `acknowledgedSequence` is the outbox position a successor continues after with no gap: the
    position of the last acknowledged event, or just before the first unacknowledged one, or (no
    events yet) how far the subscription has been matched.
    """
    rows = repo.fetch(_STATE, (sub_id,))
    if not rows:
        return None
    status, count, delivered, errors, failing, sent, error, start, ack_seq, next_seq = rows[0][:10]
    tried, failed = attempts(rows[0][10:], now_us(), window)
    if ack_seq is not None:
        point = int(ack_seq)
    elif next_seq is not None:
        point = int(next_seq) - 1
    else:
        point = int(start)
    return {"status": status, "eventsSinceSubscriptionStart": int(count), "acknowledgedEvent": int(delivered),
            "acknowledgedSequence": point, "lag": int(count) - int(delivered),
            "lastDelivery": format_instant(int(sent)) if sent else None, "consecutiveFailures": int(errors),
            "failingSince": format_instant(int(failing)) if failing else None, "error": error,
            "deliveryAttempts": tried, "failedAttempts": failed,  # POSTs over the last error window(s)
            "errorRate": round(failed / tried, 4) if tried else None,
            "matchedSequence": int(start),  # matched through here; an `off` subscription resumes after it
            "source": "event_subscription"}  # the table the figures come from


def owner_of(access: Access | None) -> Owner | None:
    if access is None:
        return None
    return Owner(access.client_id, access.scope, access.patient)


class Events:
    """One process's view: per-request services that record the owner, the worker, the operations."""

    def __init__(self, svc: Services, wakeup: Wakeup | None = None) -> None:
        self.svc = svc
        self.wakeup = wakeup
        self.worker: Worker | None = None
        self.bridge: Any = None  # the NATS JetStream bridge (`nats`), with `--nats`
        self._scratch: Scratch | None = None

    def services(self, svc: Services, access: Access | None) -> Services:
        """The request's services: Subscriptions it creates belong to the token's client."""
        repo = svc.repo
        if isinstance(repo, Outboxing) and access is not None:
            return dataclasses.replace(svc, repo=repo.owned_by(owner_of(access)))
        return svc

    def start(self) -> None:
        """Start this process's delivery worker (call from the running event loop)."""
        self.worker = Worker(self.svc, self.wakeup)
        self.worker.start()
        if self.svc.settings.nats:
            from .nats import Bridge  # nats-py is an optional extra

            self.bridge = Bridge(self.svc)
            self.bridge.start()

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        if self.bridge is not None:
            await self.bridge.stop()
        if self._scratch is not None:
            self._scratch.close()

    def status(self, base: str, sub_id: str | None, pairs: list[tuple[str, str]], access: Access | None) -> Result:
        if sub_id is not None:
            return status.status(self.svc.repo, base, sub_id)
        owner = None
        if access is not None and not any(g.context != "patient" and g.covers("r", "Subscription")
                                          for g in access.grants):
            owner = access.client_id  # patient-context grants: only the caller's own subscriptions
        return status.status_all(self.svc.repo, base, pairs, owner)

    def events(self, base: str, sub_id: str, params: dict[str, str], access: Access | None) -> Result:
        if self._scratch is None:
            self._scratch = Scratch(self.svc.searchable)
        scratch = self._scratch
        reader = owner_of(access)

        def body_of(e: Event) -> bytes | None:
            return focus_body(self.svc, scratch, reader, e)

        return replay.events(self.svc.repo, base, sub_id, params, body_of)

    def topic_urls(self) -> list[str]:
        return [t.url for t in topics.TOPICS]
