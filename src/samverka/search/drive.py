"""Where a search starts: the candidate drivers of a query and the bounded probes that choose one.

https://hl7.org/fhir/R4/search.html -- `plan.build` checks every criterion per candidate row; this module
decides which rows are the candidates. A *driver* is a `SELECT res` over one index:
- a positive leaf, a chain or a `_has` (`driver`): exactly the keys matching that criterion, so its own
  check is dropped from the plan;
- a `_lastUpdated` window (`window.last_updated_window`): the `ge`/`gt`/`le`/`lt`/... criteria on
  `_lastUpdated` intersected into one closed range of the index's `lo` column. It is a *superset* of the
  matches (every criterion is still checked per row), which one open-ended criterion alone never is. A
  search of one type reads the range from `resources (type, last_updated)` (migration 0010): the write path
  stores the same microsecond stamp as `resources.last_updated` and as the `lo` of the one `_lastUpdated`
  index row of a current, non-deleted resource, so these are the same keys without the other types' rows;
- a date window (`window.date_windows`): likewise for any date parameter holding one value per resource,
  read per span class (`date=ge2015-03-01&date=lt2015-04-01`).
A driver of many keys is intersected with a window, or a wide exact driver, holding not many more rows
(`_intersected`): both ranges are read in order instead of a check per key (a month of a hospital's 9.5k
Encounters at 1M resources: 9 ms of lookups became ~3.5 ms on PostgreSQL).

Probes run cheapest first (exact lookups, then closed ranges, then open ranges), each bounded by the
smallest count found so far. An open-ended range (`date=ge2015`, a number `gt`) scans its parameter from
the start, so it is not probed once something else can drive, and only as a last resort when an exact
driver might. When nothing is under the probe limit, an exact token or reference (or a `_lastUpdated`
window) that holds fewer than `WIDE_LIMIT` keys still drives when that is a small part of the type:
walking the type stops early only when the matches are dense, and a month of one hospital's Encounters
is not. None of this changes what a search finds, only the order in which rows are checked.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .query import Chain, Criterion, Has, Node, Query
from .sql import driver_sql, has_guard
from .window import date_upper, date_windows, is_last_updated, last_updated_window

PROBE_LIMIT = 2000
# A `_has` key costs three random lookups (referring row, its reference row, the resource it points at),
# a leaf key one index step: on 1M Synthea resources a `_has` over more than ~700 referring rows paged
# faster by walking the (small) target type, one under ~300 rows up to 300x faster driven.
HAS_PROBE_LIMIT = 500
# The second look when every probe hit its limit: an exact driver (or a `_lastUpdated` window) under this
# many keys drives when it holds under 1/WIDE_SHARE of the type's rows. Driving 10k keys costs ~10 ms on
# SQLite at 1M; walking 95k Encounters for a month's 12 matches cost 166 ms.
WIDE_LIMIT = 20_000
WIDE_SHARE = 4
# A driver of at least INTERSECT_FROM keys is intersected with a date window, or a wide exact driver, whose
# range holds fewer than INTERSECT_RATIO times as many rows (`_intersected`): reading both ranges in order
# costs ~0.3 µs a row on PostgreSQL at 1M resources, a per-key check ~0.9 µs (a date) to ~3.5 µs (the
# resources row and every criterion, behind a superset driver). A month of one hospital's Encounters: its
# 9.5k keys and the month's ~3k date rows (all types) intersected in ~3.5 ms instead of 9 ms of lookups.
INTERSECT_FROM = 500
INTERSECT_RATIO = 3  # x4 more behind a superset driver (a window), whose per-key check costs ~4x more

EXACT, CLOSED, OPEN = 0, 1, 2  # probe order


class Fetcher(Protocol):
    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class Candidate:
    """One way to start: `sql` selects `res`; `index` is the criterion it replaces (None: a superset)."""

    index: int | None
    name: str
    sql: str
    params: list[Any]
    rank: int
    limit: int
    wide: bool  # may drive on the second look (an exact token/reference, or a window)
    typed: bool = False  # every key is of the searched type (a `_lastUpdated` window read from `resources`)


@dataclass
class Choice:
    driver: Candidate | None
    keys: int
    probes: dict[str, int]
    notes: list[str]


def candidates(db: Fetcher, query: Query) -> list[Candidate]:
    out: list[Candidate] = []
    names: set[str] = set()
    for i, node in enumerate(query.criteria):
        d = driver(node, db)
        if d is None:
            continue
        base = name = getattr(node, "raw_name", "?")
        k = 1
        while name in names:  # `date=ge..&date=lt..`: two probes of one parameter
            k += 1
            name = f"{base} #{k}"
        names.add(name)
        rank, wide = _rank(node)
        out.append(Candidate(i, name, d[0], d[1], rank, HAS_PROBE_LIMIT if isinstance(node, Has) else PROBE_LIMIT,
                             wide))
    window = last_updated_window(query)
    if window is not None:
        pid, lo, hi = window
        if query.type is not None:  # the type's own rows, from the (type, last_updated) index
            out.append(Candidate(None, f"_lastUpdated window of {query.type}", "SELECT lu.pk AS res FROM resources lu"
                                 " WHERE lu.type = ? AND lu.deleted = 0 AND lu.last_updated >= ?"
                                 " AND lu.last_updated <= ?", [query.type, lo, hi], CLOSED, PROBE_LIMIT, True,
                                 typed=True))
        else:
            out.append(Candidate(None, "_lastUpdated window", "SELECT x.res FROM idx_date x WHERE x.param = ?"
                                 " AND x.lo >= ? AND x.lo <= ?", [pid, lo, hi], CLOSED, PROBE_LIMIT, True))
    windows = date_windows(query)
    skip = _multivalued(db) if windows else frozenset()  # read only when a window is possible at all
    for pid, name, sql, params in windows:
        if (pid, query.type) not in skip:
            out.append(Candidate(None, name, sql, list(params), CLOSED, PROBE_LIMIT, False))
    return out


def _rank(node: Node) -> tuple[int, bool]:
    if not isinstance(node, Criterion):
        return EXACT, False
    t = node.param.type
    if t == "date":
        return (CLOSED if node.modifier is None and date_upper(node) is not None else OPEN), False
    if t in ("number", "quantity", "composite"):
        return OPEN, False
    if t == "string" or node.modifier in ("text", "below", "above", "in"):
        return CLOSED, False
    exact = node.modifier is None or (t == "reference" and node.modifier[:1].isupper())
    return EXACT, exact and t in ("token", "reference") and node.param.code != "_id"


def choose(db: Fetcher, query: Query, cands: list[Candidate]) -> Choice:
    """The driver with the fewest keys under its probe limit (or a wide one, see the module doc), or None."""
    probes: dict[str, int] = {}
    notes: list[str] = []
    best: Candidate | None = None
    best_n = 0
    windowed = any(c.index is None and c.name.startswith("_lastUpdated window") for c in cands)
    second_look = query.type is not None and any(c.wide for c in cands)
    deferred: list[Candidate] = []  # open ranges, probed only if the second look finds nothing
    for c in sorted(cands, key=lambda c: c.rank):
        if windowed and c.rank == OPEN and c.index is not None and is_last_updated(query.criteria[c.index]):
            notes.append(f"{c.name} not probed (the _lastUpdated window bounds it)")
            continue
        if best is not None and best_n == 0:
            notes.append(f"{c.name} not probed ({best.name} matched nothing)")
            continue
        if c.rank == OPEN and best is not None:
            notes.append(f"{c.name} not probed (an open range scans its parameter from the start)")
            continue
        if c.rank == OPEN and second_look:
            deferred.append(c)
            continue
        n, limit = _probe(db, c, best_n if best is not None else None, probes, notes)
        if n < limit:
            best, best_n = c, n
    if best is None and query.type is not None:
        wide = _second_look(db, query, cands, probes, notes)
        if wide is not None:
            for c in deferred:
                notes.append(f"{c.name} not probed (an open range scans its parameter from the start)")
            best, best_n = wide
        else:
            for c in deferred:  # the last resort before a walk of the whole type
                n, limit = _probe(db, c, best_n if best is not None else None, probes, notes)
                if n < limit:
                    best, best_n = c, n
    if best is not None and best_n >= INTERSECT_FROM:
        best, best_n = _intersected(db, best, best_n, cands, probes, notes)
    return Choice(best, best_n, probes, notes)


def _intersected(db: Fetcher, c: Candidate, n: int, cands: list[Candidate], probes: dict[str, int],
                 notes: list[str]) -> tuple[Candidate, int]:
    """`c` (n keys) intersected with the window or wide exact driver holding the fewest rows under
    `INTERSECT_RATIO` x n, if any. The keys still hold every match, and all of them match `c`'s criterion."""
    o_best: Candidate | None = None
    m_best = min(n * INTERSECT_RATIO * (4 if c.index is None else 1), WIDE_LIMIT)  # each count bounded
    for o in cands:
        if o is c or not (o.index is None or o.wide):
            continue
        m = _count(db, o, m_best)
        probes[f"{o.name} (to intersect)"] = m
        if m < m_best:
            o_best, m_best = o, m
    if o_best is None:
        return c, n
    notes.append(f"{c.name} ({n} keys) intersected with {o_best.name} ({m_best} rows): both ranges read in order"
                 " rather than a check per key")
    sql = f"SELECT i1.res FROM ({c.sql}) i1 INTERSECT SELECT i2.res FROM ({o_best.sql}) i2"
    index = c.index if c.index is not None else o_best.index  # the criterion every key matches, if any
    return Candidate(index, f"{c.name} and {o_best.name}", sql, [*c.params, *o_best.params], c.rank, c.limit,
                     c.wide, c.typed), min(n, m_best)


def _probe(db: Fetcher, c: Candidate, best: int | None, probes: dict[str, int], notes: list[str]) -> tuple[int, int]:
    """(keys counted, the limit they were counted to): no further than the best so far."""
    limit = c.limit if best is None else min(c.limit, best)
    n = _count(db, c, limit)
    probes[c.name] = n
    if limit < c.limit:
        notes.append(f"{c.name} probed up to {limit} (the best so far)")
    return n, limit


def _second_look(db: Fetcher, query: Query, cands: list[Candidate], probes: dict[str, int],
                 notes: list[str]) -> tuple[Candidate, int] | None:
    """A wide exact driver (or `_lastUpdated` window) when every probe hit its limit, see the module doc."""
    assert query.type is not None
    wide = [c for c in cands if c.wide]
    if not wide or (len(query.criteria) < 2 and wide[0].index is not None):
        return None  # one criterion and nothing else: the walk's rows all match
    c = wide[0]
    n = _count(db, c, WIDE_LIMIT)
    probes[f"{c.name} (wide)"] = n
    if n >= WIDE_LIMIT:
        return None
    cap = n * WIDE_SHARE
    rows = _type_rows(db, query.type, cap)
    probes[f"{query.type} rows (wide)"] = rows
    if rows < cap:
        notes.append(f"{c.name} holds {n} keys, more than 1/{WIDE_SHARE} of the {rows} {query.type} rows: walk")
        return None
    notes.append(f"{c.name} holds {n} keys, under 1/{WIDE_SHARE} of the {query.type} rows: driven rather than"
                 " walked (a walk stops early only when matches are dense)")
    return c, n


def _store(db: Any) -> int:
    """The store behind a request's wrappers (audit, outbox: each has `inner`), for the caches below."""
    while hasattr(db, "inner"):
        db = db.inner
    return id(db)


_COUNTS: dict[tuple[int, str, tuple[Any, ...]], tuple[float, int, int]] = {}  # -> (time, limit, keys)
_COUNTS_TTL_S = 10.0


def _count(db: Fetcher, c: Candidate, limit: int) -> int:
    """min(keys of `c`, limit), remembered for `_COUNTS_TTL_S` per store and driver: a count only steers which
    of several plans with the same rows runs, so one a few seconds old does as well (a month of one unit's
    Encounters, asked again and again, skips two ~0.5 ms probes). A count below its limit answers any limit."""
    key = (_store(db), c.sql, tuple(tuple(p) if isinstance(p, list) else p for p in c.params))  # PG arrays
    now = time.monotonic()
    hit = _COUNTS.get(key)
    if hit is not None and now - hit[0] < _COUNTS_TTL_S and (hit[2] < hit[1] or hit[1] >= limit):
        return min(hit[2], limit)
    n = int(db.fetch(f"SELECT count(*) FROM ({c.sql} LIMIT {limit}) p", c.params)[0][0])
    if len(_COUNTS) > 10_000:
        _COUNTS.clear()
    _COUNTS[key] = (now, limit, n)
    return n


_MULTIVALUED: dict[int, tuple[float, frozenset[tuple[int, str]]]] = {}
_MULTIVALUED_TTL_S = 60.0


def _multivalued(db: Fetcher) -> frozenset[tuple[int, str]]:
    """The (param, type) pairs with rows written before schema v20 holding several dates where R4 allows one
    (migration 0020), read at most once a minute per store: a reindex only ever removes pairs."""
    key = _store(db)
    now = time.monotonic()
    hit = _MULTIVALUED.get(key)
    if hit is None or now - hit[0] >= _MULTIVALUED_TTL_S:
        rows = db.fetch("SELECT param, type FROM date_multivalued", [])
        hit = (now, frozenset((int(p), str(t)) for p, t in rows))
        _MULTIVALUED[key] = hit
    return hit[1]


_TYPE_ROWS: dict[tuple[int, str], tuple[float, int, int]] = {}  # (store, type) -> (time, cap, rows)
_TYPE_ROWS_TTL_S = 60.0


def _type_rows(db: Fetcher, type_: str, cap: int) -> int:
    """min(rows of `type_`, cap), counted at most once a minute per store and type for a cap it answers: it
    only steers the choice between two plans that return the same rows."""
    key = (_store(db), type_)
    now = time.monotonic()
    hit = _TYPE_ROWS.get(key)
    if hit is not None and now - hit[0] < _TYPE_ROWS_TTL_S and (hit[2] < hit[1] or hit[1] >= cap):
        return min(hit[2], cap)
    rows = int(db.fetch(f"SELECT count(*) FROM (SELECT 1 FROM resources t WHERE t.type = ? LIMIT {cap}) p",
                        [type_])[0][0])
    if len(_TYPE_ROWS) > 1000:
        _TYPE_ROWS.clear()
    _TYPE_ROWS[key] = (now, cap, rows)
    return rows


def driver(node: Node, db: Fetcher) -> tuple[str, list[Any]] | None:
    """`SELECT ... res` of exactly the keys matching `node` (what `exists_sql` accepts), or None.

    A positive leaf drives through its index range (`sql.driver_sql`). A chain drives when its inner
    node can: the matching targets, then the references to them. A `_has` likewise: the matching
    referring resources, then the resources they point at. Without this, a selective chain or `_has`
    walked the whole type index checking the join per row. The joins are written as CROSS JOINs so
    SQLite (which has no statistics) keeps this order; PostgreSQL plans them as inner joins."""
    leaf = driver_sql(node, db)
    if leaf is not None and isinstance(node, Criterion) and node.param.type == "date" and node.modifier is None:
        bound = date_upper(node)
        if bound is not None:  # close the index range: the (param, lo) scan stops at the search range's end
            return f"{leaf[0]} AND x.lo <= ?", [*leaf[1], bound]
    if leaf is not None or not isinstance(node, Chain | Has):
        return leaf
    if isinstance(node, Has):
        inner = driver(node.inner, db)
        if inner is None:
            return None
        isql, ips = inner
        guard, gps = has_guard(node, "ht")
        return (f"SELECT h2.pk AS res FROM ({isql}) hi CROSS JOIN resources ht CROSS JOIN idx_reference hx"
                f" CROSS JOIN resources h2 WHERE ht.pk = hi.res AND ht.type = ? AND ht.deleted = 0{guard}"
                f" AND hx.res = ht.pk AND hx.param = ? AND h2.ref = hx.ref AND h2.type = hx.target_type"
                f" AND h2.id = hx.target", [*ips, node.type, *gps, node.param.id])
    parts: list[str] = []
    params: list[Any] = []
    for target, inner_node in node.targets:
        inner = driver(inner_node, db)
        if inner is None:
            return None
        isql, ips = inner
        parts.append(f"SELECT cx.res FROM ({isql}) ci CROSS JOIN resources ct CROSS JOIN idx_reference cx"
                     f" WHERE ct.pk = ci.res AND ct.type = ? AND ct.deleted = 0 AND cx.param = ?"
                     f" AND cx.ref = ct.ref AND cx.target_type = ct.type AND cx.target = ct.id")
        params += [*ips, target, node.param.id]
    return " UNION ALL ".join(parts), params
