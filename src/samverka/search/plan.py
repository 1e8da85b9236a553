"""Plan and run a search: choose where to start, order, page with a cursor, count.

https://hl7.org/fhir/R4/search.html

Every criterion becomes a correlated `EXISTS` on the resources row (`sql.exists_sql`). What differs
is where the scan starts:
- **driven**: a positive leaf whose index range holds fewer than `PROBE_LIMIT` keys (found by a
  bounded probe of each candidate) supplies the candidate keys; the rest are checked per candidate;
- **walk**: otherwise the plan walks the type's `(type, pk)` index in key order and checks every
  criterion per row, which stops as soon as a page is full -- large result sets page fast.
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
from .params import Registry, SearchParam
from .query import Query
from .sql import driver_sql, exists_sql

PROBE_LIMIT = 2000
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
        driver = driver_sql(node, db)
        if driver is None:
            continue
        sql, ps = driver
        n = int(db.fetch(f"SELECT count(*) FROM ({sql} LIMIT {PROBE_LIMIT}) p", ps)[0][0])
        probes[getattr(node, "raw_name", "?")] = n
        if n < PROBE_LIMIT and (best is None or n < best[0]):
            best = (n, i)
    source = "resources r"
    strategy = "walk the type index in key order"
    for i, node in enumerate(query.criteria):
        if best is not None and i == best[1]:
            sql, ps = driver_sql(node, db)  # type: ignore[misc]
            source = f"(SELECT DISTINCT d.res FROM ({sql}) d) m JOIN resources r ON r.pk = m.res"
            params = [*ps, *params]
            strategy = f"driven by {getattr(node, 'raw_name', '?')} ({best[0]} candidate keys)"
            continue
        cond, ps = exists_sql(node, "r", db=db)
        where.append(cond)
        params += ps
    sort = sort_keys(registry, query)
    return Plan(source, where, params, sort, strategy, probes)


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
    return {"strategy": plan.strategy, "probes": plan.probes, "sql": sql,
            "parameters": [p if isinstance(p, int | float | str) else repr(p) for p in params],
            "databasePlan": db_plan}
