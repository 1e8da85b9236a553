"""Compiles base R4 StructureDefinition snapshots into per-type element trees (https://hl7.org/fhir/R4/elementdefinition.html).

Every resource and complex datatype becomes a `TypeModel`: a dict from JSON property name to an
`Elem` that already knows its cardinality, JSON shape, primitive checker, nested model, required
binding expansion and allowed reference targets. `[x]` choice elements are expanded to one entry
per allowed type (`valueQuantity`, ...). Built once per process; validation never looks at a
StructureDefinition again.
"""

from __future__ import annotations

from typing import Any

from samverka.validation.primitives import Checker, build_checkers
from samverka.validation.terminology import Expansion, Terminology

PRIM, COMPLEX, RESOURCE = 0, 1, 2

_SYSTEM = "http://hl7.org/fhirpath/System."
_FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
_SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
_SYSTEM_FALLBACK = {
    "String": "string",
    "Boolean": "boolean",
    "Integer": "integer",
    "Decimal": "decimal",
    "Date": "date",
    "DateTime": "dateTime",
    "Time": "time",
}


class Elem:
    """One JSON property of a type: everything needed to check its value."""

    __slots__ = (
        "array",
        "binding",
        "check",
        "choice",
        "codes",
        "key",
        "kind",
        "max",
        "model",
        "targets",
        "tname",
        "vs",
    )

    def __init__(self, key: str, tname: str, kind: int, array: bool, max_: int | None) -> None:
        self.key = key
        self.tname = tname  # datatype name, e.g. "dateTime", "Quantity", "Resource"
        self.kind = kind
        self.array = array  # JSON array (base max > 1)
        self.max = max_  # max cardinality when finite and > 1, else None
        self.check: Checker | None = None  # primitives
        self.model: TypeModel | None = None  # complex types and backbone elements
        self.choice: str | None = None  # the `[x]` base name for choice variants
        self.codes: frozenset[str] | None = None  # required binding on a `code`
        self.vs: Expansion | None = None  # required binding on Coding/CodeableConcept
        self.targets: frozenset[str] | None = None  # Reference target types; None = any
        self.binding = ""  # canonical URL of the required ValueSet, for messages


class TypeModel:
    """A complex datatype, resource or BackboneElement: its properties and required ones."""

    __slots__ = ("elems", "is_resource", "name", "required")

    def __init__(self, name: str, is_resource: bool = False) -> None:
        self.name = name
        self.is_resource = is_resource
        self.elems: dict[str, Elem] = {}
        self.required: list[tuple[str, tuple[str, ...]]] = []  # (label, keys any of which satisfies)


class Models:
    """All compiled types, by name; `resources` holds only concrete resource types."""

    def __init__(self, sds: dict[str, dict[str, Any]], resource_types: frozenset[str]) -> None:
        self.checkers = build_checkers()
        self.terminology = Terminology()
        self.types: dict[str, TypeModel] = {}
        self._paths: dict[str, TypeModel] = {}
        self._pending: list[tuple[Elem, str]] = []
        compiled = [
            sd
            for sd in sds.values()
            if sd.get("kind") in ("complex-type", "resource") and sd.get("derivation") != "constraint"
        ]
        for sd in compiled:
            self.types[sd["type"]] = TypeModel(sd["type"], sd["kind"] == "resource")
        for sd in compiled:
            self._compile(sd)
        for elem, ref in self._pending:
            elem.model = self._paths[ref]
        self.resources = {name: self.types[name] for name in resource_types if name in self.types}

    def _compile(self, sd: dict[str, Any]) -> None:
        elements = sd["snapshot"]["element"]
        root = elements[0]["path"]
        children: dict[str, list[dict[str, Any]]] = {}
        for el in elements[1:]:
            parent = el["path"].rpartition(".")[0]
            children.setdefault(parent, []).append(el)
        model = self.types[sd["type"]]
        self._paths[root] = model
        self._fill(model, root, children, sd["kind"] == "resource")

    def _fill(
        self,
        model: TypeModel,
        path: str,
        children: dict[str, list[dict[str, Any]]],
        is_resource_root: bool = False,
    ) -> None:
        for el in children.get(path, []):
            name = el["path"].rpartition(".")[2]
            base_max = el.get("base", {}).get("max", el.get("max", "1"))
            array = base_max != "1" and base_max != "0"
            mx = el.get("max", "1")
            max_ = int(mx) if mx not in ("*", "0", "1") else None
            is_choice = name.endswith("[x]")
            base = name[:-3] if is_choice else name
            keys: list[str] = []
            if "contentReference" in el:
                elem = Elem(base, "BackboneElement", COMPLEX, array, max_)
                self._pending.append((elem, el["contentReference"].lstrip("#")))
                model.elems[base] = elem
                keys.append(base)
            elif el["path"] in children:  # an inline BackboneElement (or Element) with its own children
                sub = TypeModel(el["path"])
                self._paths[el["path"]] = sub
                self._fill(sub, el["path"], children)
                elem = Elem(base, "BackboneElement", COMPLEX, array, max_)
                elem.model = sub
                model.elems[base] = elem
                keys.append(base)
            else:
                for t in el.get("type", []):
                    tname = self._type_name(t, is_resource_root and name == "id")
                    key = base + tname[0].upper() + tname[1:] if is_choice else base
                    elem = self._typed(key, tname, t, el, array, max_)
                    if is_choice:
                        elem.choice = base
                    model.elems[key] = elem
                    keys.append(key)
                    if elem.kind == PRIM:
                        keys.append("_" + key)
            if el.get("min", 0) > 0 and keys:
                model.required.append((base, tuple(keys)))

    def _type_name(self, t: dict[str, Any], resource_id: bool) -> str:
        if resource_id:
            return "id"
        code: str = t["code"]
        if code.startswith(_SYSTEM):
            for ext in t.get("extension", []):
                if ext.get("url") == _FHIR_TYPE_EXT:
                    url: str = ext["valueUrl"]
                    return url.rpartition("/")[2]
            return _SYSTEM_FALLBACK.get(code[len(_SYSTEM) :], "string")
        return code

    def _typed(
        self, key: str, tname: str, t: dict[str, Any], el: dict[str, Any], array: bool, max_: int | None
    ) -> Elem:
        if tname in self.checkers:
            elem = Elem(key, tname, PRIM, array, max_)
            elem.check = self.checkers[tname]
        elif tname == "Resource":
            elem = Elem(key, tname, RESOURCE, array, max_)
        else:
            elem = Elem(key, tname, COMPLEX, array, max_)
            elem.model = self.types[tname]
        binding = el.get("binding")
        if binding and binding.get("strength") == "required" and "valueSet" in binding:
            elem.binding = binding["valueSet"].split("|", 1)[0]
            if tname == "code":
                exp = self.terminology.expand(binding["valueSet"])
                if exp is not None:
                    elem.codes = frozenset().union(*exp.values())
            elif tname in ("Coding", "CodeableConcept"):
                elem.vs = self.terminology.expand(binding["valueSet"])
        if tname == "Reference":
            targets = {p.rpartition("/")[2] for p in t.get("targetProfile", []) if p.startswith(_SD_PREFIX)}
            if targets and "Resource" not in targets:
                elem.targets = frozenset(targets)
        return elem
