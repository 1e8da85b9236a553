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

from ..store import Repository, UnitOfWork
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
        tests.append(scratch.matches(version, query))
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


_LIVE = "status IN ('requested', 'active', 'error')"
Candidate = tuple[str, topics.Topic, str | None, int]  # (subscription, topic, filter, start_seq)


def _candidates(repo: Repository, where: str, params: tuple[Any, ...]) -> list[Candidate]:
    out = []
    for sid, topic_url, filter_, start in repo.fetch(
            f"SELECT id, topic, filter, start_seq FROM event_subscription WHERE {_LIVE} AND {where} ORDER BY id",
            params):
        topic = topics.get(topic_url)
        if topic is not None:
            out.append((str(sid), topic, filter_, int(start)))
    return out


def _rows(repo: Repository, after: int, until: int | None, batch: int) -> list[OutboxRow]:
    bound = " AND seq <= ?" if until is not None else ""
    params = (after, until, batch) if until is not None else (after, batch)
    return [OutboxRow(*r) for r in repo.fetch(
        "SELECT seq, type, id, version, before_version, interaction, at_us FROM event_outbox"
        f" WHERE seq > ?{bound} ORDER BY seq LIMIT ?", params)]


def _match(repo: Repository, scratch: Scratch, rows: list[OutboxRow], subs: list[Candidate]) -> list[tuple[str, int]]:
    """(subscription, outbox seq) of every event, in seq order (subscriptions by id within one row)."""
    by_type: dict[str, list[Candidate]] = {}
    for c in subs:
        for type_ in c[1].types:
            by_type.setdefault(type_, []).append(c)
    matched: list[tuple[str, int]] = []
    for row in rows:
        candidates = [c for c in by_type.get(row.type, ()) if row.seq > c[3]]
        if not candidates:
            continue
        current = _body(repo, row.type, row.id, row.version)
        previous = _body(repo, row.type, row.id, row.before_version)
        fired: dict[int, bool] = {}  # per topic: several subscriptions often share one
        for _sid, topic, _f, _s in candidates:
            if id(topic) not in fired:
                fired[id(topic)] = triggered(topic, row, scratch, previous, current)
        hits = [(sid, f) for sid, topic, f, _s in candidates if fired[id(topic)]]
        if not hits:
            continue
        focus = current if current is not None else previous
        filtered = [sid for sid, f in hits if f is None]
        pending = [(sid, f) for sid, f in hits if f is not None]
        if pending and focus is not None:
            quick = [(sid, f, scratch.quick.matches(f, focus)) for sid, f in pending]
            filtered += [sid for sid, _f, hit in quick if hit]
            slow = [(sid, f) for sid, f, hit in quick if hit is None]
            if slow:
                with scratch.loaded(focus) as loaded:
                    filtered += [sid for sid, f in slow if loaded.matches(f)]
        matched += [(sid, row.seq) for sid in sorted(filtered)]
    return matched


def _number(uow: UnitOfWork, matched: list[tuple[str, int]]) -> None:
    """Append the numbered `event_notification` rows and bump each subscription's count."""
    counts: dict[str, int] = {}
    for sid, seq in matched:
        if sid not in counts:
            found = uow.execute("SELECT events_since_start FROM event_subscription WHERE id = ?", (sid,))
            if not found:  # deleted meanwhile
                continue
            counts[sid] = int(found[0][0])
        counts[sid] += 1
        uow.execute("INSERT INTO event_notification (sub, number, seq) VALUES (?, ?, ?)", (sid, counts[sid], seq))
    for sid, n in counts.items():
        uow.execute("UPDATE event_subscription SET events_since_start = ? WHERE id = ?", (n, sid))


def _cursor(repo: Repository) -> int:
    return int(repo.fetch("SELECT dispatched FROM event_state WHERE id = 1", ())[0][0])


def catch_up(repo: Repository, scratch: Scratch, batch: int = 500) -> int:
    """Subscriptions that start before the dispatch cursor (a handover: `start_seq` was set to the
    predecessor's last acknowledged event) are matched alone over the outbox rows they missed, before
    the shared dispatch includes them, so their events stay in order. The outbox rows consumed."""
    cursor = _cursor(repo)
    done = 0
    for sub in _candidates(repo, "start_seq < ?", (cursor,)):
        rows = _rows(repo, sub[3], cursor, batch)
        matched = _match(repo, scratch, rows, [sub])
        end = rows[-1].seq if len(rows) == batch else cursor
        with repo.transaction() as uow:
            found = uow.execute("SELECT start_seq FROM event_subscription WHERE id = ?", (sub[0],))
            if not found or int(found[0][0]) != sub[3]:
                continue
            _number(uow, matched)
            uow.execute("UPDATE event_subscription SET start_seq = ? WHERE id = ?", (end, sub[0]))
        done += len(rows) or 1
    return done


def dispatch(repo: Repository, scratch: Scratch, batch: int = 500) -> int:
    """Match the next outbox rows against the subscriptions; the number of outbox rows consumed.

    `start_seq` of every subscription the batch was matched for moves up to the new cursor: from then
    on it means "matched through", and a subscription below the cursor is one to `catch_up`. An `off`
    subscription keeps its position: switched on by the registry (`module enable`) it resumes there.
    """
    done = catch_up(repo, scratch, batch)
    cursor = _cursor(repo)
    rows = _rows(repo, cursor, None, batch)
    if not rows:
        return done
    end = rows[-1].seq
    matched = _match(repo, scratch, rows, _candidates(repo, "start_seq >= ?", (cursor,)))
    with repo.transaction() as uow:
        now = int(uow.execute("SELECT dispatched FROM event_state WHERE id = 1", ())[0][0])
        if now != cursor:  # another leader got here first (a lease handover): leave it to them
            return done
        _number(uow, matched)
        uow.execute(f"UPDATE event_subscription SET start_seq = ? WHERE start_seq >= ? AND start_seq < ? AND {_LIVE}",
                    (end, cursor, end))
        uow.execute("UPDATE event_state SET dispatched = ? WHERE id = 1", (end,))
    return done + len(rows)
