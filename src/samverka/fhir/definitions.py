"""The FHIR R4 4.0.1 core definitions shipped inside the package (HL7 content, CC0).

`fhir/data/*.json.xz` are compressed copies of the files in `shared/fhir-r4/`; `tools/ship_definitions.sh`
refreshes them. Each bundle is decompressed and parsed once per process on first use.
"""

from __future__ import annotations

import lzma
from functools import cache
from importlib import resources
from typing import Any

import orjson

_FILES = ("search-parameters", "profiles-resources", "profiles-types", "valuesets")


@cache
def bundle(name: str) -> dict[str, Any]:
    """One shipped Bundle by file stem, for example `bundle("search-parameters")`."""
    if name not in _FILES:
        raise KeyError(name)
    raw = resources.files("samverka.fhir").joinpath("data", f"{name}.json.xz").read_bytes()
    result: dict[str, Any] = orjson.loads(lzma.decompress(raw))
    for entry in result.get("entry", []):
        _slim(entry.get("resource") or {})
    return result


# Prose nobody reads at run time: dropping it keeps every worker about 80 MB smaller.
_ELEMENT_PROSE = ("definition", "comment", "requirements", "mapping", "alias", "example", "meaningWhenMissing")


def _slim(resource: dict[str, Any]) -> None:
    resource.pop("text", None)
    if resource.get("resourceType") == "StructureDefinition":
        resource.pop("mapping", None)
        for part in ("snapshot", "differential"):
            for element in (resource.get(part) or {}).get("element", []):
                for key in _ELEMENT_PROSE:
                    element.pop(key, None)
    elif resource.get("resourceType") == "CodeSystem":
        stack = list(resource.get("concept", []))
        while stack:
            concept = stack.pop()
            concept.pop("definition", None)
            stack.extend(concept.get("concept", []))


def resources_of(name: str, resource_type: str | None = None) -> list[dict[str, Any]]:
    """The resources in one shipped Bundle, optionally only those of one type."""
    out = [e["resource"] for e in bundle(name).get("entry", [])]
    if resource_type:
        out = [r for r in out if r.get("resourceType") == resource_type]
    return out


@cache
def structure_definitions() -> dict[str, dict[str, Any]]:
    """Base StructureDefinitions by name (resources and datatypes)."""
    out: dict[str, dict[str, Any]] = {}
    for name in ("profiles-types", "profiles-resources"):
        for sd in resources_of(name, "StructureDefinition"):
            out[sd["id"]] = sd
    return out


@cache
def resource_types() -> frozenset[str]:
    """Every concrete R4 resource type name (146 of them)."""
    return frozenset(
        sd["id"]
        for sd in resources_of("profiles-resources", "StructureDefinition")
        if sd.get("kind") == "resource" and not sd.get("abstract") and sd.get("derivation") != "constraint"
    )


@cache
def compartment_definition(code: str) -> dict[str, Any]:
    for cd in resources_of("profiles-resources", "CompartmentDefinition"):
        if cd.get("code") == code:
            return cd
    raise KeyError(code)


@cache
def patient_compartment_types() -> frozenset[str]:
    """Patient and every type of the R4 Patient compartment (the types that can hold patient data)."""
    codes = {r["code"] for r in compartment_definition("Patient").get("resource", []) if r.get("param")}
    return frozenset(codes | {"Patient"})
