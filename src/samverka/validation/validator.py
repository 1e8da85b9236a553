"""Structural validation of R4 JSON resources against the base definitions (https://hl7.org/fhir/R4/validation.html).

Walks the JSON once against the compiled `TypeModel`s and collects every problem as an `Issue`
with a FHIRPath expression (`Patient.name[0].given[1]`). Covers: unknown properties, JSON shape
(https://hl7.org/fhir/R4/json.html), cardinality, primitive formats, choice types, nested and
contained resources, required bindings and reference syntax (https://hl7.org/fhir/R4/references.html).
FHIRPath invariants are not evaluated.
"""

from __future__ import annotations

import re
import threading
from typing import Any, ClassVar

from samverka.errors import Issue
from samverka.fhir.definitions import resource_types, structure_definitions
from samverka.validation.model import COMPLEX, PRIM, Elem, Models, TypeModel
from samverka.validation.primitives import ID_RE, json_kind

_ID = r"[A-Za-z0-9\-\.]{1,64}"
_RELATIVE = re.compile(rf"([A-Z][A-Za-z]+)/({_ID})(/_history/{_ID})?")
_CONDITIONAL = re.compile(r"([A-Z][A-Za-z]+)\?\S*")
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")
_UUID = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_OID = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+")
_SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"


def _err(code: str, text: str, expression: str | None) -> Issue:
    return Issue("error", code, text, expression)


class Validator:
    """Validates resource JSON (as decoded dicts) against the compiled base R4 definitions."""

    _default: ClassVar[Validator | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, models: Models) -> None:
        self._models = models
        self._resources = models.resources
        self._element_type = models.types["Element"]
        self._types = frozenset(models.resources)

    @classmethod
    def default(cls) -> Validator:
        """The process-wide validator over the shipped definitions, compiled on first use."""
        if cls._default is None:
            with cls._lock:
                if cls._default is None:
                    cls._default = cls(Models(structure_definitions(), resource_types()))
        return cls._default

    def validate(self, resource: Any, expected_type: str | None = None) -> list[Issue]:
        """Every problem found in `resource`; `[]` when it is valid."""
        issues: list[Issue] = []
        if type(resource) is not dict:
            issues.append(
                _err(
                    "structure", f"A resource must be a JSON object, got {json_kind(resource)}", expected_type
                )
            )
            return issues
        rt = resource.get("resourceType")
        if expected_type is not None and rt != expected_type and type(rt) is str and rt:
            text = f"resourceType '{rt}' does not match the expected type '{expected_type}'"
            issues.append(_err("invalid", text, rt))
        try:
            if rt is None and expected_type in self._resources:
                # report the missing resourceType, then still check the content against the expected type
                issues.append(_err("required", "resourceType is missing", expected_type))
                self._obj(resource, self._resources[expected_type], expected_type, issues)
            elif type(rt) is str and rt in self._resources:
                self._resource(resource, rt, issues)
            else:
                self._resource(
                    resource, expected_type or (rt if type(rt) is str and rt else "Resource"), issues
                )
        except RecursionError:
            issues.append(_err("structure", "The resource is nested too deeply to validate", expected_type))
        return issues

    # -- walking -------------------------------------------------------------------------------

    def _resource(self, res: dict[str, Any], path: str, issues: list[Issue]) -> None:
        rt = res.get("resourceType")
        if rt is None:
            issues.append(_err("required", "resourceType is missing", path))
            return
        model = self._resources.get(rt) if type(rt) is str else None
        if model is None:
            issues.append(_err("invalid", f"Unknown resource type {rt!r}", path))
            return
        self._obj(res, model, path, issues)

    def _obj(self, obj: dict[str, Any], model: TypeModel, path: str, issues: list[Issue]) -> None:
        elems = model.elems
        choices: dict[str, str] | None = None
        for key, value in obj.items():
            elem = elems.get(key)
            if elem is None:
                if key == "resourceType" and model.is_resource:
                    continue
                if key[:1] == "_":
                    base = elems.get(key[1:])
                    if base is not None and base.kind == PRIM:
                        self._companion(obj, key[1:], value, base, path, issues)
                        continue
                text = f"Unknown element '{key}' in {model.name}"
                issues.append(_err("structure", text, f"{path}.{key}"))
                continue
            p = f"{path}.{key}"
            if elem.choice is not None:
                if choices is None:
                    choices = {}
                prev = choices.get(elem.choice)
                if prev is not None:
                    text = f"Only one of {elem.choice}[x] may be present, found '{prev}' and '{key}'"
                    issues.append(_err("structure", text, p))
                else:
                    choices[elem.choice] = key
            if elem.array:
                if type(value) is list:
                    self._array(obj, key, value, elem, p, issues)
                else:
                    issues.append(_err("structure", f"'{key}' must be a JSON array", p))
                    if value is not None:
                        self._value(value, elem, p, issues)
            elif type(value) is list:
                issues.append(_err("structure", f"'{key}' must be a single value, not an array", p))
            elif value is None:
                issues.append(_err("structure", f"'{key}' must not be null", p))
            else:
                self._value(value, elem, p, issues)
        for label, keys in model.required:
            for k in keys:
                if k in obj:
                    break
            else:
                text = f"Missing required element '{label}' (min 1) in {model.name}"
                issues.append(_err("required", text, f"{path}.{label}"))

    def _array(
        self, obj: dict[str, Any], key: str, value: list[Any], elem: Elem, p: str, issues: list[Issue]
    ) -> None:
        n = len(value)
        if n == 0:
            issues.append(_err("structure", f"'{key}' must not be an empty array", p))
            return
        if elem.max is not None and n > elem.max:
            issues.append(_err("structure", f"'{key}' has {n} items, more than the maximum {elem.max}", p))
        if elem.kind == PRIM:
            companion = obj.get("_" + key)
            for i, item in enumerate(value):
                if item is None:
                    if not (type(companion) is list and i < len(companion) and companion[i] is not None):
                        text = f"null in '{key}' is only allowed with a matching '_{key}' entry"
                        issues.append(_err("structure", text, f"{p}[{i}]"))
                    continue
                self._value(item, elem, f"{p}[{i}]", issues)
        else:
            for i, item in enumerate(value):
                self._value(item, elem, f"{p}[{i}]", issues)

    def _value(self, value: Any, elem: Elem, p: str, issues: list[Issue]) -> None:
        kind = elem.kind
        if kind == PRIM:
            if type(value) is dict or type(value) is list or value is None:
                text = f"{elem.tname} value must be a primitive JSON value, got {json_kind(value)}"
                issues.append(_err("structure", text, p))
                return
            check = elem.check
            found = check(value) if check is not None else None
            if found is not None:
                issues.append(Issue(found[0], "value", found[1], p))
            elif elem.codes is not None and value not in elem.codes:
                text = f"Code {value!r} is not in the required value set {elem.binding}"
                issues.append(_err("code-invalid", text, p))
            return
        if type(value) is not dict:
            text = f"{elem.tname} must be a JSON object, got {json_kind(value)}"
            issues.append(_err("structure", text, p))
            return
        if kind == COMPLEX:
            if not value:
                issues.append(_err("structure", "Empty objects are not allowed", p))
                return
            model = elem.model
            if model is not None:
                self._obj(value, model, p, issues)
            if elem.vs is not None:
                self._binding(value, elem, p, issues)
            if elem.tname == "Reference":
                self._reference(value, elem, p, issues)
        else:
            self._resource(value, p, issues)

    def _companion(
        self, obj: dict[str, Any], key: str, value: Any, elem: Elem, path: str, issues: list[Issue]
    ) -> None:
        """`_key`: the id/extensions of primitive `key` (https://hl7.org/fhir/R4/json.html#primitive)."""
        p = f"{path}.{key}"
        if not elem.array:
            self._element(value, p, issues)
            return
        if type(value) is not list:
            issues.append(_err("structure", f"'_{key}' must be a JSON array", p))
            return
        if not value:
            issues.append(_err("structure", f"'_{key}' must not be an empty array", p))
            return
        values = obj.get(key)
        if values is not None and (type(values) is not list or len(values) != len(value)):
            text = f"'_{key}' must have as many entries as '{key}'"
            issues.append(_err("structure", text, p))
        for i, item in enumerate(value):
            if item is None:
                if values is None:
                    text = f"null in '_{key}' needs a matching value in '{key}'"
                    issues.append(_err("structure", text, f"{p}[{i}]"))
                continue
            self._element(item, f"{p}[{i}]", issues)

    def _element(self, value: Any, p: str, issues: list[Issue]) -> None:
        if type(value) is not dict:
            issues.append(
                _err("structure", f"Primitive extension must be a JSON object, got {json_kind(value)}", p)
            )
        elif not value:
            issues.append(_err("structure", "Empty objects are not allowed", p))
        else:
            self._obj(value, self._element_type, p, issues)

    # -- semantic checks -----------------------------------------------------------------------

    def _binding(self, value: dict[str, Any], elem: Elem, p: str, issues: list[Issue]) -> None:
        vs = elem.vs
        assert vs is not None
        if elem.tname == "Coding":
            system, code = value.get("system"), value.get("code")
            if type(system) is str and system in vs and type(code) is str and code not in vs[system]:
                text = f"Code {code!r} from {system} is not in the required value set {elem.binding}"
                issues.append(_err("code-invalid", text, f"{p}.code"))
            return
        codings = value.get("coding")
        if type(codings) is not list:
            return
        hits = [
            (i, c)
            for i, c in enumerate(codings)
            if type(c) is dict and type(c.get("system")) is str and c["system"] in vs
        ]
        if not hits or any(c.get("code") in vs[c["system"]] for _, c in hits if type(c.get("code")) is str):
            return
        if len(hits) == 1:
            i, c = hits[0]
            text = (
                f"Code {c.get('code')!r} from {c['system']} is not in the required value set {elem.binding}"
            )
            issues.append(_err("code-invalid", text, f"{p}.coding[{i}].code"))
        else:
            text = f"None of the codings is in the required value set {elem.binding}"
            issues.append(_err("code-invalid", text, p))

    def _reference(self, value: dict[str, Any], elem: Elem, p: str, issues: list[Issue]) -> None:
        declared: str | None = None
        rtype = value.get("type")
        if type(rtype) is str:
            name = rtype[len(_SD_PREFIX) :] if rtype.startswith(_SD_PREFIX) else rtype
            if name in self._types:
                declared = name
                if elem.targets is not None and name not in elem.targets:
                    text = (
                        f"Reference.type {name} is not an allowed target ({', '.join(sorted(elem.targets))})"
                    )
                    issues.append(_err("invalid", text, f"{p}.type"))
        ref = value.get("reference")
        if type(ref) is not str or not ref:
            return
        rp = f"{p}.reference"
        target: str | None = None
        if ref[0] == "#":
            if len(ref) > 1 and ID_RE.fullmatch(ref, 1) is None:
                issues.append(_err("invalid", f"{ref!r} is not a valid contained reference", rp))
            return
        if ref.startswith("urn:"):
            if _UUID.fullmatch(ref) is None and _OID.fullmatch(ref) is None:
                issues.append(_err("invalid", f"{ref!r} is not a valid urn:uuid: or urn:oid: reference", rp))
            return
        m = _RELATIVE.fullmatch(ref) or _CONDITIONAL.fullmatch(ref)
        if m is not None:
            target = m.group(1)
            if target not in self._types:
                issues.append(_err("invalid", f"Unknown resource type {target!r} in reference {ref!r}", rp))
                return
        elif _ABSOLUTE.fullmatch(ref) is None:
            text = f"{ref!r} is not a valid reference (Type/id, absolute URL, #id or urn:uuid:)"
            issues.append(_err("invalid", text, rp))
            return
        if target is None:
            return
        if declared is not None and target != declared:
            text = f"Reference {ref!r} points to a {target}, but Reference.type is {declared}"
            issues.append(_err("invalid", text, rp))
        elif elem.targets is not None and target not in elem.targets:
            allowed = ", ".join(sorted(elem.targets))
            text = f"Reference {ref!r} points to a {target}, which is not an allowed target ({allowed})"
            issues.append(_err("invalid", text, rp))
