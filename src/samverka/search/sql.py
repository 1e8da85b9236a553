"""Compile parsed search criteria into SQL over the index tables, always with bound parameters.

https://hl7.org/fhir/R4/search.html -- each criterion becomes `r.pk IN (SELECT res FROM idx_...)`
(or NOT IN for `:not`/`:missing=true`), so the planner can drive from the most selective index.
The same SQL runs on SQLite and PostgreSQL (qmark placeholders; the PostgreSQL store rewrites them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import invalid
from ..store.hashing import h64
from . import normalize
from .query import Criterion, Query, Value

_TABLE = {
    "token": "idx_token", "string": "idx_string", "date": "idx_date", "number": "idx_number",
    "quantity": "idx_quantity", "reference": "idx_reference", "uri": "idx_uri", "composite": "idx_composite",
}


@dataclass
class Sql:
    where: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)


def compile_where(query: Query) -> Sql:
    """WHERE conditions on `resources r` for every criterion of the query."""
    out = Sql()
    if query.type is not None:
        out.where.append("r.type = ?")
        out.params.append(query.type)
    out.where.append("r.deleted = 0")
    for c in query.criteria:
        cond, params = _criterion(c)
        out.where.append(cond)
        out.params += params
    return out


def _criterion(c: Criterion) -> tuple[str, list[Any]]:
    p = c.param
    table = _TABLE.get(p.type)
    if table is None:
        raise invalid(f"search parameter {c.raw_name} of type {p.type} is not supported", c.raw_name)
    if p.code == "_id":
        if c.modifier not in (None, "not"):
            raise invalid(f"modifier :{c.modifier} is not supported on _id", c.raw_name)
        marks = ", ".join("?" for _ in c.values)
        op = "NOT IN" if c.modifier == "not" else "IN"
        return f"r.id {op} ({marks})", [v.text for v in c.values]
    if p.type == "reference" and c.modifier == "identifier":
        # Reference.identifier values are indexed as token rows under the same parameter id
        table = "idx_token"
        c = Criterion(p, None, c.values, c.raw_name)
        conds = [_token(c, v) for v in c.values]
        inner = " OR ".join(f"({cond})" for cond, _p, _n in conds)
        return f"r.pk IN (SELECT res FROM {table} WHERE param = ? AND ({inner}))", [
            p.id, *(x for _c, ps, _n in conds for x in ps)]
    if c.modifier == "missing":
        missing = c.values[0].text == "true"
        op = "NOT IN" if missing else "IN"
        return f"r.pk {op} (SELECT res FROM {table} WHERE param = ?)", [p.id]
    alternatives: list[str] = []
    params: list[Any] = []
    negate = False
    for v in c.values:
        if p.type == "token":
            cond, vp, negate = _token(c, v)  # :not excludes resources having any of the codes
        elif p.type == "string":
            cond, vp = _string(c, v)
        elif p.type == "reference":
            cond, vp = _reference(c, v)
        elif p.type == "date":
            cond, vp = _range(c, v, normalize.date_range(v.text) if _valid_date(v.text) else None)
        elif p.type == "number":
            cond, vp = _range(c, v, _number_range(c, v.text))
        elif p.type == "quantity":
            cond, vp = _quantity(c, v)
        elif p.type == "uri":
            cond, vp = _uri(c, v)
        else:
            raise invalid(f"search parameter {c.raw_name} of type {p.type} is not supported yet", c.raw_name)
        alternatives.append(cond)
        params += vp
    inner = " OR ".join(f"({a})" for a in alternatives)
    op = "NOT IN" if negate else "IN"
    return f"r.pk {op} (SELECT res FROM {table} WHERE param = ? AND ({inner}))", [p.id, *params]


def _token(c: Criterion, v: Value) -> tuple[str, list[Any], bool]:
    if c.modifier not in (None, "not"):
        raise invalid(f"modifier :{c.modifier} is not supported on {c.raw_name} yet", c.raw_name)
    negate = c.modifier == "not"
    if "|" not in v.text:
        return "code = ?", [h64(v.text)], negate
    system, _, code = v.text.partition("|")
    if not system:
        return "code = ? AND system = 0", [h64(code)], negate
    if not code:
        return "system = ?", [h64(system)], negate
    return "code = ? AND system = ?", [h64(code), h64(system)], negate


def _string(c: Criterion, v: Value) -> tuple[str, list[Any]]:
    if c.modifier == "exact":
        return "exact = ?", [v.text]
    norm = normalize.norm_string(v.text)
    if c.modifier == "contains":
        return "norm LIKE ? ESCAPE '\\'", ["%" + _like_escape(norm) + "%"]
    if c.modifier is not None:
        raise invalid(f"modifier :{c.modifier} is not supported on {c.raw_name}", c.raw_name)
    # starts-with as a range scan on the (param, norm) key: norm >= prefix AND norm < prefix + U+10FFFF
    return "norm >= ? AND norm < ?", [norm, norm + "\U0010ffff"]


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _reference(c: Criterion, v: Value) -> tuple[str, list[Any]]:
    text = v.text
    if c.modifier and c.modifier[:1].isupper():
        return "ref = ?", [h64(f"{c.modifier}/{text}")]
    if c.modifier is not None:
        raise invalid(f"modifier :{c.modifier} is not supported on {c.raw_name}", c.raw_name)
    if "/" in text and not text.startswith(("http://", "https://", "urn:")):
        parts = text.split("/")
        if len(parts) >= 4 and parts[-2] == "_history":
            parts = parts[:-2]
        return "ref = ?", [h64(f"{parts[-2]}/{parts[-1]}")]
    if "/" in text:
        return "ref = ?", [h64(text)]
    targets = c.param.targets or ()
    if not targets:
        return "target = ?", [text]
    marks = ", ".join("?" for _ in targets)
    return f"ref IN ({marks})", [h64(f"{t}/{text}") for t in targets]


def _valid_date(text: str) -> bool:
    try:
        normalize.date_range(text)
    except ValueError:
        return False
    return True


def _number_range(c: Criterion, text: str) -> tuple[float, float] | None:
    try:
        lo, hi = normalize.number_range(text)
    except ValueError:
        return None
    return lo, hi


def _range(c: Criterion, v: Value, rng: tuple[Any, Any] | None) -> tuple[str, list[Any]]:
    """The spec's prefix semantics over stored [lo, hi] ranges against the query range [a, b]."""
    if rng is None:
        raise invalid(f"{c.raw_name}: {v.text!r} is not a valid {c.param.type}", c.raw_name)
    if c.modifier not in (None,):
        raise invalid(f"modifier :{c.modifier} is not supported on {c.raw_name}", c.raw_name)
    a, b = rng
    prefix = v.prefix or "eq"
    if prefix == "eq":
        return "lo >= ? AND hi <= ?", [a, b]
    if prefix == "ne":
        return "(lo < ? OR hi > ?)", [a, b]
    if prefix == "gt":
        return "hi > ?", [b]
    if prefix == "lt":
        return "lo < ?", [a]
    if prefix == "ge":
        return "hi >= ?", [a]
    if prefix == "le":
        return "lo <= ?", [b]
    if prefix == "sa":
        return "lo > ?", [b]
    if prefix == "eb":
        return "hi < ?", [a]
    # ap: within 10% of the value (dates: of the distance to now is not needed -- use the range +-10%)
    span = (b - a) if isinstance(a, int) else abs((a + b) / 2) * 0.1
    return "lo <= ? AND hi >= ?", [b + span, a - span]


def _quantity(c: Criterion, v: Value) -> tuple[str, list[Any]]:
    number, *rest = v.text.split("|")
    rng = _number_range(c, number)
    cond, params = _range(c, Value(v.prefix, number), rng)
    if len(rest) == 2:
        system, code = rest
        if code:
            cond += " AND code = ?"
            params.append(h64(code))
        if system:
            cond += " AND system = ?"
            params.append(h64(system))
    elif rest:
        raise invalid(f"{c.raw_name}: {v.text!r} is not number|system|code", c.raw_name)
    return cond, params


def _uri(c: Criterion, v: Value) -> tuple[str, list[Any]]:
    if c.modifier is None:
        return "uri = ?", [v.text]
    if c.modifier == "below":
        return "uri >= ? AND uri < ?", [v.text, v.text + "\U0010ffff"]
    if c.modifier == "above":
        parts = v.text.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(3, len(parts) + 1)] or [v.text]
        return f"uri IN ({', '.join('?' for _ in prefixes)})", prefixes
    raise invalid(f"modifier :{c.modifier} is not supported on {c.raw_name}", c.raw_name)

