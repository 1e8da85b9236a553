"""Run compiled searches against a store: matching keys, counts and pages of stored versions.

https://hl7.org/fhir/R4/search.html
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..fhir.instant import format_instant
from ..store import Version
from .query import Query
from .sql import compile_where


class Fetcher(Protocol):
    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...


def matching_ids(db: Fetcher, query: Query, limit: int) -> list[str]:
    """Ids of up to `limit` current resources matching the query (for conditional interactions)."""
    sql = compile_where(query)
    rows = db.fetch(
        f"SELECT r.id FROM resources r WHERE {' AND '.join(sql.where)} ORDER BY r.pk LIMIT ?",
        [*sql.params, limit],
    )
    return [r[0] for r in rows]


def count(db: Fetcher, query: Query) -> int:
    sql = compile_where(query)
    return int(db.fetch(f"SELECT count(*) FROM resources r WHERE {' AND '.join(sql.where)}", sql.params)[0][0])


def page(db: Fetcher, query: Query, limit: int, offset: int) -> list[Version]:
    """One page of matches in a stable order (by storage key), with their current versions."""
    sql = compile_where(query)
    rows = db.fetch(
        "SELECT r.type, r.id, h.version, h.last_updated, h.method, h.data FROM resources r"
        f" JOIN history h ON h.seq = r.seq WHERE {' AND '.join(sql.where)} ORDER BY r.pk LIMIT ? OFFSET ?",
        [*sql.params, limit, offset],
    )
    return [Version(t, i, v, format_instant(ts), m, bytes(d) if d is not None else None)
            for t, i, v, ts, m, d in rows]
