"""Outbox retention: pruning `event_outbox` rows nobody needs any more.

https://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition-backport-subscription-events.html
lets a server keep events for a limited time; Samverka keeps every outbox row younger than
`Settings.event_retention` (7 days by default), so `$events` can replay any number within it. An older
row is deleted only when nothing still needs it: it is matched (at or before `event_state.dispatched`),
every subscription (any status; an `off` one resumes from its matched position when enabled) has
acknowledged it or was matched past it, and every NATS bridge has published it. The numbered
`event_notification` rows of deleted events go with them (`$events` then answers the numbers it still
has). The delivery leader prunes once per `EVERY` seconds, in one transaction.
"""

from __future__ import annotations

from typing import Any

from ..fhir.instant import now_us

EVERY = 60.0  # seconds between prunes by the delivery leader

# the lowest outbox position some consumer still needs: the first unacknowledged event of each
# subscription (or, with all acknowledged, just past its matched position), the bridges' positions and
# the dispatch cursor; rows at or below (that - 1) may go
_NEEDED = (
    "SELECT MIN(p) FROM ("
    " SELECT COALESCE((SELECT n.seq FROM event_notification n WHERE n.sub = s.id AND n.number = s.delivered + 1),"
    " s.start_seq + 1) AS p FROM event_subscription s"
    " UNION ALL SELECT published + 1 AS p FROM event_bridge"
    " UNION ALL SELECT dispatched + 1 AS p FROM event_state) needed")


def prune(repo: Any, retention: float, now: int | None = None) -> int:
    """Delete outbox rows older than `retention` seconds that no consumer needs; the rows deleted."""
    cutoff_us = (now if now is not None else now_us()) - int(retention * 1e6)
    with repo.transaction() as uow:
        needed = uow.execute(_NEEDED, ())[0][0]
        if needed is None:
            return 0
        below = int(needed)
        rows = uow.execute("SELECT MAX(seq) FROM event_outbox WHERE seq < ? AND at_us < ?", (below, cutoff_us))
        last = rows[0][0] if rows else None
        if last is None:
            return 0
        # seq order is commit order and at_us is stamped in the commit, so every row up to `last` is old
        # enough up to clock steps; a younger row among them is kept
        uow.execute("DELETE FROM event_notification WHERE seq <= ? AND seq IN"
                    " (SELECT seq FROM event_outbox WHERE seq <= ? AND at_us < ?)", (int(last), int(last), cutoff_us))
        done = uow.execute("DELETE FROM event_outbox WHERE seq <= ? AND at_us < ? RETURNING seq",
                           (int(last), cutoff_us))
    return len(done)
