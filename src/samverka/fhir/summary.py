"""`_summary` and `_elements` on returned resources: https://hl7.org/fhir/R4/search.html#summary"""

from __future__ import annotations

from functools import cache
from typing import Any

from .definitions import structure_definitions

_ALWAYS = ("resourceType", "id", "meta")
_SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
              "display": "Resource encoded in summary mode"}


@cache
def _top_level(type_: str) -> tuple[frozenset[str], frozenset[str]]:
    """(summary element names, mandatory element names) at the top level of a resource type."""
    sd = structure_definitions().get(type_)
    summary: set[str] = set()
    mandatory: set[str] = set()
    if sd is None:
        return frozenset(), frozenset()
    for el in sd["snapshot"]["element"]:
        path = el["path"].split(".")
        if len(path) != 2:
            continue
        name = path[1]
        names = [name]
        if name.endswith("[x]"):
            names = [name[:-3] + t["code"][:1].upper() + t["code"][1:] for t in el.get("type", [])]
        if el.get("isSummary"):
            summary.update(names)
        if el.get("min", 0) > 0:
            mandatory.update(names)
    return frozenset(summary), frozenset(mandatory)


def _mark(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    resource["meta"] = meta
    return resource


def summarize(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    """Apply `_summary=true|text|data|false` to one resource."""
    if mode in ("false", ""):
        return resource
    type_ = resource.get("resourceType", "")
    summary, mandatory = _top_level(type_)
    keep: set[str]
    if mode == "true":
        keep = set(summary) | set(_ALWAYS)
    elif mode == "text":
        keep = {"text", *_ALWAYS, *mandatory}
    elif mode == "data":
        keep = set(resource) - {"text"}
    else:
        return resource
    out = {k: v for k, v in resource.items() if k in keep or k.lstrip("_") in keep}
    return _mark(out)


def elements(resource: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Apply `_elements=a,b` (top-level names; mandatory elements are kept, as the spec allows)."""
    _summary, mandatory = _top_level(resource.get("resourceType", ""))
    keep = set(names) | set(_ALWAYS) | set(mandatory)
    return _mark({k: v for k, v in resource.items() if k in keep or k.lstrip("_") in keep})
