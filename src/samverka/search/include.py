"""`_include` and `_revinclude`, with `:iterate` and wildcards: https://hl7.org/fhir/R4/search.html#include

Both follow the reference index from the page's resources (never the JSON), in batches, and apply the
same access filters as the main query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import invalid
from ..fhir.instant import format_instant
from ..store import Version
from ..store.hashing import h64
from .params import Registry
from .plan import Fetcher

MAX_ITERATIONS = 4
MAX_INCLUDED = 1000  # per search page; more is reported as truncated


@dataclass(frozen=True)
class Spec:
    source: str  # the resource type holding the reference
    params: tuple[int, ...]  # reference parameter ids (all of the type's for `*`)
    target: str | None  # restrict to one target type
    reverse: bool
    iterate: bool


def parse_specs(registry: Registry, result: dict[str, list[str]]) -> list[Spec]:
    specs = []
    for name in ("_include", "_include:iterate", "_include:recurse", "_revinclude", "_revinclude:iterate",
                 "_revinclude:recurse"):
        for raw in result.get(name, []):
            specs.append(_spec(registry, name, raw))
    return specs


def _spec(registry: Registry, name: str, raw: str) -> Spec:
    reverse = name.startswith("_revinclude")
    iterate = name.endswith((":iterate", ":recurse"))
    if raw == "*":
        raise invalid(f"{name}=* needs a source type: use {name}=Type:*", name, "not-supported")
    parts = raw.split(":")
    if len(parts) not in (2, 3):
        raise invalid(f"{name} takes Type:parameter[:targetType], not {raw!r}", name)
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if code == "*":
        params = tuple(p.id for p in registry.for_type(source) if p.type == "reference")
    else:
        param = registry.get(source, code)
        if param is None or param.type != "reference":
            raise invalid(f"{name}: {source} has no reference parameter {code!r}", name)
        params = (param.id,)
    return Spec(source, params, target, reverse, iterate)


def _versions(rows: Sequence[tuple[Any, ...]]) -> list[Version]:
    return [Version(t, i, v, format_instant(ts), m, bytes(d) if d is not None else None, c)
            for t, i, v, ts, m, d, c in rows]


_COLS = "r.type, r.id, h.version, h.last_updated, h.method, h.data, r.compartment"


def resolve(db: Fetcher, specs: list[Spec], page: list[Version],
            filters: Sequence[tuple[str, Sequence[Any]]] = ()) -> tuple[list[Version], bool]:
    """The resources the specs add to a page (none of the page's own); True when truncated."""
    seen = {(v.type, v.id) for v in page}
    added: list[Version] = []
    frontier = page
    extra = "".join(f" AND {cond}" for cond, _ in filters)
    extra_params = [p for _, ps in filters for p in ps]
    for round_ in range(MAX_ITERATIONS + 1):
        active = [s for s in specs if round_ == 0 or s.iterate]
        if not active or not frontier:
            break
        found: list[Version] = []
        for spec in active:
            sources = [v for v in frontier if v.type == (spec.target if spec.reverse else spec.source)
                       or (spec.reverse and spec.target is None)]
            if not sources:
                continue
            refs = [h64(f"{v.type}/{v.id}") for v in sources]
            marks, pmarks = ", ".join("?" for _ in refs), ", ".join("?" for _ in spec.params)
            if spec.reverse:
                sql = (f"SELECT {_COLS} FROM idx_reference x JOIN resources r ON r.pk = x.res"
                       f" JOIN history h ON h.seq = r.seq WHERE x.param IN ({pmarks}) AND x.ref IN ({marks})"
                       f" AND r.type = ? AND r.deleted = 0{extra} LIMIT ?")
                params = [*spec.params, *refs, spec.source, *extra_params, MAX_INCLUDED + 1]
            else:
                target = " AND x.target_type = ?" if spec.target else ""
                # from the page's own rows (by ref) to their reference rows (by res): a CROSS JOIN keeps that
                # order on SQLite, which otherwise scanned every row of the parameter (param is the key's
                # first column) and joined each to its source
                sql = (f"SELECT {_COLS} FROM resources r JOIN history h ON h.seq = r.seq"
                       f" WHERE r.deleted = 0 AND r.ref IN (SELECT x.ref FROM resources s CROSS JOIN idx_reference x"
                       f" WHERE s.ref IN ({marks}) AND x.res = s.pk AND x.param IN ({pmarks}){target}){extra} LIMIT ?")
                params = [*refs, *spec.params, *([spec.target] if spec.target else []), *extra_params,
                          MAX_INCLUDED + 1]
            for v in _versions(db.fetch(sql, params)):
                if (v.type, v.id) not in seen:
                    seen.add((v.type, v.id))
                    found.append(v)
        added += found
        if len(added) > MAX_INCLUDED:
            return added[:MAX_INCLUDED], True
        frontier = found
    return added, False
