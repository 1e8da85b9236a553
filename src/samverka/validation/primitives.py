"""Checkers for the R4 primitive datatypes in JSON (https://hl7.org/fhir/R4/datatypes.html#primitive).

Each checker takes the decoded JSON value and returns `None` when it is valid, or a `Finding`
(severity, diagnostics). The regular expressions are the ones the shipped primitive
StructureDefinitions declare (the `regex` extension on `<type>.value`), compiled once.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from typing import Any

from samverka.fhir.definitions import structure_definitions

Finding = tuple[str, str]  # (severity, diagnostics)
Checker = Callable[[Any], Finding | None]

_REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
_MAX_STRING = 1024 * 1024
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1

# Used only when a shipped definition lacks a regex (kept in step with the R4 spec page).
_FALLBACK = {
    "base64Binary": r"(\s*([0-9a-zA-Z\+/=]){4}\s*)+",
    "code": r"[^\s]+(\s[^\s]+)*",
    "id": r"[A-Za-z0-9\-\.]{1,64}",
    "oid": r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+",
    "uuid": r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "uri": r"\S*",
    "url": r"\S*",
    "canonical": r"\S*",
}
_DATE_TYPES = ("date", "dateTime", "instant")
_STRINGISH = ("string", "markdown")


def _regexes() -> dict[str, re.Pattern[str]]:
    out: dict[str, re.Pattern[str]] = {}
    for name, sd in structure_definitions().items():
        if sd.get("kind") != "primitive-type":
            continue
        for el in sd["snapshot"]["element"]:
            if el["path"] != f"{name}.value":
                continue
            for ext in el.get("type", [{}])[0].get("extension", []):
                if ext.get("url") == _REGEX_EXT:
                    out[name] = re.compile(ext["valueString"])
    for name, rx in _FALLBACK.items():
        out.setdefault(name, re.compile(rx))
    return out


def _calendar_ok(text: str) -> bool:
    """The regexes accept day 31 in every month; reject dates that do not exist."""
    if len(text) < 10 or text[8:10] <= "28":
        return True
    try:
        _dt.date(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    return True


# R4 strings "SHALL NOT contain Unicode character points below 32, except for u0009, u000D and u000A"
# (https://hl7.org/fhir/R4/datatypes.html#string); PostgreSQL would refuse a NUL outright.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]").search


def _string_checker(name: str, rx: re.Pattern[str] | None) -> Checker:
    match = rx.fullmatch if rx is not None else None
    label = f"a valid {name}"
    is_date = name in _DATE_TYPES
    is_text = name in _STRINGISH

    def check(v: Any) -> Finding | None:
        if type(v) is not str:
            return "error", f"{name} value must be a JSON string, got {_json_kind(v)}"
        if not v:
            return "error", f"{name} value must not be an empty string"
        if _CONTROL(v) is not None:
            return "error", f"{name} value contains a control character (below U+0020 other than tab, CR, LF)"
        if is_text:
            if len(v) > _MAX_STRING:
                return "error", f"{name} value exceeds the 1 MB limit"
            if v.isspace():
                return "warning", f"{name} value should contain non-whitespace content"
            return None
        if match is not None and match(v) is None:
            return "error", f"{v!r} is not {label}"
        if is_date and not _calendar_ok(v):
            return "error", f"{v!r} is not {label}: no such calendar date"
        return None

    return check


def _integer_checker(name: str, low: int) -> Checker:
    def check(v: Any) -> Finding | None:
        if type(v) is not int:
            return "error", f"{name} value must be a JSON integer number, got {_json_kind(v)}"
        if v < low or v > _INT_MAX:
            return "error", f"{v} is out of range for {name} ({low}..{_INT_MAX})"
        return None

    return check


def _check_decimal(v: Any) -> Finding | None:
    t = type(v)
    if t is float:
        if v != v or v in (float("inf"), float("-inf")):
            return "error", "decimal value must be a finite number"
        return None
    if t is int:
        return None
    return "error", f"decimal value must be a JSON number, got {_json_kind(v)}"


def _check_boolean(v: Any) -> Finding | None:
    if type(v) is bool:
        return None
    return "error", f"boolean value must be JSON true or false, got {_json_kind(v)}"


def _check_xhtml(v: Any) -> Finding | None:
    if type(v) is not str:
        return "error", f"xhtml value must be a JSON string, got {_json_kind(v)}"
    if not v.lstrip().startswith("<div"):
        return "error", "xhtml value must be a <div> element"
    return None


def _json_kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def build_checkers() -> dict[str, Checker]:
    """One checker per R4 primitive type name, plus `id` for resource ids."""
    rx = _regexes()
    out: dict[str, Checker] = {
        "boolean": _check_boolean,
        "decimal": _check_decimal,
        "integer": _integer_checker("integer", _INT_MIN),
        "unsignedInt": _integer_checker("unsignedInt", 0),
        "positiveInt": _integer_checker("positiveInt", 1),
        "xhtml": _check_xhtml,
    }
    for name in (
        "string",
        "markdown",
        "code",
        "id",
        "uri",
        "url",
        "canonical",
        "oid",
        "uuid",
        "base64Binary",
        "date",
        "dateTime",
        "instant",
        "time",
    ):
        out[name] = _string_checker(name, None if name in _STRINGISH else rx.get(name))
    return out


ID_RE = re.compile(r"[A-Za-z0-9\-\.]{1,64}")
json_kind = _json_kind
