"""Compile criteria into SQL over the index tables, always with bound parameters.

https://hl7.org/fhir/R4/search.html -- a leaf criterion is a condition on one index table (`Leaf`);
`exists_sql` turns any node into a correlated `EXISTS` on a resources alias, and `driver_sql` turns a
positive leaf into the set of matching keys a plan can start from. The same SQL runs on SQLite and
PostgreSQL (qmark placeholders; the PostgreSQL store rewrites them). The value compilers per type
(prefix ranges, tokens, quantities, composites) live in `sql_values`.

`db` (a store's `fetch`) is only needed by the terminology modifiers (`:in`, `:not-in`, `:above`,
`:below` on tokens), which look up ValueSet and CodeSystem resources stored in the server.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import invalid
from ..fhir.definitions import resource_types
from ..store.hashing import h64
from . import near, normalize
from .compile_convert import of_type_system
from .params import param_id
from .query import Chain, Criterion, Has, InCompartment, Node, Value
from .sql_values import COMPILERS, Cond, or_conds, token
from .terminology import Terminology, store_lookup

_TABLE = {
    "token": "idx_token", "string": "idx_string", "date": "idx_date", "number": "idx_number",
    "quantity": "idx_quantity", "reference": "idx_reference", "uri": "idx_uri", "composite": "idx_composite",
}
_MODIFIERS: dict[str, set[str | None]] = {
    "token": {None, "not", "text", "of-type", "in", "not-in", "above", "below"},
    "string": {None, "exact", "contains"},
    "reference": {None, "identifier"},  # plus :[type]
    "uri": {None, "above", "below"},
    "date": {None}, "number": {None}, "quantity": {None}, "composite": {None},
    "special": set(),  # `near` only (search.near); :missing below
}
_URL_PARAM = param_id("http://hl7.org/fhir/SearchParameter/conformance-url")
MAX_VALUE_CHARS = 8192


class Fetcher(Protocol):
    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class Leaf:
    """`param = ? AND (cond)` on `table` (columns prefixed `x.`); `negate` means NOT EXISTS."""

    table: str
    param: int
    cond: str
    params: tuple[Any, ...]
    negate: bool = False


@dataclass(frozen=True)
class Raw:
    """A condition on the resources alias itself (for `_id`), written with `{a}` for the alias."""

    cond: str
    params: tuple[Any, ...]


def _check_values(c: Criterion) -> None:
    for v in c.values:
        if "\x00" in v.text:
            raise invalid(f"{c.raw_name}: a search value may not contain NUL characters", c.raw_name)
        if len(v.text) > MAX_VALUE_CHARS:
            raise invalid(f"{c.raw_name}: a search value may be at most {MAX_VALUE_CHARS} characters long",
                          c.raw_name, "too-costly")


def leaf(c: Criterion, db: Fetcher | None = None, in_lists: bool = False) -> Leaf | Raw:
    p = c.param
    if not p.expression and p.code in _FULL_TEXT:
        _check_values(c)
        return _full_text(c)
    if p.code == "_query" and not p.expression:
        raise invalid(f"_query {c.values[0].text if c.values else ''!r}: this server defines no named queries",
                      c.raw_name, "not-supported")
    if p.type == "special" and p.code == "near" and c.modifier != "missing":
        _check_values(c)
        return Leaf("idx_number", p.id, *near.condition(c))
    allowed = _MODIFIERS.get(p.type)
    if allowed is None:
        raise invalid(f"search parameter {c.raw_name} of type {p.type} is not supported", c.raw_name, "not-supported")
    _check_values(c)
    if c.modifier == "missing" and p.type == "reference":
        # a Reference with only an identifier is indexed in idx_token under the same parameter id
        has = ("(EXISTS (SELECT 1 FROM idx_reference mr WHERE mr.res = {a}.pk AND mr.param = ?)"
               " OR EXISTS (SELECT 1 FROM idx_token mt WHERE mt.res = {a}.pk AND mt.param = ?))")
        return Raw(f"NOT {has}" if c.values[0].text == "true" else has, (p.id, p.id))
    if c.modifier == "missing":
        table = "idx_number" if p.type == "special" else _TABLE[p.type]
        return Leaf(table, p.id, "1 = 1", (), negate=c.values[0].text == "true")
    if p.code == "_id":
        if c.modifier not in (None, "not"):
            raise invalid(f"modifier :{c.modifier} is not supported on _id", c.raw_name)
        marks = ", ".join("?" for _ in c.values)
        op = "NOT IN" if c.modifier == "not" else "IN"
        return Raw(f"{{a}}.id {op} ({marks})", tuple(v.text for v in c.values))
    if p.type == "reference" and c.modifier == "identifier":
        # Reference.identifier values are indexed as token rows under the same parameter id
        return _leaf("idx_token", c, [token(c, v) for v in c.values])
    if p.type == "reference" and c.modifier and c.modifier[:1].isupper():
        if c.modifier not in resource_types() or (p.targets and c.modifier not in p.targets):
            raise invalid(f"{c.raw_name}: {c.modifier} is not a target type of {p.code}", c.raw_name)
        return _leaf("idx_reference", c, [reference(c, v, c.modifier) for v in c.values])
    if c.modifier not in allowed:
        raise invalid(f"modifier :{c.modifier} is not supported on {p.type} parameter {c.raw_name}", c.raw_name,
                      "not-supported")
    if p.type == "token":
        return _token_leaf(c, db, in_lists)
    compile_value = {"reference": reference, "uri": _uri}.get(p.type) or COMPILERS[p.type]
    return _leaf(_TABLE[p.type], c, [compile_value(c, v) for v in c.values])


_FULL_TEXT = {"_content": "samverka_content", "_text": "samverka_narrative"}  # fhir.text; migration 0018
_PHRASE = re.compile(r'"([^"]*)"|(\S+)')


def _full_text(c: Criterion) -> Raw:
    """`_content` / `_text` (https://hl7.org/fhir/R4/search.html#content): each value's words (or "quoted
    phrases") must all occur, accent- and case-insensitively, in the resource's string values (its
    narrative for `_text`); `,` is OR. Matched per row against the stored JSON: not indexed, so such a
    search is as fast as the other criteria beside it make it."""
    fn = _FULL_TEXT[c.param.code]
    if c.modifier == "missing":
        op = "IS NULL" if c.values[0].text == "true" else "IS NOT NULL"
        return Raw(f"EXISTS (SELECT 1 FROM history ft WHERE ft.seq = {{a}}.seq AND {fn}(ft.data) {op})", ())
    if c.modifier not in (None, "contains"):
        raise invalid(f"modifier :{c.modifier} is not supported on {c.raw_name}", c.raw_name, "not-supported")
    ors: list[str] = []
    params: list[Any] = []
    for v in c.values:
        terms = [normalize.norm_string(a or b) for a, b in _PHRASE.findall(v.text)]
        terms = [t for t in terms if t]
        if not terms:
            raise invalid(f"{c.raw_name}: give at least one word to look for", c.raw_name)
        ors.append("(" + " AND ".join(f"{fn}(ft.data) LIKE ? ESCAPE '\\'" for _ in terms) + ")")
        params += ["%" + re.sub(r"([\\%_])", r"\\\1", t) + "%" for t in terms]
    return Raw(f"EXISTS (SELECT 1 FROM history ft WHERE ft.seq = {{a}}.seq AND ({' OR '.join(ors)}))",
               tuple(params))


def _leaf(table: str, c: Criterion, conds: list[Cond], negate: bool = False) -> Leaf:
    cond, params = or_conds(conds)
    return Leaf(table, c.param.id, cond, params, negate)


def _token_leaf(c: Criterion, db: Fetcher | None, in_lists: bool) -> Leaf:
    m = c.modifier
    if m == "text":
        conds: list[Cond] = []
        for v in c.values:
            norm = normalize.norm_string(v.text)
            conds.append(("x.text >= ? AND x.text < ?", [norm, norm + "\U0010ffff"]))  # string starts-with
        return _leaf("idx_token_text", c, conds)
    if m == "of-type":
        return _leaf("idx_token", c, [_of_type(c, v) for v in c.values])
    if m in ("in", "not-in", "above", "below"):
        term = Terminology(store_lookup(db.fetch, _URL_PARAM) if db is not None else None)
        if m in ("in", "not-in"):
            return _leaf("idx_token", c, [_in_value_set(c, v, term) for v in c.values], negate=m == "not-in")
        return _leaf("idx_token", c, [_subsumed(c, v, term, m) for v in c.values])
    if in_lists:
        return _leaf("idx_token", c, _tokens(c), negate=m == "not")
    return _leaf("idx_token", c, [token(c, v) for v in c.values], negate=m == "not")


def _tokens(c: Criterion) -> list[Cond]:
    """For a driver: one condition per value, except that `system|code` values of one system become one
    `x.system = ? AND x.code IN (...)`, so the (param, code, system, res) key is read in a few short ranges
    (an OR of pairs made SQLite scan every row of the parameter, e.g. to count four common codes). A
    per-row check keeps the OR: PostgreSQL estimates `code = ANY(...)` as a few thousand rows and then
    merge-joins a walk with all of them, sorted (93 ms instead of 3 ms for a first page)."""
    by_system: dict[str, list[str]] = {}
    conds: list[Cond] = []
    for v in c.values:
        system, sep, code = v.text.partition("|")
        if sep and system and code:
            by_system.setdefault(system, []).append(code)
        else:
            conds.append(token(c, v))
    for system, codes in by_system.items():
        if len(codes) == 1:
            conds.append(token(c, Value(None, f"{system}|{codes[0]}")))
        else:
            marks = ", ".join("?" for _ in codes)
            conds.append((f"x.system = ? AND x.code IN ({marks})", [h64(system), *(h64(code) for code in codes)]))
    return conds


def _of_type(c: Criterion, v: Value) -> Cond:
    parts = v.text.split("|")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise invalid(f"{c.raw_name}: {v.text!r} is not type-system|type-code|value", c.raw_name)
    return "x.system = ? AND x.code = ?", [of_type_system(parts[0], parts[1]), h64(parts[2])]


def _codes_in(system: str, codes: set[str] | list[str]) -> Cond:
    """Codes of `system`; a row without a system (a `code` element, whose system is implied) counts too."""
    ordered = sorted(codes)
    return (f"x.system IN (?, 0) AND x.code IN ({', '.join('?' for _ in ordered)})",
            [h64(system), *(h64(code) for code in ordered)])


def _in_value_set(c: Criterion, v: Value, term: Terminology) -> Cond:
    exp = term.expand(v.text, c.raw_name)
    by_system: dict[str, set[str]] = {}
    for system, code in exp.codes:
        by_system.setdefault(system, set()).add(code)
    conds = [_codes_in(s, codes) for s, codes in sorted(by_system.items())]
    for system in sorted(exp.systems):
        excluded = sorted(code for s, code in exp.excluded if s == system)
        if excluded:
            conds.append((f"x.system = ? AND x.code NOT IN ({', '.join('?' for _ in excluded)})",
                          [h64(system), *(h64(code) for code in excluded)]))
        else:
            conds.append(("x.system = ?", [h64(system)]))
    if not conds:
        return "1 = 0", []
    cond, params = or_conds(conds)
    return cond, list(params)


def _subsumed(c: Criterion, v: Value, term: Terminology, modifier: str) -> Cond:
    system, sep, code = v.text.partition("|")
    if not sep or not system or not code:
        raise invalid(f"{c.raw_name}:{modifier} needs system|code, not {v.text!r}", c.raw_name)
    codes = term.below(system, code) if modifier == "below" else term.above(system, code)
    return _codes_in(system, codes)


def reference(c: Criterion, v: Value, type_: str | None = None) -> Cond:
    text = v.text
    if type_ is not None and "/" not in text:
        return "x.ref = ?", [h64(f"{type_}/{text}")]
    if "/" in text and not text.startswith(("http://", "https://", "urn:")):
        parts = text.split("/")
        if len(parts) >= 4 and parts[-2] == "_history":
            parts = parts[:-2]
        if not parts[-2] or not parts[-1]:
            raise invalid(f"{c.raw_name}: {text!r} is not an id, Type/id or absolute URL", c.raw_name)
        return "x.ref = ?", [h64(f"{parts[-2]}/{parts[-1]}")]
    if "/" in text or text.startswith("urn:"):
        parsed = normalize.parse_reference(text)
        return "x.ref = ?", [h64(parsed[2] if parsed else text)]
    targets = c.param.targets or ()
    if not targets:
        return "x.target = ?", [text]
    marks = ", ".join("?" for _ in targets)
    return f"x.ref IN ({marks})", [h64(f"{t}/{text}") for t in targets]


def _uri(c: Criterion, v: Value) -> Cond:
    if c.modifier is None:
        return "x.uri = ?", [v.text]
    if c.modifier == "below":  # the uri itself and every uri under it, on a path boundary
        base = v.text.rstrip("/")
        return "x.uri = ? OR x.uri = ? OR (x.uri >= ? AND x.uri < ?)", [
            v.text, base, base + "/", base + "/\U0010ffff"]
    parts = v.text.split("/")  # above: the uri itself and every parent path of it
    prefixes = ["/".join(parts[:i]) for i in range(3, len(parts) + 1)] or [v.text]
    return f"x.uri IN ({', '.join('?' for _ in prefixes)})", prefixes


def exists_sql(node: Node, alias: str, depth: int = 0, db: Fetcher | None = None) -> tuple[str, list[Any]]:
    """A condition on `alias` (a `resources` row) that holds when the node matches it."""
    if isinstance(node, InCompartment):
        x = f"x{depth}"
        marks = ", ".join("?" for _ in node.param_ids) or "NULL"
        return (f"(EXISTS (SELECT 1 FROM idx_reference {x} WHERE {x}.res = {alias}.pk AND {x}.param IN ({marks})"
                f" AND {x}.ref = ?) OR ({alias}.type = 'Patient' AND {alias}.id = ?))",
                [*node.param_ids, node.ref, node.patient_id])
    if isinstance(node, Criterion):
        lf = leaf(node, db)
        if isinstance(lf, Raw):
            return lf.cond.format(a=alias), list(lf.params)
        x = f"x{depth}"
        cond = lf.cond.replace("x.", f"{x}.")
        sql = f"EXISTS (SELECT 1 FROM {lf.table} {x} WHERE {x}.res = {alias}.pk AND {x}.param = ? AND ({cond}))"
        return (f"NOT {sql}" if lf.negate else sql), [lf.param, *lf.params]
    t, x = f"t{depth}", f"x{depth}"
    if isinstance(node, Chain):
        alternatives, params = [], []
        for target, inner in node.targets:
            cond, ps = exists_sql(inner, t, depth + 1, db)
            alternatives.append(f"({t}.type = ? AND {cond})")
            params += [target, *ps]
        sql = (f"EXISTS (SELECT 1 FROM idx_reference {x} JOIN resources {t} ON {t}.ref = {x}.ref"
               f" WHERE {x}.res = {alias}.pk AND {x}.param = ? AND {t}.deleted = 0"
               f" AND {t}.type = {x}.target_type AND {t}.id = {x}.target AND ({' OR '.join(alternatives)}))")
        return sql, [node.param.id, *params]
    assert isinstance(node, Has)
    cond, ps = exists_sql(node.inner, t, depth + 1, db)
    guard, gps = has_guard(node, t)
    sql = (f"EXISTS (SELECT 1 FROM idx_reference {x} JOIN resources {t} ON {t}.pk = {x}.res"
           f" WHERE {x}.ref = {alias}.ref AND {x}.param = ? AND {x}.target_type = {alias}.type"
           f" AND {x}.target = {alias}.id AND {t}.type = ? AND {t}.deleted = 0 AND {cond}{guard})")
    return sql, [node.param.id, node.type, *ps, *gps]


def merged_exists(leaves: list[Leaf], alias: str) -> tuple[str, list[Any]]:
    """Several positive leaves on one parameter of one index table (`date=ge2014-07&date=lt2014-08`) as one
    per-row lookup: each must hold for some index row of `alias`, as separate EXISTS would say, but the
    resource's rows of that parameter are read once (PostgreSQL: one index scan per candidate instead of
    one per criterion; a month of one unit's Encounters 6.5 -> 4.4 ms p50 over 1,100 candidates)."""
    first = leaves[0]
    assert all(lf.table == first.table and lf.param == first.param and not lf.negate for lf in leaves)
    cases = " * ".join(f"max(CASE WHEN ({lf.cond.replace('x.', 'x0.')}) THEN 1 ELSE 0 END)" for lf in leaves)
    sql = f"(SELECT {cases} FROM {first.table} x0 WHERE x0.res = {alias}.pk AND x0.param = ?) = 1"
    return sql, [*(p for lf in leaves for p in lf.params), first.param]


def has_guard(node: Has, alias: str) -> tuple[str, list[Any]]:
    """` AND ...` limiting a `_has`'s referring resource `alias` to `node.guard` (conditions on `r`,
    the request's access filters: a fresh `r` names that row), or nothing."""
    if node.guard is None:
        return "", []
    return f" AND EXISTS (SELECT 1 FROM resources r WHERE r.pk = {alias}.pk AND {node.guard[0]})", list(node.guard[1])


def driver_sql(node: Node, db: Fetcher | None = None) -> tuple[str, list[Any]] | None:
    """`SELECT res ...` of the keys matching a positive leaf, or None when the node cannot drive."""
    if isinstance(node, InCompartment):
        marks = ", ".join("?" for _ in node.param_ids) or "NULL"
        return (f"SELECT x.res FROM idx_reference x WHERE x.param IN ({marks}) AND x.ref = ?"
                " UNION SELECT p.pk AS res FROM resources p WHERE p.ref = ? AND p.type = 'Patient' AND p.id = ?",
                [*node.param_ids, node.ref, node.ref, node.patient_id])
    if not isinstance(node, Criterion):
        return None
    lf = leaf(node, db, in_lists=True)
    if isinstance(lf, Raw) or lf.negate:
        return None
    return f"SELECT x.res FROM {lf.table} x WHERE x.param = ? AND ({lf.cond})", [lf.param, *lf.params]
