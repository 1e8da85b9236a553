"""FHIRPath functions that fhirpathpy 2.2.4 lacks, for the facade (https://hl7.org/fhirpath/N1/).

They are registered through fhirpathpy's user invocation table, whose functions receive the input
collection as plain data (no engine context): lowBoundary/highBoundary, precision, comparable, sort,
matchesFull, escape/unescape, hasValue and conformsTo (base resource types only).
"""

from __future__ import annotations

import calendar
import html
import json
import re
from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import cmp_to_key
from typing import Any

from fhirpathpy.engine.nodes import FP_DateTime, FP_Quantity, FP_Time

from samverka.fhir.definitions import structure_definitions

_DEFAULT_PRECISION = 8
_DT = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?)?)?T?"
    r"(Z|[+-]\d{2}:\d{2})?$"
)
_JSON_ESCAPE = re.compile(r'\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})')
_TIME = re.compile(r"^T?(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")
# UCUM units grouped by dimension, enough to answer comparable() for common clinical units.
_DIMENSIONS = {
    "length": {"m", "cm", "mm", "km", "um", "nm", "[in_i]", "[ft_i]", "[yd_i]", "[mi_i]"},
    "mass": {"g", "kg", "mg", "ug", "ng", "[lb_av]", "[oz_av]"},
    "time": {
        "s",
        "ms",
        "min",
        "h",
        "d",
        "wk",
        "mo",
        "a",
        "second",
        "seconds",
        "minute",
        "minutes",
        "hour",
        "hours",
        "day",
        "days",
        "week",
        "weeks",
        "month",
        "months",
        "year",
        "years",
    },
    "volume": {"L", "l", "mL", "ml", "dL", "dl", "uL", "ul"},
}


def _data(value: Any) -> Any:
    return value.data if hasattr(value, "data") and not isinstance(value, dict) else value


def _decimal_places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _decimal_boundary(value: Decimal | int, precision: int, high: bool) -> Decimal | None:
    if precision < 0 or precision > 31:
        return None
    value = Decimal(value)
    places = _decimal_places(value)
    half = Decimal(5) * Decimal(10) ** -(places + 1)
    edge = value + half if high else value - half
    unit = Decimal(10) ** -precision
    if precision < places and abs(value) < unit:
        # Only digits beyond the requested precision: the boundary is zero at that precision.
        zero = Decimal(0).quantize(unit)
        return zero.copy_negate() if value < 0 and not high else zero
    if precision >= places + 1:
        return edge.quantize(unit)
    source = value if precision < places else edge
    return source.quantize(unit, rounding=ROUND_CEILING if high else ROUND_FLOOR)


def _datetime_boundary(text: str, precision: int, high: bool) -> FP_DateTime | None:
    m = _DT.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, tz = m.groups()
    if precision not in (4, 6, 8, 10, 12, 14, 17):
        return None
    month = month or ("12" if high else "01")
    if day is None:
        day = f"{calendar.monthrange(int(year), int(month))[1]:02d}" if high else "01"
    out = year if precision == 4 else f"{year}-{month}" if precision == 6 else f"{year}-{month}-{day}"
    if precision > 8:
        minute = minute or ("00" if hour or not high else "59")  # T08 means 08:00
        hour = hour or ("23" if high else "00")
        second = second or ("59" if high else "00")
        fraction = (fraction or ("999" if high else "000")).ljust(3, "0")[:3]
        time = {10: hour, 12: f"{hour}:{minute}", 14: f"{hour}:{minute}:{second}"}.get(
            precision, f"{hour}:{minute}:{second}.{fraction}"
        )
        out += "T" + time + (tz or ("-12:00" if high else "+14:00"))
    return FP_DateTime(out)


def _time_boundary(text: str, precision: int, high: bool) -> FP_Time | None:
    m = _TIME.match(text)
    if m is None or precision not in (2, 4, 6, 9):
        return None
    hour, minute, second, fraction = m.groups()
    minute = minute or ("59" if high else "00")
    second = second or ("59" if high else "00")
    fraction = (fraction or ("999" if high else "000")).ljust(3, "0")[:3]
    parts = [hour, minute, second][: {2: 1, 4: 2, 6: 3, 9: 3}[precision]]
    return FP_Time(":".join(parts) + (f".{fraction}" if precision == 9 else ""))


def _boundary(high: bool) -> Callable[..., list[Any]]:
    def fn(inputs: list[Any], precision: Any = None) -> list[Any]:
        if len(inputs) != 1:
            return []
        value = _data(inputs[0])
        if isinstance(value, dict) and "value" in value and "code" in value:
            value = FP_Quantity(Decimal(str(value["value"])), f"'{value['code']}'")
        result: Any = None
        if isinstance(value, bool):
            return []
        if isinstance(value, int | Decimal):
            result = _decimal_boundary(value, _DEFAULT_PRECISION if precision in (None, []) else precision, high)
        elif isinstance(value, FP_Quantity):
            p = _DEFAULT_PRECISION if precision in (None, []) else precision
            number = _decimal_boundary(value.value, p, high)
            result = None if number is None else FP_Quantity(number, value.unit)
        elif isinstance(value, FP_Time):
            result = _time_boundary(value.asStr or "", 9 if precision in (None, []) else precision, high)
        elif isinstance(value, FP_DateTime | str):
            text = value.asStr if isinstance(value, FP_DateTime) else value
            result = _datetime_boundary(text or "", 17 if precision in (None, []) else precision, high)
        return [] if result is None else [result]

    return fn


def _precision(inputs: list[Any]) -> list[Any]:
    if len(inputs) != 1:
        return []
    value = _data(inputs[0])
    if isinstance(value, Decimal):
        return [_decimal_places(value)]
    if isinstance(value, FP_DateTime | FP_Time) and value.asStr:
        text = re.sub(r"(Z|[+-]\d{2}:\d{2})$", "", value.asStr)
        return [sum(ch.isdigit() for ch in text)]
    return []


def _dimension(unit: str) -> str | None:
    unit = unit.strip("'")
    return next((name for name, units in _DIMENSIONS.items() if unit in units), None)


def _comparable(inputs: list[Any], other: list[Any]) -> list[Any]:
    if len(inputs) != 1 or len(other) != 1:
        return []
    a, b = _data(inputs[0]), _data(other[0])
    if not isinstance(a, FP_Quantity) or not isinstance(b, FP_Quantity):
        return []
    if a.unit == b.unit:
        return [True]
    dim = _dimension(a.unit)
    return [dim is not None and dim == _dimension(b.unit)]


def _compare(a: Any, b: Any) -> int:
    if a == b:
        return 0
    return -1 if a < b else 1


def _make_sort(directions: str) -> Callable[..., list[Any]]:
    """sort() with keys given as expressions; `directions` holds 'a' or 'd' per key."""

    def fn(inputs: list[Any], *keys: Callable[[Any], list[Any]]) -> list[Any]:
        def key_values(item: Any) -> list[Any]:
            if not keys:
                return [_data(item)]
            return [next(iter([_data(v) for v in key(item)]), None) for key in keys]

        decorated = [(key_values(item), item) for item in inputs]

        def cmp(x: tuple[list[Any], Any], y: tuple[list[Any], Any]) -> int:
            for i, (a, b) in enumerate(zip(x[0], y[0], strict=True)):
                result = (a is None) - (b is None) if a is None or b is None else _compare(a, b)
                if result:
                    return -result if directions[i : i + 1] == "d" else result
            return 0

        return [item for _, item in sorted(decorated, key=cmp_to_key(cmp))]

    return fn


def _matches_full(inputs: list[Any], pattern: Any) -> list[Any]:
    if len(inputs) != 1 or not isinstance(pattern, str):
        return []
    return [re.fullmatch(pattern, str(_data(inputs[0])), re.DOTALL) is not None]


def _escape(inputs: list[Any], target: Any) -> list[Any]:
    if len(inputs) != 1 or not isinstance(_data(inputs[0]), str):
        return []
    text: str = _data(inputs[0])
    if target == "html":
        return [html.escape(text, quote=True).replace("&#x27;", "'")]
    if target == "json":
        return [json.dumps(text)[1:-1]]
    return []


def _unescape(inputs: list[Any], target: Any) -> list[Any]:
    if len(inputs) != 1 or not isinstance(_data(inputs[0]), str):
        return []
    text: str = _data(inputs[0])
    if target == "html":
        return [html.unescape(text)]
    if target == "json":
        return [_JSON_ESCAPE.sub(lambda m: json.loads('"' + m.group(0) + '"'), text)]
    return []


def _has_value(inputs: list[Any]) -> list[Any]:
    return [len(inputs) == 1 and not isinstance(_data(inputs[0]), dict | list)]


def _conforms_to(inputs: list[Any], url: Any) -> list[Any]:
    if len(inputs) != 1 or not isinstance(url, str):
        return []
    item = _data(inputs[0])
    base = "http://hl7.org/fhir/StructureDefinition/"
    if not url.startswith(base) or url[len(base) :] not in structure_definitions():
        raise ValueError(f"conformsTo(): unknown profile {url}")
    return [isinstance(item, dict) and item.get("resourceType") == url[len(base) :]]


FUNCTIONS: dict[str, dict[str, Any]] = {
    "lowBoundary": {"fn": _boundary(high=False), "arity": {0: [], 1: ["Integer"]}},
    "highBoundary": {"fn": _boundary(high=True), "arity": {0: [], 1: ["Integer"]}},
    "precision": {"fn": _precision},
    "comparable": {"fn": _comparable, "arity": {1: ["Any"]}},
    "matchesFull": {"fn": _matches_full, "arity": {1: ["String"]}},
    "escape": {"fn": _escape, "arity": {1: ["String"]}},
    "unescape": {"fn": _unescape, "arity": {1: ["String"]}},
    "hasValue": {"fn": _has_value},
    "conformsTo": {"fn": _conforms_to, "arity": {1: ["String"]}},
    "sort": {"fn": _make_sort(""), "arity": {0: []}},
}


def sort_function(directions: str) -> dict[str, Any]:
    """The invocation-table entry for sort() with one key expression per direction letter."""
    return {"fn": _make_sort(directions), "arity": {len(directions): ["Expr"] * len(directions)}}
