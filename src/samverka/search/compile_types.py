"""Element type lookup for compiling SearchParameter paths (https://hl7.org/fhir/R4/searchparameter.html).

Answers "what JSON keys and FHIR types does `<context>.<name>` have?" from the shipped R4
StructureDefinitions, so compiled walkers know each value's datatype without guessing from JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from samverka.fhir.definitions import structure_definitions

_FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
_SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}
# FHIRPath System type names used (loosely) in some R4 expressions, e.g. `value.as(DateTime)`
SYSTEM_TYPE_ALIASES = {
    "String": "string",
    "Boolean": "boolean",
    "Integer": "integer",
    "Decimal": "decimal",
    "Date": "date",
    "DateTime": "dateTime",
    "Time": "time",
}


@dataclass(frozen=True, slots=True)
class TypeCtx:
    """Where a value sits: its FHIR type code, plus the StructureDefinition and path of its children."""

    type: str
    sd: str
    path: str


@dataclass(frozen=True, slots=True)
class Child:
    key: str  # the JSON property name (choice elements carry the type suffix: valueQuantity)
    ctx: TypeCtx
    choice: bool


def _type_code(t: dict[str, Any]) -> str:
    code: str = t["code"]
    if code.startswith("http://hl7.org/fhirpath/"):
        for ext in t.get("extension", ()):
            if ext.get("url") == _FHIR_TYPE_EXT:
                return str(ext["valueUrl"])
        return _SYSTEM_TYPES.get(code, "string")
    return code


@cache
def _elements(sd_name: str) -> dict[str, dict[str, Any]]:
    sd = structure_definitions()[sd_name]
    out: dict[str, dict[str, Any]] = {}
    root = sd["snapshot"]["element"][0]["path"]
    for el in sd["snapshot"]["element"]:
        path: str = el["path"]
        # constrained profiles keep their base type as path root; index relative to the SD name
        out[sd_name + path[len(root):]] = el
    return out


def is_known_type(name: str) -> bool:
    return name in structure_definitions()


def root_ctx(type_name: str) -> TypeCtx:
    return TypeCtx(type_name, type_name, type_name)


def ctx_for_type(type_code: str, sd: str = "", path: str = "") -> TypeCtx:
    if type_code in ("BackboneElement", "Element") and sd:
        return TypeCtx(type_code, sd, path)
    return TypeCtx(type_code, type_code, type_code)


@cache
def children(ctx: TypeCtx, name: str) -> tuple[Child, ...]:
    """The JSON keys and types of `name` under `ctx`; empty when the element does not exist."""
    if ctx.sd not in structure_definitions():
        return ()
    els = _elements(ctx.sd)
    path = f"{ctx.path}.{name}"
    el = els.get(path)
    choice = False
    if el is None:
        el = els.get(path + "[x]")
        choice = el is not None
    if el is None:
        return ()
    ref = el.get("contentReference")
    if ref:
        target = ctx.sd + ref[1:][ref[1:].index("."):] if "." in ref else ctx.sd
        return (Child(name, TypeCtx("BackboneElement", ctx.sd, target), False),)
    out: list[Child] = []
    for t in el.get("type", ()):
        code = _type_code(t)
        key = name + code[0].upper() + code[1:] if choice else name
        if code in ("BackboneElement", "Element"):
            out.append(Child(key, TypeCtx(code, ctx.sd, path), choice))
        else:
            out.append(Child(key, TypeCtx(code, code, code), choice))
    return tuple(out)


@cache
def path_types(type_name: str, steps: tuple[str, ...]) -> frozenset[str] | None:
    """The type codes of `type_name.<steps>` when every element on the path has cardinality ..1 (so a resource
    holds at most one value there); None for a repeating element, an unknown one or a choice on the way."""
    ctx = root_ctx(type_name)
    for i, name in enumerate(steps):
        if ctx.sd not in structure_definitions():
            return None
        els = _elements(ctx.sd)
        el = els.get(f"{ctx.path}.{name}") or els.get(f"{ctx.path}.{name}[x]")
        kids = children(ctx, name)
        if el is None or el.get("max") != "1" or not kids:
            return None
        if i == len(steps) - 1:
            return frozenset(k.ctx.type for k in kids)
        if len(kids) != 1:
            return None
        ctx = kids[0].ctx
    return None


def is_subtype(type_code: str, ancestor: str) -> bool:
    """True when `type_code` is `ancestor` or derives from it (Age is a Quantity, Patient a Resource)."""
    sds = structure_definitions()
    seen = 0
    while type_code and seen < 10:
        if type_code == ancestor:
            return True
        sd = sds.get(type_code)
        if sd is None:
            return False
        base = sd.get("baseDefinition", "")
        type_code = base.rsplit("/", 1)[-1] if base else ""
        seen += 1
    return False
