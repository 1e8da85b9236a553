"""Date windows: the (param, lo) ranges that hold every row a set of date criteria can match.

https://hl7.org/fhir/R4/search.html#date -- a date criterion compares the search range [a, b] with a row's
range [lo, hi] (`sql_values.compare`). `ge`/`gt` bound `lo` from below only given the row's span (a row
with `hi > b` may start at any time before), `le`/`lt`/`eb` bound it from above (`lo_bounds`). So a window
such as `date=ge2015-03-01&date=lt2015-04-01` is one closed `lo` range per span class:
- `_lastUpdated`: the write path stamps exactly one row per resource, spanning 999 µs
  (`last_updated_window`);
- any other date parameter (`date_windows`): rows spanning under two days are read from the primary key
  (param, lo, hi, res), from two days before the window on; longer ones, about 0.5% of the rows (periods
  of weeks or years, open-ended ones), from the partial index `idx_date_long` (migration 0020), one range
  per span class of `SPAN_CLASS`.

A window is a *superset* of the matches: the criteria are still checked per row. Criteria on one
parameter may be combined into one window only when a resource of the searched type has at most one value
for it (`single_valued`): `date=ge2015&date=lt2012` matches a resource with two dates, 2010 and 2020, that
no single window holds.
"""

from __future__ import annotations

from typing import TypeGuard

from . import normalize
from .compile_extract import single_valued
from .params import Registry
from .query import Criterion, Query

# The write path stamps every resource with exactly one `_lastUpdated` row of millisecond precision
# (`interactions.writes.commit`: lo = the stamp, hi = lo + 999 µs), so a row's lo lies within 999 µs of hi;
# the same stamp is the resources row's `last_updated`.
LAST_UPDATED_SPAN_US = 999

_DAY_US = 86_400_000_000
SHORT_SPAN_US = 2 * _DAY_US  # rows spanning less are read from the primary key; `idx_date_long` holds the rest
# (class, every row of the class spans less than this; None: unbounded), as `SPAN_CLASS` numbers them
SPAN_CLASSES: tuple[tuple[int, int | None], ...] = (
    (1, 32 * _DAY_US), (2, 366 * _DAY_US), (3, 5844 * _DAY_US), (4, None))
# exactly the expression of `idx_date_long` (migration 0020), so that both databases use that index
SPAN_CLASS = ("CASE WHEN x.hi - x.lo < 2764800000000 THEN 1 WHEN x.hi - x.lo < 31622400000000 THEN 2"
              " WHEN x.hi - x.lo < 504921600000000 THEN 3 ELSE 4 END")
LONG_ROW = "x.hi - x.lo >= 172800000000"  # the partial index's predicate, repeated so it applies
_UNBOUNDED_SPAN = normalize.DATE_MAX_US - normalize.DATE_MIN_US


def lo_bounds(prefix: str | None, a: int, b: int, span: int) -> tuple[int | None, int | None]:
    """(min, max) of the `lo` of a row matching one prefixed value [a, b], when rows satisfy hi - lo <= span
    (the prefix table of `sql_values`): None where the prefix leaves that side open."""
    p = prefix or "eq"
    if p == "eq":
        return a, b
    if p == "ge":  # lo >= a, or hi > b and so lo > b - span
        return min(a, b - span + 1), None
    if p == "gt":
        return b - span + 1, None
    if p == "sa":
        return b + 1, None
    if p == "le":  # lo < a, or hi <= b and so lo <= b
        return None, b
    if p in ("lt", "eb"):
        return None, a - 1
    return None, None  # ne, ap


def date_upper(node: Criterion) -> int | None:
    """An upper bound on a matching row's `lo`, implied by every value's prefix (`sql_values.compare`):
    eq needs lo >= a and hi <= b, le needs lo < a or hi <= b, lt and eb need lo (or hi) < a -- so lo <= b
    in each case. Without it, `date=2015-03-01` scanned the (param, lo) key from that day to the end."""
    bounds = []
    for v in node.values:
        if v.prefix not in (None, "eq", "le", "lt", "eb"):
            return None
        try:
            bounds.append(normalize.date_range(v.text)[1])
        except ValueError:
            return None
    return max(bounds) if bounds else None


def _window(nodes: list[Criterion], span: int) -> tuple[int, int] | None:
    """The (lowest lo, highest lo) of the rows spanning at most `span` that every node can match, when the
    nodes together bound both sides (each node's values widen it to their hull)."""
    lo: int | None = None
    hi: int | None = None
    for node in nodes:
        lows, highs = [], []
        for v in node.values:
            try:
                a, b = normalize.date_range(v.text)
            except ValueError:
                return None  # the criterion itself reports the bad value
            low, high = lo_bounds(v.prefix, a, b, span)
            lows.append(low)
            highs.append(high)
        if lows and None not in lows:
            m = min(x for x in lows if x is not None)
            lo = m if lo is None else max(lo, m)
        if highs and None not in highs:
            m = max(x for x in highs if x is not None)
            hi = m if hi is None else min(hi, m)
    return None if lo is None or hi is None else (lo, hi)


def is_last_updated(node: object) -> TypeGuard[Criterion]:
    return (isinstance(node, Criterion) and node.param == Registry.default().get("Resource", "_lastUpdated")
            and node.modifier is None)


def last_updated_window(query: Query) -> tuple[int, int, int] | None:
    """(param id, lowest lo, highest lo) of the rows every `_lastUpdated` criterion of `query` can match,
    when together they bound both sides; None otherwise."""
    std = Registry.default().get("Resource", "_lastUpdated")
    nodes = [n for n in query.criteria if is_last_updated(n)]
    found = _window(nodes, LAST_UPDATED_SPAN_US) if nodes else None
    if std is None or found is None:
        return None
    return std.id, found[0], found[1]


def date_windows(query: Query) -> list[tuple[int, str, str, list[int]]]:
    """(param id, name, `SELECT x.res ...`, params) of a window per date parameter (other than `_lastUpdated`)
    whose criteria bound both sides, for a search of one type that R4 allows one value of it
    (`single_valued`). The store may still hold several for rows written before schema v20: the caller
    drops those (param, type) pairs (`date_multivalued`, migration 0020)."""
    by_param: dict[int, list[Criterion]] = {}
    for node in query.criteria:
        if (isinstance(node, Criterion) and node.param.type == "date" and node.modifier is None
                and not is_last_updated(node)):
            by_param.setdefault(node.param.id, []).append(node)
    out: list[tuple[int, str, str, list[int]]] = []
    for pid, nodes in by_param.items():
        if len(nodes) < 2 or query.type is None or not single_valued(nodes[0].param, query.type):
            continue
        short = _window(nodes, SHORT_SPAN_US - 1)
        if short is None:
            continue
        parts = ["SELECT x.res FROM idx_date x WHERE x.param = ? AND x.lo >= ? AND x.lo <= ?"]
        params: list[int] = [pid, *short]
        for cls, below in SPAN_CLASSES:
            found = _window(nodes, _UNBOUNDED_SPAN if below is None else below - 1)
            if found is None or (below is not None and found[0] > found[1]):
                continue  # (the last class has no lower bound, so nothing to compare it with)
            cond = f"SELECT x.res FROM idx_date x WHERE x.param = ? AND {LONG_ROW} AND {SPAN_CLASS} = {cls}"
            if below is None:  # no lower bound: an offset may take a value a few hours past years 1-9999
                parts.append(f"{cond} AND x.lo <= ?")
                params += [pid, found[1]]
            else:
                parts.append(f"{cond} AND x.lo >= ? AND x.lo <= ?")
                params += [pid, *found]
        out.append((pid, f"{nodes[0].raw_name} window", " UNION ALL ".join(parts), params))
    return out
