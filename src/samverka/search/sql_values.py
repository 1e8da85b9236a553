"""Value compilers for `search.sql`: one search value → (condition on index alias `x`, bound values).

https://hl7.org/fhir/R4/search.html#prefix -- with S = [a, b] the range of the search value and
T = [tlo, thi] the range of the target value:

| prefix | matches when                                   |
|--------|------------------------------------------------|
| eq     | S contains T: tlo >= a and thi <= b            |
| ne     | not eq                                         |
| gt     | the range above S overlaps T: thi > b          |
| lt     | the range below S overlaps T: tlo < a          |
| ge     | gt or eq                                       |
| le     | lt or eq                                       |
| sa     | T lies wholly above S: tlo > b                 |
| eb     | T lies wholly below S: thi < a                 |
| ap     | T overlaps S widened by 10%                    |

Dates use these rules literally on inclusive microsecond ranges (a day is all of its microseconds; an
open Period end is the end of time). Numbers and quantities follow the spec's number table: the search
value has the implicit range of its significant digits for eq/ne/sa/eb/ap ([99.5, 100.5) for `100`,
upper end open) and is exact for gt/lt/ge/le ("greater than exactly 100"). A stored number is compared
as the exact value it states (the centre of its stored precision range), so `gt100` does not find 100;
a stored Range with an open end (`>= 18 a`) is compared as that range. A Range with both ends is
compared by its centre (the index cannot tell it from a precise point value).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import invalid
from ..store.hashing import h64
from . import normalize
from .params import Registry
from .query import PREFIXES, Criterion, Value

Cond = tuple[str, list[Any]]
_DAY_US = 86_400_000_000


def or_conds(conds: list[Cond]) -> tuple[str, tuple[Any, ...]]:
    cond = " OR ".join(f"({c})" for c, _ in conds) if len(conds) > 1 else conds[0][0]
    return cond, tuple(x for _, ps in conds for x in ps)


def compare(prefix: str | None, a: Any, b: Any, tlo: str, thi: str, half_open: bool = False) -> Cond:
    """The prefix table above, for the search range [a, b] (upper end open when `half_open`)."""
    below_b, from_b = ("<", ">=") if half_open else ("<=", ">")
    p = prefix or "eq"
    if p == "eq":
        return f"{tlo} >= ? AND {thi} {below_b} ?", [a, b]
    if p == "ne":
        return f"({tlo} < ? OR {thi} {from_b} ?)", [a, b]
    if p == "gt":
        return f"{thi} > ?", [b]
    if p == "lt":
        return f"{tlo} < ?", [a]
    if p == "ge":
        return f"({thi} > ? OR ({tlo} >= ? AND {thi} <= ?))", [b, a, b]
    if p == "le":
        return f"({tlo} < ? OR ({tlo} >= ? AND {thi} <= ?))", [a, a, b]
    if p == "sa":
        return f"{tlo} {from_b} ?", [b]
    if p == "eb":
        return f"{thi} < ?", [a]
    raise AssertionError(p)


# -- token ----------------------------------------------------------------------------------------


def token(c: Criterion, v: Value) -> Cond:
    if "|" not in v.text:
        return "x.code = ?", [h64(v.text)]
    system, _, code = v.text.partition("|")
    if not system:
        return "x.code = ? AND x.system = 0", [h64(code)]
    if not code:
        return "x.system = ?", [h64(system)]
    return "x.code = ? AND x.system = ?", [h64(code), h64(system)]


# -- string ---------------------------------------------------------------------------------------


def _string(c: Criterion, v: Value) -> Cond:
    if c.modifier == "exact":
        return "x.exact = ?", [v.text]
    norm = normalize.norm_string(v.text)
    if c.modifier == "contains":
        escaped = norm.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return "x.norm LIKE ? ESCAPE '\\'", ["%" + escaped + "%"]
    # starts-with as a range scan on the (param, norm) key
    return "x.norm >= ? AND x.norm < ?", [norm, norm + "\U0010ffff"]


# -- date -----------------------------------------------------------------------------------------


def _date_range(c: Criterion, text: str) -> tuple[int, int]:
    try:
        return normalize.date_range(text)
    except ValueError as exc:
        raise invalid(f"{c.raw_name}: {text!r} is not a valid date, dateTime or instant", c.raw_name) from exc


def date_cond(c: Criterion, prefix: str | None, rng: tuple[Any, Any], lo: str = "x.lo", hi: str = "x.hi") -> Cond:
    a, b = rng
    if prefix == "ap":  # 10% of the gap between now and the date, at least a day either side
        now = int(time.time() * 1_000_000)
        span = max(abs(now - int(a)) // 10, _DAY_US)
        wa, wb = (a - span, b + span) if isinstance(a, int) else (float(a - span), float(b + span))
        return f"{lo} <= ? AND {hi} >= ?", [wb, wa]
    return compare(prefix, a, b, lo, hi)


def _date(c: Criterion, v: Value) -> Cond:
    return date_cond(c, v.prefix, _date_range(c, v.text))


# -- number / quantity ----------------------------------------------------------------------------


def _point(lo: str, hi: str, end: str) -> str:
    """A stored number's exact value (the centre of its precision range); an open Range's own end."""
    return f"(CASE WHEN {lo} > -1e308 AND {hi} < 1e308 THEN ({lo} + {hi}) / 2 ELSE {end} END)"


def _number_value(c: Criterion, text: str) -> tuple[float, float, float]:
    """(exact value, precision range lo, hi) of a search number."""
    try:
        lo, hi = normalize.number_range(text)
        exact = float(text)
    except (ValueError, ArithmeticError) as exc:
        raise invalid(f"{c.raw_name}: {text!r} is not a valid number", c.raw_name) from exc
    if exact != exact or abs(exact) == float("inf"):
        raise invalid(f"{c.raw_name}: {text!r} is out of range", c.raw_name)
    return exact, lo, hi


def number_cond(c: Criterion, prefix: str | None, text: str, lo: str = "x.lo", hi: str = "x.hi") -> Cond:
    v, a, b = _number_value(c, text)
    tlo, thi = _point(lo, hi, lo), _point(lo, hi, hi)
    tol = abs(v) * 1e-12 or 1e-300  # below what a double distinguishes at this magnitude
    if prefix in ("gt", "lt", "ge", "le", "sa", "eb"):
        # R4: with lt, gt, le, ge, sa or eb "the implicit precision of the number is ignored, and they
        # are treated as if they have arbitrarily high precision" -- gt100 is "above exactly 100"
        return compare(prefix, v - tol, v + tol, tlo, thi)
    if prefix == "ap":
        span = abs(v) * 0.1
        return f"{tlo} <= ? AND {thi} >= ?", [b + span, a - span]
    if b - a <= 2 * tol:  # stated to more digits than a double holds: the range collapsed to the value
        return compare(prefix, v - tol, v + tol, tlo, thi)
    return compare(prefix, a, b, tlo, thi, half_open=True)


def _number(c: Criterion, v: Value) -> Cond:
    return number_cond(c, v.prefix, v.text)


def _quantity(c: Criterion, v: Value) -> Cond:
    number, *rest = v.text.split("|")
    cond, params = number_cond(c, v.prefix, number)
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


# -- composite ------------------------------------------------------------------------------------


def _component_types(c: Criterion) -> list[str]:
    reg = Registry.default()
    out = []
    for url, _expr in c.param.components:
        sub = reg.by_url(url)
        out.append(sub.type if sub is not None else "token")
    return out


def _split_prefix(text: str) -> tuple[str | None, str]:
    if text[:2] in PREFIXES and len(text) > 2 and (text[2].isdigit() or text[2] == "-"):
        return text[:2], text[2:]
    return None, text


def _composite(c: Criterion, v: Value) -> Cond:
    """`token$value`: the first component a token, the second hashed or ranged (see compile_extract)."""
    parts = v.text.split("$")
    types = _component_types(c)
    if len(parts) != 2 or len(types) < 2:
        raise invalid(f"{c.raw_name}: {v.text!r} needs two components separated by $", c.raw_name)
    first, second = parts
    if not first or not second:
        raise invalid(f"{c.raw_name}: {v.text!r} has an empty component", c.raw_name)
    tok, params = token(c, Value(None, first))
    cond = tok.replace("x.code", "x.code1").replace("x.system", "x.system1")
    kind = types[1]
    if kind in ("quantity", "number", "date"):
        prefix, rest = _split_prefix(second)
        if kind == "date":
            lo_us, hi_us = _date_range(c, rest)
            pcond, pparams = date_cond(c, prefix, (float(lo_us), float(hi_us)), "x.lo2", "x.hi2")
        else:
            number, *units = rest.split("|")
            pcond, pparams = number_cond(c, prefix, number, "x.lo2", "x.hi2")
            if len(units) not in (0, 2):
                raise invalid(f"{c.raw_name}: {second!r} is not number|system|code", c.raw_name)
            if units and units[1]:
                pcond += " AND x.h2 = ?"
                pparams.append(h64(units[1]))
        return f"{cond} AND {pcond}", [*params, *pparams]
    if kind == "token":
        h2 = h64(second.rpartition("|")[2])
    elif kind == "string":
        h2 = h64(normalize.norm_string(second))
    elif kind == "reference":
        parsed = normalize.parse_reference(second)
        h2 = h64(parsed[2] if parsed else second)
    else:
        h2 = h64(second)
    return f"{cond} AND x.h2 = ?", [*params, h2]


COMPILERS: dict[str, Callable[[Criterion, Value], Cond]] = {
    "string": _string, "date": _date, "number": _number, "quantity": _quantity, "composite": _composite,
}
