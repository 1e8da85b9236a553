"""Turn typed FHIR values into index rows per search type (https://hl7.org/fhir/R4/search.html).

`converter(search_type, fhir_type)` picks, once at compile time, the function that appends the rows
for one value. Unparseable values (a malformed date, say) produce no rows rather than failing the write.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import Any

from samverka.fhir.definitions import resource_types
from samverka.search.normalize import (
    DATE_MAX_US,
    DATE_MIN_US,
    date_range,
    norm_string,
    number_range,
    parse_reference,
)
from samverka.store.base import IndexRows
from samverka.store.hashing import h64

Conv = Callable[[int, Any, IndexRows], None]

_h = lru_cache(maxsize=1 << 16)(h64)
ISO4217 = "urn:iso:std:iso:4217"
_INF = float("inf")

STRINGISH = frozenset(
    {"string", "markdown", "code", "id", "uri", "url", "canonical", "oid", "uuid", "base64Binary", "xhtml"}
)
QUANTITIES = frozenset(
    {"Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"}
)
NUMBERS = frozenset({"decimal", "integer", "positiveInt", "unsignedInt"})
DATES = frozenset({"date", "dateTime", "instant"})


def hs(value: Any) -> int:
    """h64 of a present string value, 0 when absent or empty."""
    return _h(value) if value and type(value) is str else 0


# --- token -------------------------------------------------------------------------------------


def _tok_coding(pid: int, c: Any, rows: IndexRows) -> None:
    if type(c) is not dict:
        return
    code, system = c.get("code"), c.get("system")
    if code or system:
        rows.tokens.append((pid, hs(system), hs(code)))
    display = c.get("display")
    if display and type(display) is str:
        rows.token_texts.append((pid, norm_string(display)))


def _tok_cc(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is not dict:
        return
    for c in v.get("coding", ()):
        _tok_coding(pid, c, rows)
    text = v.get("text")
    if text and type(text) is str:
        rows.token_texts.append((pid, norm_string(text)))


def of_type_system(type_system: str, type_code: str) -> int:
    """The system hash of an `:of-type` row: h64 of "type system|type code" (a real system has no `|`)."""
    return _h(f"{type_system}|{type_code}")


def _tok_identifier(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is not dict:
        return
    value = v.get("value")
    if value or v.get("system"):
        rows.tokens.append((pid, hs(v.get("system")), hs(value)))
    ident_type = v.get("type")
    if type(ident_type) is not dict:
        return
    if value and type(value) is str:
        # :of-type rows: (param, h64(type.system|type.code), h64(value)), see `of_type_system`
        for c in ident_type.get("coding", ()):
            if type(c) is dict and type(c.get("code")) is str and c["code"]:
                rows.tokens.append((pid, of_type_system(c.get("system") or "", c["code"]), _h(value)))
    text = ident_type.get("text")
    if text and type(text) is str:  # :text on an Identifier searches Identifier.type.text
        rows.token_texts.append((pid, norm_string(text)))


def _tok_contact(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is dict and v.get("value"):
        rows.tokens.append((pid, 0, hs(v.get("value"))))


def _tok_prim(pid: int, v: Any, rows: IndexRows) -> None:
    if v is True or v is False:
        rows.tokens.append((pid, 0, _h("true" if v else "false")))
    elif type(v) is str and v:
        rows.tokens.append((pid, 0, _h(v)))
    elif type(v) in (int, float):
        rows.tokens.append((pid, 0, _h(str(v))))


# --- string ------------------------------------------------------------------------------------


def _str_prim(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is str and v:
        rows.strings.append((pid, norm_string(v), v))


def _str_fields(fields: tuple[str, ...]) -> Conv:
    def conv(pid: int, v: Any, rows: IndexRows) -> None:
        if type(v) is not dict:
            return
        for f in fields:
            x = v.get(f)
            if type(x) is list:
                for s in x:
                    _str_prim(pid, s, rows)
            elif x:
                _str_prim(pid, x, rows)
    return conv


_STRING_COMPLEX: dict[str, Conv] = {
    "HumanName": _str_fields(("family", "given", "prefix", "suffix", "text")),
    "Address": _str_fields(("line", "city", "district", "state", "postalCode", "country", "text")),
    "CodeableConcept": _str_fields(("text",)),
    "Coding": _str_fields(("display",)),
    "Annotation": _str_fields(("text",)),
    "Reference": _str_fields(("display",)),
    "Identifier": _str_fields(("value",)),
    "ContactPoint": _str_fields(("value",)),
    "Attachment": _str_fields(("title",)),
}


# --- date --------------------------------------------------------------------------------------


def _date_prim(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is str:
        try:
            lo, hi = date_range(v)
        except ValueError:
            return
        rows.dates.append((pid, lo, hi))


def _date_period(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is not dict:
        return
    start, end = v.get("start"), v.get("end")
    if not start and not end:
        return
    try:
        lo = date_range(start)[0] if start else DATE_MIN_US
        hi = date_range(end)[1] if end else DATE_MAX_US
    except (ValueError, TypeError):
        return
    rows.dates.append((pid, lo, hi))


def _date_timing(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is not dict:
        return
    for e in v.get("event", ()):
        _date_prim(pid, e, rows)
    rep = v.get("repeat")
    if type(rep) is dict and "boundsPeriod" in rep:
        _date_period(pid, rep["boundsPeriod"], rows)


# --- number / quantity -------------------------------------------------------------------------


def _num_range(v: Any) -> tuple[float, float] | None:
    if isinstance(v, bool) or not isinstance(v, (int, float, Decimal)):
        return None
    try:
        return number_range(v)
    except ValueError:
        return None


def _number_prim(pid: int, v: Any, rows: IndexRows) -> None:
    r = _num_range(v)
    if r:
        rows.numbers.append((pid, r[0], r[1]))


def _exact(v: Any, default: float) -> float:
    if type(v) is dict and isinstance(v.get("value"), (int, float)) and not isinstance(v["value"], bool):
        return float(v["value"])
    return default


def _number_range_type(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is dict and (v.get("low") or v.get("high")):
        rows.numbers.append((pid, _exact(v.get("low"), -_INF), _exact(v.get("high"), _INF)))


def _number_quantity(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is dict:
        _number_prim(pid, v.get("value"), rows)


def _qty_units(v: dict[str, Any]) -> tuple[int, int]:
    return hs(v.get("system")), hs(v.get("code") or v.get("unit"))


def _qty(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is not dict:
        return
    r = _num_range(v.get("value"))
    if r:
        s, c = _qty_units(v)
        rows.quantities.append((pid, s, c, r[0], r[1]))


def _qty_money(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is not dict:
        return
    r = _num_range(v.get("value"))
    if r:
        cur = v.get("currency")
        rows.quantities.append((pid, _h(ISO4217) if cur else 0, hs(cur), r[0], r[1]))


def _qty_range(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is not dict:
        return
    low, high = v.get("low"), v.get("high")
    if not low and not high:
        return
    s, c = _qty_units(low if type(low) is dict and low else (high or {}))
    rows.quantities.append((pid, s, c, _exact(low, -_INF), _exact(high, _INF)))


# --- reference / uri ---------------------------------------------------------------------------


def ref_string(pid: int, ref: str, rows: IndexRows) -> None:
    parsed = parse_reference(ref)
    if parsed:
        rows.references.append((pid, _h(parsed[2]), parsed[0], parsed[1]))


def _ref_reference(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is not dict:
        return
    ref = v.get("reference")
    if ref and type(ref) is str:
        ref_string(pid, ref, rows)
    ident = v.get("identifier")
    if ident:
        _tok_identifier(pid, ident, rows)


def _ref_canonical(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is not str or not v:
        return
    rows.references.append((pid, _h(v), "", v))
    if "|" in v:  # a versioned canonical also matches its unversioned url
        base = v.split("|", 1)[0]
        rows.references.append((pid, _h(base), "", base))


def _ref_resource(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is dict and v.get("resourceType") and v.get("id"):
        key = f"{v['resourceType']}/{v['id']}"
        rows.references.append((pid, _h(key), v["resourceType"], v["id"]))


def _uri_prim(pid: int, v: Any, rows: IndexRows) -> None:
    if type(v) is str and v:
        rows.uris.append((pid, v))


def converter(search_type: str, fhir_type: str) -> Conv | None:
    """The row writer for values of `fhir_type` under a search parameter of `search_type`."""
    t = fhir_type
    if search_type == "token":
        if t == "CodeableConcept":
            return _tok_cc
        if t == "Coding":
            return _tok_coding
        if t == "Identifier":
            return _tok_identifier
        if t == "ContactPoint":
            return _tok_contact
        if t in STRINGISH or t == "boolean" or t in NUMBERS:
            return _tok_prim
        if t == "Reference":
            return lambda pid, v, rows: _tok_identifier(pid, v.get("identifier"), rows) if type(
                v) is dict else None
        return None
    if search_type == "string":
        return _str_prim if t in STRINGISH else _STRING_COMPLEX.get(t)
    if search_type == "date":
        if t in DATES:
            return _date_prim
        return {"Period": _date_period, "Timing": _date_timing}.get(t)
    if search_type == "number":
        if t in NUMBERS:
            return _number_prim
        return {"Range": _number_range_type, "Quantity": _number_quantity}.get(t)
    if search_type == "quantity":
        if t in QUANTITIES:
            return _qty
        return {"Money": _qty_money, "Range": _qty_range}.get(t)
    if search_type == "reference":
        if t == "Reference":
            return _ref_reference
        if t in ("canonical", "uri", "url", "oid", "uuid"):
            return _ref_canonical
        if t == "Identifier":
            return _tok_identifier  # the :identifier modifier
        if t in ("Resource", "DomainResource") or t in resource_types():
            return _ref_resource
        return None
    if search_type == "uri":
        return _uri_prim if t in STRINGISH else None
    return None
