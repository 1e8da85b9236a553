"""Compile criteria into SQL over the index tables, always with bound parameters.

https://hl7.org/fhir/R4/search.html -- a leaf criterion is a condition on one index table (`Leaf`);
`exists_sql` turns any node into a correlated `EXISTS` on a resources alias, and `driver_sql` turns a
positive leaf into the set of matching keys a plan can start from. The same SQL runs on SQLite and
PostgreSQL (qmark placeholders; the PostgreSQL store rewrites them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import invalid
from ..store.hashing import h64
from . import normalize
from .query import Chain, Criterion, Has, Node, Value

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
}


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


def leaf(c: Criterion) -> Leaf | Raw:
    p = c.param
    allowed = _MODIFIERS.get(p.type)
    if allowed is None:
        raise invalid(f"search parameter {c.raw_name} of type {p.type} is not supported", c.raw_name, "not-supported")
    if c.modifier == "missing":
        return Leaf(_TABLE[p.type], p.id, "1 = 1", (), negate=c.values[0].text == "true")
    if p.code == "_id":
        if c.modifier not in (None, "not"):
            raise invalid(f"modifier :{c.modifier} is not supported on _id", c.raw_name)
        marks = ", ".join("?" for _ in c.values)
        op = "NOT IN" if c.modifier == "not" else "IN"
        return Raw(f"{{a}}.id {op} ({marks})", tuple(v.text for v in c.values))
    if p.type == "reference" and c.modifier == "identifier":
        # Reference.identifier values are indexed as token rows under the same parameter id
        conds = [_token(c, v) for v in c.values]
        return Leaf("idx_token", p.id, _or(conds), _flat(conds))
    if p.type == "reference" and c.modifier and c.modifier[:1].isupper():
        conds = [_reference(c, v, c.modifier) for v in c.values]
        return Leaf("idx_reference", p.id, _or(conds), _flat(conds))
    if c.modifier not in allowed:
        raise invalid(f"modifier :{c.modifier} is not supported on {p.type} parameter {c.raw_name}", c.raw_name,
                      "not-supported")
    if p.type == "token":
        if c.modifier == "text":
            conds = [("x.text >= ? AND x.text < ?", [normalize.norm_string(v.text),
                                                     normalize.norm_string(v.text) + "\U0010ffff"]) for v in c.values]
            return Leaf("idx_token_text", p.id, _or(conds), _flat(conds))
        if c.modifier in ("of-type", "in", "not-in", "above", "below"):
            raise invalid(f"modifier :{c.modifier} on {c.raw_name} needs terminology support that is not built yet",
                          c.raw_name, "not-supported")
        conds = [_token(c, v) for v in c.values]
        return Leaf("idx_token", p.id, _or(conds), _flat(conds), negate=c.modifier == "not")
    compile_value = _COMPILERS[p.type]
    conds = [compile_value(c, v) for v in c.values]
    return Leaf(_TABLE[p.type], p.id, _or(conds), _flat(conds))


def _or(conds: list[tuple[str, list[Any]]]) -> str:
    return " OR ".join(f"({cond})" for cond, _ in conds) if len(conds) > 1 else conds[0][0]


def _flat(conds: list[tuple[str, list[Any]]]) -> tuple[Any, ...]:
    return tuple(x for _, ps in conds for x in ps)


def exists_sql(node: Node, alias: str, depth: int = 0) -> tuple[str, list[Any]]:
    """A condition on `alias` (a `resources` row) that holds when the node matches it."""
    if isinstance(node, Criterion):
        lf = leaf(node)
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
            cond, ps = exists_sql(inner, t, depth + 1)
            alternatives.append(f"({t}.type = ? AND {cond})")
            params += [target, *ps]
        sql = (f"EXISTS (SELECT 1 FROM idx_reference {x} JOIN resources {t} ON {t}.ref = {x}.ref"
               f" WHERE {x}.res = {alias}.pk AND {x}.param = ? AND {t}.deleted = 0"
               f" AND {t}.type = {x}.target_type AND {t}.id = {x}.target AND ({' OR '.join(alternatives)}))")
        return sql, [node.param.id, *params]
    assert isinstance(node, Has)
    cond, ps = exists_sql(node.inner, t, depth + 1)
    sql = (f"EXISTS (SELECT 1 FROM idx_reference {x} JOIN resources {t} ON {t}.pk = {x}.res"
           f" WHERE {x}.ref = {alias}.ref AND {x}.param = ? AND {x}.target_type = {alias}.type"
           f" AND {x}.target = {alias}.id AND {t}.type = ? AND {t}.deleted = 0 AND {cond})")
    return sql, [node.param.id, node.type, *ps]


def driver_sql(node: Node) -> tuple[str, list[Any]] | None:
    """`SELECT res ...` of the keys matching a positive leaf, or None when the node cannot drive."""
    if not isinstance(node, Criterion):
        return None
    lf = leaf(node)
    if isinstance(lf, Raw) or lf.negate:
        return None
    return f"SELECT x.res FROM {lf.table} x WHERE x.param = ? AND ({lf.cond})", [lf.param, *lf.params]


# -- value compilers: (condition on x, bound values) ------------------------------------------------


def _token(c: Criterion, v: Value) -> tuple[str, list[Any]]:
    if "|" not in v.text:
        return "x.code = ?", [h64(v.text)]
    system, _, code = v.text.partition("|")
    if not system:
        return "x.code = ? AND x.system = 0", [h64(code)]
    if not code:
        return "x.system = ?", [h64(system)]
    return "x.code = ? AND x.system = ?", [h64(code), h64(system)]


def _string(c: Criterion, v: Value) -> tuple[str, list[Any]]:
    if c.modifier == "exact":
        return "x.exact = ?", [v.text]
    norm = normalize.norm_string(v.text)
    if c.modifier == "contains":
        return "x.norm LIKE ? ESCAPE '\\'", ["%" + _like_escape(norm) + "%"]
    # starts-with as a range scan on the (param, norm) key
    return "x.norm >= ? AND x.norm < ?", [norm, norm + "\U0010ffff"]


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _reference(c: Criterion, v: Value, type_: str | None = None) -> tuple[str, list[Any]]:
    text = v.text
    if type_ is not None and "/" not in text:
        return "x.ref = ?", [h64(f"{type_}/{text}")]
    if "/" in text and not text.startswith(("http://", "https://", "urn:")):
        parts = text.split("/")
        if len(parts) >= 4 and parts[-2] == "_history":
            parts = parts[:-2]
        return "x.ref = ?", [h64(f"{parts[-2]}/{parts[-1]}")]
    if "/" in text or text.startswith("urn:"):
        return "x.ref = ?", [h64(text)]
    targets = c.param.targets or ()
    if not targets:
        return "x.target = ?", [text]
    marks = ", ".join("?" for _ in targets)
    return f"x.ref IN ({marks})", [h64(f"{t}/{text}") for t in targets]


def _date(c: Criterion, v: Value) -> tuple[str, list[Any]]:
    try:
        rng = normalize.date_range(v.text)
    except ValueError as exc:
        raise invalid(f"{c.raw_name}: {v.text!r} is not a valid date, dateTime or instant", c.raw_name) from exc
    return _prefixed(c, v.prefix, rng)


def _number_range(c: Criterion, text: str) -> tuple[float, float]:
    try:
        return normalize.number_range(text)
    except (ValueError, ArithmeticError) as exc:
        raise invalid(f"{c.raw_name}: {text!r} is not a valid number", c.raw_name) from exc


def _number(c: Criterion, v: Value) -> tuple[str, list[Any]]:
    return _prefixed(c, v.prefix, _number_range(c, v.text))


def _prefixed(c: Criterion, prefix: str | None, rng: tuple[Any, Any], lo: str = "x.lo",
              hi: str = "x.hi") -> tuple[str, list[Any]]:
    """The spec's prefix semantics over stored [lo, hi] ranges against the query range [a, b]."""
    a, b = rng
    prefix = prefix or "eq"
    if prefix == "eq":
        return f"{lo} >= ? AND {hi} <= ?", [a, b]
    if prefix == "ne":
        return f"({lo} < ? OR {hi} > ?)", [a, b]
    if prefix == "gt":
        return f"{hi} > ?", [b]
    if prefix == "lt":
        return f"{lo} < ?", [a]
    if prefix == "ge":
        return f"{hi} >= ?", [a]
    if prefix == "le":
        return f"{lo} <= ?", [b]
    if prefix == "sa":
        return f"{lo} > ?", [b]
    if prefix == "eb":
        return f"{hi} < ?", [a]
    # ap: overlaps the value widened by 10% of its magnitude (dates: 10% of the range's width, at least a day)
    span = max((b - a) // 10, 86_400_000_000) if isinstance(a, int) else abs((a + b) / 2) * 0.1
    return f"{lo} <= ? AND {hi} >= ?", [b + span, a - span]


def _quantity(c: Criterion, v: Value) -> tuple[str, list[Any]]:
    number, *rest = v.text.split("|")
    cond, params = _prefixed(c, v.prefix, _number_range(c, number))
    if len(rest) == 2:
        system, code = rest
        if code:
            cond += " AND x.code = ?"
            params.append(h64(code))
        if system:
            cond += " AND x.system = ?"
            params.append(h64(system))
    elif rest:
        raise invalid(f"{c.raw_name}: {v.text!r} is not number|system|code", c.raw_name)
    return cond, params


def _uri(c: Criterion, v: Value) -> tuple[str, list[Any]]:
    if c.modifier is None:
        return "x.uri = ?", [v.text]
    if c.modifier == "below":
        return "x.uri >= ? AND x.uri < ?", [v.text, v.text + "\U0010ffff"]
    parts = v.text.split("/")  # above: the uri itself and every parent path of it
    prefixes = ["/".join(parts[:i]) for i in range(3, len(parts) + 1)] or [v.text]
    return f"x.uri IN ({', '.join('?' for _ in prefixes)})", prefixes


def _composite(c: Criterion, v: Value) -> tuple[str, list[Any]]:
    """`token$value`: the first component a token, the second hashed or ranged (see search.extract)."""
    first, sep, second = v.text.partition("$")
    if not sep:
        raise invalid(f"{c.raw_name}: {v.text!r} needs two components separated by $", c.raw_name)
    tok, tok_params = _token(c, Value(None, first))
    cond = tok.replace("x.code", "x.code1").replace("x.system", "x.system1")
    params = list(tok_params)
    prefix = second[:2] if second[:2] in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap") else None
    number = second[2:] if prefix else second
    try:
        rng: tuple[Any, Any] = normalize.number_range(number.split("|")[0])
    except (ValueError, ArithmeticError):
        rng = None  # type: ignore[assignment]
    if rng is None:
        try:
            lo_us, hi_us = normalize.date_range(number)
            rng = (float(lo_us), float(hi_us))
        except ValueError:
            if "|" in second:
                second = second.rpartition("|")[2]
            return f"{cond} AND x.h2 = ?", [*params, h64(normalize.norm_string(second)), h64(second)][:len(params) + 1]
    pcond, pparams = _prefixed(c, prefix, rng, "x.lo2", "x.hi2")
    unit = number.split("|")[2] if number.count("|") == 2 else ""
    if unit:
        pcond += " AND x.h2 = ?"
        pparams.append(h64(unit))
    return f"{cond} AND {pcond}", [*params, *pparams]


_COMPILERS = {
    "string": _string, "reference": _reference, "date": _date, "number": _number,
    "quantity": _quantity, "uri": _uri, "composite": _composite,
}
