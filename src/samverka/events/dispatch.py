"""Matching committed outbox events against the subscriptions: numbering each subscription's events.

https://hl7.org/fhir/uv/subscriptions-backport/notifications.html#event-numbering: each subscription
numbers its events 1, 2, 3, ... (`eventsSinceSubscriptionStart`). The delivery leader reads outbox rows
after `event_state.dispatched` in sequence order, evaluates each topic's triggers on the versions
before and after the change (FHIRPath over `%previous`/`%current`, or query criteria), then each
subscription's filter on the event's version, and in one transaction appends the numbered
`event_notification` rows and moves the cursor. A crash in between repeats the batch from the same
cursor, so every event is matched exactly once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from ..store import Repository
from . import topics
from .matching import Scratch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    type: str
    id: str
    version: int
    before_version: int | None
    interaction: str
    at_us: int


def _body(repo: Repository, type_: str, id_: str, version: int | None) -> dict[str, Any] | None:
    if version is None:
        return None
    v = repo.vread(type_, id_, version)
    return orjson.loads(v.data) if v is not None and v.data is not None else None


def _query_passes(q: topics.QueryCriteria, scratch: Scratch, previous: dict[str, Any] | None,
                  current: dict[str, Any] | None) -> bool:
    tests = []
    for query, version, missing in ((q.previous, previous, q.result_for_create),
                                    (q.current, current, q.result_for_delete)):
        if query is None:
            continue
        if version is None:
            tests.append(missing)
            continue
        with scratch.loaded(version) as loaded:
            tests.append(loaded.matches(query))
    if not tests:
        return True
    return all(tests) if q.require_both else any(tests)


def triggered(topic: topics.Topic, row: OutboxRow, scratch: Scratch, previous: dict[str, Any] | None,
              current: dict[str, Any] | None) -> bool:
    """Does this change trigger the topic (any of its resource triggers)?"""
    kind = "create" if row.interaction == "update" and previous is None else row.interaction
    for t in topic.triggers:
        if t.resource != row.type or kind not in t.interactions:
            continue
        if t.fhirpath is not None and not topics.fhirpath_passes(t.fhirpath, previous, current):
            continue
        if t.query is not None and not _query_passes(t.query, scratch, previous, current):
            continue
        return True
    return False


def dispatch(repo: Repository, scratch: Scratch, batch: int = 500) -> int:
    """Match the next outbox rows against the subscriptions; the number of outbox rows consumed."""
    cursor = int(repo.fetch("SELECT dispatched FROM event_state WHERE id = 1", ())[0][0])
    rows = [OutboxRow(*r) for r in repo.fetch(
        "SELECT seq, type, id, version, before_version, interaction, at_us FROM event_outbox"
        " WHERE seq > ? ORDER BY seq LIMIT ?", (cursor, batch))]
    if not rows:
        return 0
    subs = repo.fetch("SELECT id, topic, filter, start_seq FROM event_subscription"
                      " WHERE status IN ('requested', 'active', 'error')", ())
    by_type: dict[str, list[tuple[str, topics.Topic, str | None, int]]] = {}
    for sid, topic_url, filter_, start in subs:
        topic = topics.get(topic_url)
        if topic is None:
            continue
        for type_ in topic.types:
            by_type.setdefault(type_, []).append((str(sid), topic, filter_, int(start)))
    matched: list[tuple[str, int]] = []  # (subscription, outbox seq) in seq order
    for row in rows:
        candidates = [c for c in by_type.get(row.type, ()) if row.seq > c[3]]
        if not candidates:
            continue
        current = _body(repo, row.type, row.id, row.version)
        previous = _body(repo, row.type, row.id, row.before_version)
        hits = [(sid, f) for sid, topic, f, _s in candidates if triggered(topic, row, scratch, previous, current)]
        if not hits:
            continue
        focus = current if current is not None else previous
        filtered = [sid for sid, f in hits if f is None]
        pending = [(sid, f) for sid, f in hits if f is not None]
        if pending and focus is not None:
            with scratch.loaded(focus) as loaded:
                filtered += [sid for sid, f in pending if loaded.matches(f)]
        matched += [(sid, row.seq) for sid in sorted(filtered)]
    with repo.transaction() as uow:
        now = int(uow.execute("SELECT dispatched FROM event_state WHERE id = 1", ())[0][0])
        if now != cursor:  # another leader got here first (a lease handover): leave it to them
            return 0
        counts: dict[str, int] = {}
        for sid, seq in matched:
            if sid not in counts:
                found = uow.execute("SELECT events_since_start FROM event_subscription WHERE id = ?", (sid,))
                if not found:
                    continue
                counts[sid] = int(found[0][0])
            counts[sid] += 1
            uow.execute("INSERT INTO event_notification (sub, number, seq) VALUES (?, ?, ?)",
                        (sid, counts[sid], seq))
        for sid, n in counts.items():
            uow.execute("UPDATE event_subscription SET events_since_start = ? WHERE id = ?", (n, sid))
        uow.execute("UPDATE event_state SET dispatched = ? WHERE id = 1", (rows[-1].seq,))
    return len(rows)
