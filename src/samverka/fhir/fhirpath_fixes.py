"""Corrections to fhirpathpy 2.2.4 built-ins where it departs from FHIRPath (https://hl7.org/fhirpath/N1/).

Most are replacement entries for fhirpathpy's user invocation table (which takes precedence over
its built-ins). Two cannot be reached that way and are narrow monkeypatches, applied once by
`install()`: decimal literals keep their scale (`1.0` stays a Decimal, not the integer 1), and
date-only values report the System type `Date` instead of `DateTime`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from fhirpathpy.engine.evaluators import evaluators
from fhirpathpy.engine.invocations import equality, math
from fhirpathpy.engine.nodes import FP_DateTime, FP_Quantity, FP_Time, TypeInfo

_UCUM = "http://unitsofmeasure.org"
_DATE_ONLY = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


def _data(value: Any) -> Any:
    return value.data if hasattr(value, "data") and not isinstance(value, dict) else value


def _single_string(inputs: list[Any]) -> str | None:
    if len(inputs) != 1:
        return None
    value = _data(inputs[0])
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _to_string(inputs: list[Any]) -> list[Any]:
    if len(inputs) != 1:
        return []
    value = _data(inputs[0])
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, FP_DateTime | FP_Time) and value.asStr:
        return [value.asStr]
    if isinstance(value, FP_Quantity):
        return [f"{value.value} {value.unit}"]
    if isinstance(value, dict | list):
        return []
    return [str(value)]


def _not(inputs: list[Any]) -> list[Any]:
    if len(inputs) > 1:
        raise ValueError("not() needs a single boolean")
    if not inputs:
        return []
    value = _data(inputs[0])
    # A single non-boolean item counts as true (singleton evaluation of collections).
    return [not value] if isinstance(value, bool) else [False]


def _single(inputs: list[Any]) -> list[Any]:
    if len(inputs) > 1:
        raise ValueError(f"single() on a collection of {len(inputs)} items")
    return inputs


def _starts_with(inputs: list[Any], prefix: Any) -> list[Any]:
    text = _single_string(inputs)
    return [] if text is None or not isinstance(prefix, str) else [text.startswith(prefix)]


def _ends_with(inputs: list[Any], suffix: Any) -> list[Any]:
    text = _single_string(inputs)
    return [] if text is None or not isinstance(suffix, str) else [text.endswith(suffix)]


def _index_of(inputs: list[Any], sub: Any) -> list[Any]:
    text = _single_string(inputs)
    return [] if text is None or not isinstance(sub, str) else [text.find(sub)]


def _replace(inputs: list[Any], pattern: Any, substitution: Any) -> list[Any]:
    text = _single_string(inputs)
    if text is None or not isinstance(pattern, str) or not isinstance(substitution, str):
        return []
    if pattern == "":
        return [substitution + substitution.join(text) + substitution]
    return [text.replace(pattern, substitution)]


def _replace_matches(inputs: list[Any], regex: Any, substitution: Any) -> list[Any]:
    text = _single_string(inputs)
    if text is None or not isinstance(regex, str) or not isinstance(substitution, str):
        return []
    if regex == "":
        return [text]
    return [re.sub(regex, re.sub(r"\$(\d+)", r"\\\1", substitution), text)]


def _round(inputs: list[Any], precision: Any = None) -> list[Any]:
    if not inputs:
        return []
    return [math.rround(None, inputs, [] if precision is None else [precision])]


def _to_boolean_value(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal) and value in (0, 1):
        return value == 1
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in ("true", "t", "yes", "y", "1", "1.0"):
            return True
        if lowered in ("false", "f", "no", "n", "0", "0.0"):
            return False
    return None


def _to_boolean(inputs: list[Any]) -> list[Any]:
    if len(inputs) != 1:
        return []
    result = _to_boolean_value(_data(inputs[0]))
    return [] if result is None else [result]


def _converts_to_boolean(inputs: list[Any]) -> list[Any]:
    return [] if len(inputs) != 1 else [_to_boolean_value(_data(inputs[0])) is not None]


def _quantity(value: Any) -> Any:
    """A FHIR Quantity dict with a UCUM code as fhirpathpy's FP_Quantity; anything else unchanged."""
    if isinstance(value, dict) and {"value", "code"} <= value.keys() and value.get("system") == _UCUM:
        unit = FP_Quantity.timeUnitsToUCUM.get(value["code"], f"'{value['code']}'")
        return FP_Quantity(Decimal(str(value["value"])), unit)
    return value


def _equivalent_collections(left: list[Any], right: list[Any]) -> bool:
    """Collections are equivalent when every item has an equivalent partner, in any order."""
    if len(left) != len(right):
        return False
    unmatched = [_quantity(_data(v)) for v in right]
    for item in [_quantity(_data(v)) for v in left]:
        for i, other in enumerate(unmatched):
            if equality.equivalence(None, [item], [other]):
                del unmatched[i]
                break
        else:
            return False
    return True


def _equivalent(inputs: list[Any], other: list[Any]) -> list[Any]:
    return [_equivalent_collections(inputs, other)]


def _not_equivalent(inputs: list[Any], other: list[Any]) -> list[Any]:
    return [not _equivalent_collections(inputs, other)]


FUNCTIONS: dict[str, dict[str, Any]] = {
    "toString": {"fn": _to_string},
    "not": {"fn": _not},
    "single": {"fn": _single},
    "startsWith": {"fn": _starts_with, "arity": {1: ["String"]}},
    "endsWith": {"fn": _ends_with, "arity": {1: ["String"]}},
    "indexOf": {"fn": _index_of, "arity": {1: ["String"]}},
    "replace": {"fn": _replace, "arity": {2: ["String", "String"]}},
    "replaceMatches": {"fn": _replace_matches, "arity": {2: ["String", "String"]}},
    "toBoolean": {"fn": _to_boolean},
    "convertsToBoolean": {"fn": _converts_to_boolean},
    "round": {"fn": _round, "arity": {0: [], 1: ["Integer"]}},
    "~": {"fn": _equivalent, "arity": {2: ["Any", "Any"]}},
    "!~": {"fn": _not_equivalent, "arity": {2: ["Any", "Any"]}},
}


def _number_literal(ctx: Any, parent: Any, node: dict[str, Any]) -> list[Any]:
    text: str = node["text"]
    return [Decimal(text)] if "." in text else [int(text)]


_original_type_of = TypeInfo.create_by_value_in_namespace


def _type_of(namespace: str, value: Any) -> TypeInfo:
    if isinstance(value, FP_DateTime) and value.asStr and _DATE_ONLY.match(value.asStr):
        return TypeInfo("Date" if namespace == TypeInfo.System else "date", namespace)
    return _original_type_of(namespace, value)


_installed = False


def install() -> None:
    """Apply the two monkeypatches (idempotent)."""
    global _installed
    if _installed:
        return
    # fhirpathpy turns `1.0` into the integer 1, losing the Decimal type and its precision.
    evaluators["NumberLiteral"] = _number_literal
    # fhirpathpy types `@2015-02-04` as DateTime; FHIRPath says it is a Date.
    TypeInfo.create_by_value_in_namespace = staticmethod(_type_of)  # type: ignore[method-assign]
    _installed = True
