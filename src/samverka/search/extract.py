"""Index rows and patient compartment of a resource, on the write path (https://hl7.org/fhir/R4/search.html).

`extract` runs the resource type's compiled extractor (see `compile_extract`): no FHIRPath is
interpreted per resource except for the few expressions the compiler cannot handle.
`patient_compartment` follows the R4 Patient CompartmentDefinition
(https://hl7.org/fhir/R4/compartmentdefinition-patient.html).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from samverka.fhir.definitions import compartment_definition
from samverka.search import near
from samverka.search.compile_plan import steps_runner
from samverka.search.normalize import parse_reference
from samverka.search.params import Registry
from samverka.store.base import IndexRows

_ROW_LISTS = (
    "tokens", "token_texts", "strings", "dates", "numbers", "quantities", "references", "uris", "composites"
)


def extract(resource: dict[str, Any], registry: Registry | None = None) -> IndexRows:
    """The search index rows of `resource` (duplicates removed), for every parameter of its type."""
    reg = registry or Registry.default()
    rows = IndexRows()
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        raise ValueError("resource without resourceType")
    extractor = reg.extractor(rtype)
    extractor.run(resource, rows)
    if rows.dates:
        rows.dates = _normal_dates(rows.dates, extractor.single_dates)
    if rtype == "Location":
        near.index(resource, reg, rows)  # a special parameter: no FHIRPath to compile
    for name in _ROW_LISTS:
        lst = getattr(rows, name)
        if len(lst) > 1:
            deduped = list(dict.fromkeys(lst))
            if len(deduped) != len(lst):
                setattr(rows, name, deduped)
    return rows


def _normal_dates(dates: list[tuple[int, int, int]], single: frozenset[int]) -> list[tuple[int, int, int]]:
    """Every date row with lo <= hi (a Period whose end precedes its start, which R4 forbids but validation
    does not catch when the offsets differ: its two ends swapped), and one row, the hull, for a parameter
    R4 allows one value (`single`) that holds several (stored without validation). The date windows of
    `search.window` bound `lo` by `hi` and read one row per resource for such parameters."""
    out: list[tuple[int, int, int]] = []
    hulls: dict[int, tuple[int, int]] = {}
    for pid, lo, hi in dates:
        if lo > hi:
            lo, hi = hi, lo
        if pid not in single:
            out.append((pid, lo, hi))
        elif pid in hulls:
            a, b = hulls[pid]
            hulls[pid] = (min(a, lo), max(b, hi))
        else:
            hulls[pid] = (lo, hi)
    out += [(pid, lo, hi) for pid, (lo, hi) in hulls.items()]
    return out


def raw_values(
    resource: dict[str, Any], code: str, registry: Registry | None = None
) -> list[tuple[Any, str]]:
    """The (value, FHIR type) pairs a parameter selects from `resource`, before conversion (diagnostics)."""
    reg = registry or Registry.default()
    compiled = reg.compiled(resource["resourceType"], code)
    return compiled.values(resource) if compiled else []


@cache
def _compartment_params() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for entry in compartment_definition("Patient").get("resource", ()):
        params = tuple(p for p in entry.get("param", ()) if not p.startswith("{"))
        if params:
            out[entry["code"]] = params
    return out


_Finder = Callable[[dict[str, Any]], "str | None"]


def _compartment_finder(resource_type: str, registry: Registry) -> _Finder | None:
    runs: list[Callable[[list[Any], Any], list[Any]]] = []
    for code in _compartment_params().get(resource_type, ()):
        compiled = registry.compiled(resource_type, code)
        if compiled is None:
            continue
        runs.extend(steps_runner(b.steps) for b in compiled.branches if b.ctx.type == "Reference")
    if not runs:
        return None

    def find(resource: dict[str, Any]) -> str | None:
        for run in runs:
            for ref in run([resource], resource):
                target = ref.get("reference") if type(ref) is dict else None
                if isinstance(target, str):
                    parsed = parse_reference(target)
                    if parsed and parsed[0] == "Patient" and parsed[1] != target:
                        return parsed[1]
        return None

    return find


_finders: dict[tuple[int, str], _Finder | None] = {}


def patient_compartment(resource: dict[str, Any], registry: Registry | None = None) -> str | None:
    """The id of the Patient whose compartment `resource` is in (its own id for a Patient).

    Uses the R4 Patient CompartmentDefinition's parameters in their listed order and takes the first
    local `Patient/<id>` reference; absolute and unresolved (urn:uuid) references do not count.
    """
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    if not isinstance(rtype, str):
        return None
    reg = registry or Registry.default()
    key = (id(reg), rtype)
    if key not in _finders:
        _finders[key] = _compartment_finder(rtype, reg)
    finder = _finders[key]
    return finder(resource) if finder else None
