"""Plan and run a search: choose where to start, order, page with a cursor, count.

https://hl7.org/fhir/R4/search.html

Every criterion becomes a correlated `EXISTS` on the resources row (`sql.exists_sql`). What differs
is where the scan starts:
- **driven**: a positive leaf whose index range holds fewer than `PROBE_LIMIT` keys (found by a
  bounded probe of each candidate) supplies the candidate keys; the rest are checked per candidate.
  A chain or `_has` whose inner node can drive drives too (`_has` under `HAS_PROBE_LIMIT`), and so
  does a `_lastUpdated` window or a wide exact driver (`drive`: which candidates, probed how);
- **walk**: otherwise the plan walks the type's `(type, pk)` index in key order and checks every
  criterion per row, which stops as soon as a page is full -- large result sets page fast.
A full count (`_total=accurate`) of a walked plan starts from an exact token/reference/uri criterion instead
(on PostgreSQL, when it is the whole query, hash-joined to the type's keys rather than looked up one by one).
Paging is by cursor (keyset): the next link carries the sort key and `pk` of the last row, so page 50
costs what page 1 does, and rows changing meanwhile never shift the pages.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ..errors import invalid
from ..fhir.instant import format_instant
from ..store import Version
from ..store.base import Dialect
from . import drive
from .params import Registry, SearchParam
from .query import Criterion, Query
from .sql import Leaf, exists_sql, leaf, merged_exists

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
    notes: list[str] = field(default_factory=list)  # probes skipped or bounded, second looks (for `_explain`)


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
    choice = drive.choose(db, query, drive.candidates(db, query))
    sort = sort_keys(registry, query)
    if choice.driver is not None:
        d = choice.driver
        source, extra, extra_params = _assemble(db, query, d)
        kind = "candidate keys, a superset: every criterion checked" if d.index is None else "candidate keys"
        return Plan(source, where + extra, [*extra_params[0], *params, *extra_params[1]], sort,
                    f"driven by {d.name} ({choice.keys} {kind})", choice.probes, notes=choice.notes)
    source, extra, extra_params = _assemble(db, query, None)
    plan = Plan(source, where + extra, [*params, *extra_params[1]], sort, "walk the type index in key order",
                choice.probes, notes=choice.notes)
    counter = _count_driver(query)
    if counter is not None:  # a full count scans every match anyway: start it from an index, not every row of the type
        node = query.criteria[counter]
        csql, cps = drive.driver(node, db)  # type: ignore[misc]
        if (getattr(db, "dialect", None) == "postgresql" and not filters and not query.list_ids
                and len(query.criteria) == 1 and query.type is not None):
            # PostgreSQL estimates a hashed code's rows badly (1.2k for 31k) and then joins each of 100k+
            # keys to `resources` by a nested loop (0.6-1 s); the fenced type subquery (OFFSET 0) can only be
            # hash-joined: one index-only pass over the type's keys. Index rows exist only for current,
            # non-deleted resources, so `deleted` needs no check here.
            plan.count_plan = Plan("(SELECT t.pk FROM resources t WHERE t.type = ? OFFSET 0) r", [f"r.pk IN ({csql})"],
                                   [query.type, *cps], sort,
                                   f"count driven by {node.raw_name}, hash-joined to the {query.type} keys",
                                   choice.probes)
            return plan
        cand = drive.Candidate(counter, node.raw_name, csql, list(cps), drive.EXACT, drive.PROBE_LIMIT, True)
        csource, cextra, cparams = _assemble(db, query, cand)
        plan.count_plan = Plan(csource, where + cextra, [*cparams[0], *params, *cparams[1]], sort,
                               f"count driven by {node.raw_name}", choice.probes)
    return plan


def driven_by(db: Fetcher, registry: Registry, query: Query, by: int) -> tuple[str, list[str], list[Any]]:
    """(source, where, params) selecting every match of `query` (alias `r`), started from criterion `by`'s
    index whatever its size: for sets read whole (PDL's care relationships), where walking the type in key
    order -- the paging plan when no probe is small -- reads every row of the type. The driver's keys are
    exactly `by`'s matches (as when `build` picks it); the other criteria are checked per row. Falls back
    to `build` when `by` cannot drive."""
    found = drive.driver(query.criteria[by], db)
    if found is None:
        p = build(db, registry, query)
        return p.source, p.where, p.params
    name = getattr(query.criteria[by], "raw_name", "driver")
    cand = drive.Candidate(by, name, found[0], list(found[1]), drive.EXACT, drive.PROBE_LIMIT, True)
    source, extra, (sps, eps) = _assemble(db, query, cand)
    typed = ["r.type = ?"] if query.type else []
    return source, ["r.deleted = 0", *typed, *extra], [*sps, *([query.type] if query.type else []), *eps]


def _assemble(db: Fetcher, query: Query, driver: drive.Candidate | None
              ) -> tuple[str, list[str], tuple[list[Any], list[Any]]]:
    """(source, EXISTS conditions, (source params, condition params)) starting from `driver`: its own
    criterion is dropped (its keys are exactly the matches), a superset driver's are all kept."""
    source, source_params = "resources r", []
    where: list[str] = []
    params: list[Any] = []
    if driver is not None:
        source = f"(SELECT DISTINCT d.res FROM ({driver.sql}) d) m JOIN resources r ON r.pk = m.res"
        source_params = list(driver.params)
    # PostgreSQL turns an EXISTS into a semi-join planned from its (poor) estimates of hashed codes: a patient's
    # 363 keys merge-joined with all 19k rows of a code (20 ms) instead of 363 key lookups. With OFFSET 0 it
    # stays a per-candidate check, which is what a driven plan is for (SQLite plans it that way anyway).
    fence = driver is not None and getattr(db, "dialect", None) == "postgresql"
    # checked on the driver's key before the resources row is read, when that row's type is certain anyway
    on_key = driver is not None and (driver.typed or (driver.index is not None
                                                       and _of_type(query.criteria[driver.index], query.type)))
    merged = _merged_leaves(db, query, driver) if fence else {}
    for i, node in enumerate(query.criteria):
        if driver is not None and i == driver.index:
            continue
        if i in merged:
            if not merged[i]:
                continue  # part of a group checked at its first member
            cond, ps = merged_exists(merged[i], "r")
        else:
            cond, ps = exists_sql(node, "r", db=db)
        if on_key and isinstance(node, Criterion):  # SQLite evaluates it at the materialized key (-30%)
            cond = cond.replace("x0.res = r.pk", "x0.res = m.res")
        if fence and cond.startswith(("EXISTS (SELECT", "NOT EXISTS (SELECT")) and cond.endswith(")"):
            cond = cond[:-1] + " OFFSET 0)"
        where.append(cond)
        params += ps
    return source, where, (source_params, params)


def _merged_leaves(db: Fetcher, query: Query, driver: drive.Candidate | None) -> dict[int, list[Leaf]]:
    """PostgreSQL, driven plans: criteria checked per candidate that are positive leaves on the same parameter
    and index table, grouped for `sql.merged_exists` (the first index of a group maps to its leaves, the
    others to an empty list)."""
    checked = [(i, node) for i, node in enumerate(query.criteria)
               if isinstance(node, Criterion) and (driver is None or i != driver.index)]
    repeated = Counter(node.param.id for _i, node in checked)
    groups: dict[tuple[str, int], list[tuple[int, Leaf]]] = {}
    for i, node in checked:
        if repeated[node.param.id] < 2:
            continue  # alone on its parameter: exists_sql builds its leaf (building it here too would be waste)
        lf = leaf(node, db)
        if isinstance(lf, Leaf) and not lf.negate:
            groups.setdefault((lf.table, lf.param), []).append((i, lf))
    out: dict[int, list[Leaf]] = {}
    for members in groups.values():
        if len(members) > 1:
            out[members[0][0]] = [lf for _i, lf in members]
            out.update({i: [] for i, _lf in members[1:]})
    return out


_RESOURCE_LEVEL = {"Resource", "DomainResource"}


def _of_type(node: object, type_: str | None) -> bool:
    """True when every key `node` drives from is of type `type_` (a parameter of that type alone)."""
    return isinstance(node, Criterion) and type_ is not None and node.param.base == (type_,)


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
    keys = ", ".join(f"{k.expr} AS k{i}" for i, k in enumerate(plan.sort))
    key_params = [p for k in plan.sort for p in k.params]
    outer = ", ".join(f"k.k{i} {'DESC' if k.descending != backwards else 'ASC'}" for i, k in enumerate(plan.sort))
    # the page's keys first, then its versions: joining history (and its JSON) inside the ORDER BY ... LIMIT
    # read the body of every match before sorting (1,100 bodies for a 20-row page of a common code)
    sql = (f"SELECT r.type, r.id, h.version, h.last_updated, h.method, h.data, r.compartment,"
           f" {', '.join(f'k.k{i}' for i in range(len(plan.sort)))}"
           f" FROM (SELECT r.pk AS pk, r.seq AS seq, {keys} FROM {plan.source} WHERE {' AND '.join(where)}"
           f" ORDER BY {order} LIMIT ?) k JOIN resources r ON r.pk = k.pk JOIN history h ON h.seq = k.seq"
           f" ORDER BY {outer}")
    rows = db.fetch(sql, [*key_params, *params, *order_params, count + 1])
    more = len(rows) > count
    rows = rows[:count]
    if backwards:
        rows.reverse()
    out = [Version(t, i, v, format_instant(ts), m, bytes(d) if d is not None else None, c)
           for t, i, v, ts, m, d, c, *_ in rows]
    first = list(rows[0][7:]) if rows else None
    last = list(rows[-1][7:]) if rows else None
    return Page(out, first, last, more)


def count(db: Fetcher, plan: Plan) -> int:
    plan = plan.count_plan or plan
    sql = f"SELECT count(*) FROM {plan.source}" + (f" WHERE {' AND '.join(plan.where)}" if plan.where else "")
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
    if plan.notes:
        out["notes"] = plan.notes
    if plan.count_plan is not None:
        out["countStrategy"] = plan.count_plan.strategy
    return out
