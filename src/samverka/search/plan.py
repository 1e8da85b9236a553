"""Plan and run a search: choose where to start, order, page with a cursor, count.

https://hl7.org/fhir/R4/search.html

Every criterion becomes a correlated `EXISTS` on the resources row (`sql.exists_sql`). What differs
is where the scan starts:
- **driven**: a positive leaf whose index range holds fewer than `PROBE_LIMIT` keys (found by a
  bounded probe of each candidate) supplies the candidate keys; the rest are checked per candidate.
  A chain or `_has` whose inner node can drive drives too (`_has` under `HAS_PROBE_LIMIT`);
- **walk**: otherwise the plan walks the type's `(type, pk)` index in key order and checks every
  criterion per row, which stops as soon as a page is full -- large result sets page fast.
A full count (`_total=accurate`) of a walked plan starts from an exact token/reference/uri criterion instead.
Paging is by cursor (keyset): the next link carries the sort key and `pk` of the last row, so page 50
costs what page 1 does, and rows changing meanwhile never shift the pages.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ..errors import invalid
from ..fhir.instant import format_instant
from ..store import Version
from ..store.base import Dialect
from . import normalize
from .params import Registry, SearchParam
from .query import Chain, Criterion, Has, Node, Query
from .sql import driver_sql, exists_sql

PROBE_LIMIT = 2000
# A `_has` key costs three random lookups (referring row, its reference row, the resource it points at),
# a leaf key one index step: on 1M Synthea resources a `_has` over more than ~700 referring rows paged
# faster by walking the (small) target type, one under ~300 rows up to 300x faster driven.
HAS_PROBE_LIMIT = 500
_SORT_TABLES = {"date": ("idx_date", "lo", "hi"), "number": ("idx_number", "lo", "hi"),
                "quantity": ("idx_quantity", "lo", "hi"), "string": ("idx_string", "norm", "norm"),
                "uri": ("idx_uri", "uri", "uri"), "reference": ("idx_reference", "target", "target")}
# what a missing sort value sorts as: after every real value ascending, before every one descending
_LAST = {"date": 2**62, "number": 1e308, "quantity": 1e308, "string": "\U0010ffff", "uri": "\U0010ffff",
         "reference": "\U0010ffff", "_id": "\U0010ffff", "_lastUpdated": 2**62}
_FIRST = {"date": -(2**62), "number": -1e308, "quantity": -1e308, "string": "", "uri": "", "reference": "",
          "_id": "", "_lastUpdated": -(2**62)}


class Fetcher(Protocol):
    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class SortKey:
    expr: str  # SQL over the alias r, never NULL
    params: tuple[Any, ...]
    descending: bool
    name: str


@dataclass
class Plan:
    """The FROM/WHERE of a search, the sort keys and how it was chosen (for `_explain`)."""

    source: str
    where: list[str]
    params: list[Any]
    sort: list[SortKey]
    strategy: str
    probes: dict[str, int] = field(default_factory=dict)
    count_plan: Plan | None = None  # how `count` runs when it differs (a walked plan counted from an index)


def build(db: Fetcher, registry: Registry, query: Query, filters: Sequence[tuple[str, Sequence[Any]]] = ()) -> Plan:
    """Plan `query`; `filters` are extra conditions on alias `r` (access policies plug in here)."""
    where: list[str] = ["r.deleted = 0"]
    params: list[Any] = []
    types = [query.type] if query.type else list(query.types)
    if types:
        where.append(f"r.type IN ({', '.join('?' for _ in types)})")
        params += types
    for cond, ps in filters:
        where.append(cond)
        params += ps
    if query.list_ids:
        where.append(_list_condition(registry, query.list_ids, params))
    probes: dict[str, int] = {}
    best: tuple[int, int] | None = None
    for i, node in enumerate(query.criteria):
        driver = _driver(node, db)
        if driver is None:
            continue
        sql, ps = driver
        limit = HAS_PROBE_LIMIT if isinstance(node, Has) else PROBE_LIMIT
        n = int(db.fetch(f"SELECT count(*) FROM ({sql} LIMIT {limit}) p", ps)[0][0])
        probes[getattr(node, "raw_name", "?")] = n
        if n < limit and (best is None or n < best[0]):
            best = (n, i)
    sort = sort_keys(registry, query)
    if best is not None:
        source, extra, extra_params = _assemble(db, query, best[1])
        strategy = f"driven by {getattr(query.criteria[best[1]], 'raw_name', '?')} ({best[0]} candidate keys)"
        return Plan(source, where + extra, [*extra_params[0], *params, *extra_params[1]], sort, strategy, probes)
    source, extra, extra_params = _assemble(db, query, None)
    plan = Plan(source, where + extra, [*params, *extra_params[1]], sort, "walk the type index in key order", probes)
    counter = _count_driver(query)
    if counter is not None:  # a full count scans every match anyway: start it from an index, not every row of the type
        csource, cextra, cparams = _assemble(db, query, counter)
        plan.count_plan = Plan(csource, where + cextra, [*cparams[0], *params, *cparams[1]], sort,
                               f"count driven by {getattr(query.criteria[counter], 'raw_name', '?')}", probes)
    return plan


def _assemble(db: Fetcher, query: Query, driven: int | None) -> tuple[str, list[str], tuple[list[Any], list[Any]]]:
    """(source, EXISTS conditions, (source params, condition params)) with criterion `driven` as the source."""
    source, source_params = "resources r", []
    where: list[str] = []
    params: list[Any] = []
    for i, node in enumerate(query.criteria):
        if i == driven:
            sql, ps = _driver(node, db)  # type: ignore[misc]
            source = f"(SELECT DISTINCT d.res FROM ({sql}) d) m JOIN resources r ON r.pk = m.res"
            source_params = list(ps)
            continue
        cond, ps = exists_sql(node, "r", db=db)
        where.append(cond)
        params += ps
    return source, where, (source_params, params)


_RESOURCE_LEVEL = {"Resource", "DomainResource"}


def _count_driver(query: Query) -> int | None:
    """The criterion a full count of a walked plan starts from: an exact token, reference or uri value on a
    parameter of specific types. Its rows are (nearly) all of the searched type and all match, so it
    reads no more rows than the walk (which reads every row of the type) and usually far fewer.
    Resource-level parameters (`_tag`, `_profile`, ...) and ranges (dates, string prefixes) may hold
    many more rows than the type, so they never drive a count."""
    for i, node in enumerate(query.criteria):
        if (isinstance(node, Criterion) and node.param.type in ("token", "reference", "uri")
                and node.param.code != "_id" and not (set(node.param.base) & _RESOURCE_LEVEL)
                and (node.modifier is None or (node.param.type == "reference" and node.modifier[:1].isupper()))):
            return i
    return None


def _driver(node: Node, db: Fetcher) -> tuple[str, list[Any]] | None:
    """`SELECT ... res` of exactly the keys matching `node` (what `exists_sql` accepts), or None.

    A positive leaf drives through its index range (`sql.driver_sql`). A chain drives when its inner
    node can: the matching targets, then the references to them. A `_has` likewise: the matching
    referring resources, then the resources they point at. Without this, a selective chain or `_has`
    walked the whole type index checking the join per row. The joins are written as CROSS JOINs so
    SQLite (which has no statistics) keeps this order; PostgreSQL plans them as inner joins."""
    leaf = driver_sql(node, db)
    if leaf is not None and isinstance(node, Criterion) and node.param.type == "date" and node.modifier is None:
        bound = _date_upper(node)
        if bound is not None:  # close the index range: the (param, lo) scan stops at the search range's end
            return f"{leaf[0]} AND x.lo <= ?", [*leaf[1], bound]
    if leaf is not None or not isinstance(node, Chain | Has):
        return leaf
    if isinstance(node, Has):
        inner = _driver(node.inner, db)
        if inner is None:
            return None
        isql, ips = inner
        return (f"SELECT h2.pk AS res FROM ({isql}) hi CROSS JOIN resources ht CROSS JOIN idx_reference hx"
                f" CROSS JOIN resources h2 WHERE ht.pk = hi.res AND ht.type = ? AND ht.deleted = 0"
                f" AND hx.res = ht.pk AND hx.param = ? AND h2.ref = hx.ref AND h2.type = hx.target_type"
                f" AND h2.id = hx.target", [*ips, node.type, node.param.id])
    parts: list[str] = []
    params: list[Any] = []
    for target, inner_node in node.targets:
        inner = _driver(inner_node, db)
        if inner is None:
            return None
        isql, ips = inner
        parts.append(f"SELECT cx.res FROM ({isql}) ci CROSS JOIN resources ct CROSS JOIN idx_reference cx"
                     f" WHERE ct.pk = ci.res AND ct.type = ? AND ct.deleted = 0 AND cx.param = ?"
                     f" AND cx.ref = ct.ref AND cx.target_type = ct.type AND cx.target = ct.id")
        params += [*ips, target, node.param.id]
    return " UNION ALL ".join(parts), params


def _date_upper(node: Criterion) -> int | None:
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


def _list_condition(registry: Registry, ids: list[str], params: list[Any]) -> str:
    item = registry.get("List", "item")
    if item is None:
        raise invalid("_list needs the List.item search parameter", "_list")
    params += [item.id, *ids]
    marks = ", ".join("?" for _ in ids)
    return ("r.ref IN (SELECT lx.ref FROM idx_reference lx JOIN resources l ON l.pk = lx.res"
            f" WHERE lx.param = ? AND l.type = 'List' AND l.deleted = 0 AND l.id IN ({marks}))")


def sort_keys(registry: Registry, query: Query) -> list[SortKey]:
    keys: list[SortKey] = []
    for raw in query.result.get("_sort", []):
        for name in (n.strip() for n in raw.split(",") if n.strip()):
            desc = name.startswith("-")
            code = name.lstrip("-")
            keys.append(_sort_key(registry, query, code, desc, name))
    keys.append(SortKey("r.pk", (), False, "pk"))
    return keys


def _sort_key(registry: Registry, query: Query, code: str, desc: bool, name: str) -> SortKey:
    missing = _FIRST if desc else _LAST
    if code == "_id":
        return SortKey("r.id", (), desc, name)
    if code == "_lastUpdated":
        return SortKey("r.last_updated", (), desc, name)
    param: SearchParam | None = registry.get(query.type or "Resource", code)
    if param is None:
        raise invalid(f"_sort: unknown search parameter {code!r}", "_sort")
    table = _SORT_TABLES.get(param.type)
    if table is None:
        raise invalid(f"_sort on {param.type} parameter {code!r} is not supported", "_sort", "not-supported")
    tbl, lo, hi = table
    agg, col = ("max", hi) if desc else ("min", lo)
    expr = f"COALESCE((SELECT {agg}(s.{col}) FROM {tbl} s WHERE s.res = r.pk AND s.param = ?), ?)"
    return SortKey(expr, (param.id, missing[param.type]), desc, name)


def _order_by(sort: list[SortKey], reverse: bool = False) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for k in sort:
        parts.append(f"{k.expr} {'DESC' if k.descending != reverse else 'ASC'}")
        params += k.params
    return ", ".join(parts), params


def _after(sort: list[SortKey], cursor: list[Any], before: bool = False) -> tuple[str, list[Any]]:
    """Keyset condition: the row sorts strictly after (or before) the cursor, mixed directions expanded."""
    ors, params = [], []
    for i, key in enumerate(sort):
        ands, ps = [], []
        for prev, value in zip(sort[:i], cursor[:i], strict=True):
            ands.append(f"{prev.expr} = ?")
            ps += [*prev.params, value]
        ands.append(f"{key.expr} {'<' if key.descending != before else '>'} ?")
        ps += [*key.params, cursor[i]]
        ors.append("(" + " AND ".join(ands) + ")")
        params += ps
    return "(" + " OR ".join(ors) + ")", params


def encode_cursor(values: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


def decode_cursor(text: str) -> list[Any]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise invalid("_cursor is not a cursor this server issued", "_cursor") from exc
    if not isinstance(values, list) or not values:
        raise invalid("_cursor is not a cursor this server issued", "_cursor")
    return values


@dataclass
class Page:
    versions: list[Version]
    first_key: list[Any] | None  # sort key of the first row, for a `previous` cursor
    last_key: list[Any] | None  # sort key of the last row, for a `next` cursor
    more: bool  # more rows lie further in the direction of travel


def page(db: Fetcher, plan: Plan, count: int, cursor: list[Any] | None, backwards: bool = False) -> Page:
    """Up to `count` matches after `cursor` (before it when `backwards`; the last page when backwards
    without a cursor), returned in the search's order."""
    where, params = list(plan.where), list(plan.params)
    if cursor is not None:
        cond, ps = _after(plan.sort, cursor, before=backwards)
        where.append(cond)
        params += ps
    order, order_params = _order_by(plan.sort, reverse=backwards)
    keys = ", ".join(k.expr for k in plan.sort)
    key_params = [p for k in plan.sort for p in k.params]
    sql = (f"SELECT r.type, r.id, h.version, h.last_updated, h.method, h.data, {keys} FROM {plan.source}"
           f" JOIN history h ON h.seq = r.seq WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?")
    rows = db.fetch(sql, [*key_params, *params, *order_params, count + 1])
    more = len(rows) > count
    rows = rows[:count]
    if backwards:
        rows.reverse()
    out = [Version(t, i, v, format_instant(ts), m, bytes(d) if d is not None else None)
           for t, i, v, ts, m, d, *_ in rows]
    first = list(rows[0][6:]) if rows else None
    last = list(rows[-1][6:]) if rows else None
    return Page(out, first, last, more)


def count(db: Fetcher, plan: Plan) -> int:
    plan = plan.count_plan or plan
    sql = f"SELECT count(*) FROM {plan.source} WHERE {' AND '.join(plan.where)}"
    return int(db.fetch(sql, plan.params)[0][0])


def explain(db: Fetcher, dialect: Dialect, plan: Plan, count_: int) -> dict[str, Any]:
    """The SQL, its bound values, the chosen strategy, the probes and the database's own plan."""
    order, order_params = _order_by(plan.sort)
    keys = ", ".join(k.expr for k in plan.sort)
    key_params = [p for k in plan.sort for p in k.params]
    sql = (f"SELECT r.pk, {keys} FROM {plan.source} WHERE {' AND '.join(plan.where)} ORDER BY {order} LIMIT ?")
    params = [*key_params, *plan.params, *order_params, count_ + 1]
    prefix = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
    db_plan = [" ".join(str(c) for c in row) for row in db.fetch(prefix + sql, params)]
    out = {"strategy": plan.strategy, "probes": plan.probes, "sql": sql,
            "parameters": [p if isinstance(p, int | float | str) else repr(p) for p in params],
            "databasePlan": db_plan}
    if plan.count_plan is not None:
        out["countStrategy"] = plan.count_plan.strategy
    return out
