"""Structural consistency checks between heads, history and index rows (`samverka check`).

Written in portable SQL so every backend runs the same checks through `Repository.fetch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .schema import INDEX_TABLE_NAMES


class _Fetches(Protocol):
    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...


_CHECKS: tuple[tuple[str, str], ...] = (
    (
        "head does not point at its own current history row",
        "SELECT r.type, r.id FROM resources r LEFT JOIN history h ON h.seq = r.seq"
        " WHERE h.seq IS NULL OR h.pk <> r.pk OR h.version <> r.version",
    ),
    (
        "versions are not contiguous from 1",
        "SELECT r.type, r.id FROM resources r JOIN (SELECT pk, count(*) AS n, min(version) AS lo,"
        " max(version) AS hi FROM history GROUP BY pk) v ON v.pk = r.pk"
        " WHERE v.n <> r.version OR v.lo <> 1 OR v.hi <> r.version",
    ),
    (
        "deleted flag disagrees with the current history row",
        "SELECT r.type, r.id FROM resources r JOIN history h ON h.seq = r.seq"
        " WHERE (r.deleted <> 0) <> (h.data IS NULL)",
    ),
    (
        "history row without a resource",
        "SELECT h.type, CAST(h.seq AS TEXT) FROM history h LEFT JOIN resources r ON r.pk = h.pk"
        " WHERE r.pk IS NULL",
    ),
)


def check(repo: _Fetches, limit: int = 20) -> list[str]:
    """Every inconsistency found (at most `limit` examples per kind); empty when consistent."""
    problems: list[str] = []
    for what, sql in _CHECKS:
        for row in repo.fetch(f"{sql} LIMIT {int(limit)}", ()):
            problems.append(f"{what}: {row[0]}/{row[1]}")
    for table in INDEX_TABLE_NAMES:
        rows = repo.fetch(
            f"SELECT DISTINCT x.res FROM {table} x LEFT JOIN resources r ON r.pk = x.res"
            f" WHERE r.pk IS NULL OR r.deleted <> 0 LIMIT {int(limit)}",
            (),
        )
        for (res,) in rows:
            problems.append(f"{table} has rows for a missing or deleted resource (pk {res})")
    return problems
