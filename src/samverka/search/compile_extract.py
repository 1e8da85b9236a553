"""Per-resource-type compiled index extractors (https://hl7.org/fhir/R4/searchparameter.html).

Each SearchParameter is compiled once per resource type: its expression is split by base type, parsed,
compiled to branches (`compile_plan`), and each branch is bound to a row writer (`compile_convert`).
Branches are grouped by their first JSON key, so a resource only runs the branches whose first
element it actually has. Expressions the compiler cannot handle fall back to fhirpathpy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from samverka.search.compile_convert import Conv, converter, hs
from samverka.search.compile_parse import Unsupported, parse, root_name
from samverka.search.compile_plan import (
    KEY,
    Branch,
    compile_bool,
    compile_branches,
    compile_expression,
    is_boolean_expr,
    steps_runner,
)
from samverka.search.compile_types import SYSTEM_TYPE_ALIASES, is_subtype, path_types, root_ctx
from samverka.store.base import IndexRows

if TYPE_CHECKING:
    from samverka.search.params import Registry, SearchParam

# handler(param id, values, resource, rows)
Handler = Callable[[int, list[Any], Any, IndexRows], None]
Runner = Callable[[list[Any], Any], list[Any]]


def split_union_text(expr: str) -> list[str]:
    """Split an expression at its top-level `|` (outside parentheses and string literals)."""
    parts: list[str] = []
    depth, start, quote = 0, 0, False
    for i, ch in enumerate(expr):
        if ch == "'" and (i == 0 or expr[i - 1] != "\\"):
            quote = not quote
        elif quote:
            continue
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expr[start:i].strip())
            start = i + 1
    parts.append(expr[start:].strip())
    return [p for p in parts if p]


def parts_for_type(expression: str, resource_type: str) -> list[str]:
    """The union operands of `expression` that apply to `resource_type` (`Observation.code` of a union)."""
    out = []
    for text in split_union_text(expression):
        try:
            name = root_name(parse(text))
        except Unsupported:
            name = text.lstrip("(").split(".", 1)[0]
        if name is None or name[:1].islower() or is_subtype(resource_type, name):
            out.append(text)
    return out


# a Timing is indexed as a row per event (compile_convert); a date, dateTime, instant or Period as one row,
# and the other types of a choice (Procedure.performed[x]: string, Age, Range) as none
_MANY_ROWS = frozenset({"Timing"})
_PATH = re.compile(r"\(?([A-Z][A-Za-z]*)((?:\.[a-z][A-Za-z]*)+)(?:\.as\(([A-Za-z]+)\)| as ([A-Za-z]+))?\)?")


@cache
def _single(expression: str, type_: str) -> bool:
    paths: set[str] = set()
    found: set[str] = set()
    for text in parts_for_type(expression, type_):
        m = _PATH.fullmatch(text.strip())
        if m is None or not is_subtype(type_, m[1]):
            return False
        paths.add(m[2])
        types = path_types(type_, tuple(m[2][1:].split(".")))
        if types is None:
            return False
        cast = m[3] or m[4]
        if cast is not None:
            cast = SYSTEM_TYPE_ALIASES.get(cast, cast)
            types = types & {cast}
        found |= types
    # one path (several casts of one choice element are still one value) of single elements
    return len(paths) == 1 and not found & _MANY_ROWS


def single_valued(param: SearchParam, type_: str) -> bool:
    """True when R4 allows a `type_` resource one value at most for the date parameter `param` (its expression
    for the type is one path of elements of cardinality ..1 whose types hold no Timing), so it has one index
    row: `extract` keeps one row, the values' hull, even for a resource stored without validation that holds
    more (`search.window` relies on it)."""
    return _single(param.expression, type_)


def _values_handler(conv: Conv) -> Handler:
    def handle(pid: int, values: list[Any], root: Any, rows: IndexRows) -> None:
        for v in values:
            conv(pid, v, rows)
    return handle


@dataclass(slots=True)
class Compiled:
    """One search parameter compiled for one resource type."""

    param: SearchParam
    resource_type: str
    branches: list[Branch] = field(default_factory=list)
    boolean: Callable[[Any], bool | None] | None = None
    fallback: list[str] = field(default_factory=list)  # expression parts evaluated by fhirpathpy
    unsupported: list[str] = field(default_factory=list)  # parts that produce no rows at all

    def values(self, resource: dict[str, Any]) -> list[tuple[Any, str]]:
        """The raw (value, FHIR type) pairs of this parameter for `resource` (before conversion)."""
        out: list[tuple[Any, str]] = []
        for b in self.branches:
            out.extend((v, b.ctx.type) for v in steps_runner(b.steps)([resource], resource))
        if self.boolean is not None:
            res = self.boolean(resource)
            if res is not None:
                out.append((res, "boolean"))
        for text in self.fallback:
            out.extend(fhirpath_values(resource, text))
        return out


_PY_TYPES = {"str": "string", "bool": "boolean", "int": "integer", "float": "decimal", "Decimal": "decimal"}


def fhirpath_values(resource: dict[str, Any], expression: str) -> list[tuple[Any, str]]:
    """Evaluate with fhirpathpy (R4 model), returning raw JSON values with their FHIR types."""
    from fhirpathpy import evaluate
    from fhirpathpy.models import models

    out: list[tuple[Any, str]] = []
    for node in evaluate(resource, expression, {}, models["r4"], {"returnRawData": True}):
        data = getattr(node, "data", node)
        path = getattr(node, "path", None)
        if not (isinstance(path, str) and path and "." not in path):
            path = _PY_TYPES.get(type(data).__name__, "")  # computed values carry no FHIR type
        out.append((data, path))
    return out


def compile_param(param: SearchParam, resource_type: str, registry: Registry) -> Compiled:
    c = Compiled(param, resource_type)
    if not param.expression or param.type == "special":
        return c
    for text in parts_for_type(param.expression, resource_type):
        try:
            ast = parse(text)
            if is_boolean_expr(ast):
                if c.boolean is not None:
                    raise Unsupported("two boolean parts")
                c.boolean = compile_bool(ast, root_ctx(resource_type))
            else:
                c.branches.extend(compile_expression(ast, resource_type))
        except Unsupported:
            if param.type == "composite":
                c.unsupported.append(text)
            else:
                c.fallback.append(text)
    return c


def _composite_handler(
    param: SearchParam, branch: Branch, registry: Registry, resource_type: str
) -> Handler | None:
    """Rows for a composite: first component a token, then one value (or a start/end pair)."""
    comps: list[tuple[str, list[tuple[Runner, Conv]]]] = []
    root = root_ctx(resource_type)
    for url, expr in param.components:
        sub = registry.by_url(url)
        if sub is None:
            return None
        try:
            bs = compile_branches(parse(expr), [Branch((), branch.ctx)], root)
        except Unsupported:
            return None
        kind = sub.type
        if bs and all(converter(kind, b.ctx.type) is None for b in bs):
            # R4 DocumentReference-relationship names its components' definitions the wrong way round
            kind = _INFERRED.get(bs[0].ctx.type, kind)
        runs = [(steps_runner(b.steps), cv) for b in bs if (cv := converter(kind, b.ctx.type))]
        comps.append((kind, runs))
    if len(comps) < 2 or comps[0][0] != "token":
        return None

    def collect(idx: int, pid: int, node: Any, resource: Any) -> IndexRows:
        tmp = IndexRows()
        for run, cv in comps[idx][1]:
            for v in run([node], resource):
                cv(pid, v, tmp)
        return tmp

    def handle(pid: int, values: list[Any], resource: Any, rows: IndexRows) -> None:
        for node in values:
            # the value component first: it is the one usually absent (code-value-date on a Quantity)
            seconds = list(_second_values(comps[1][0], collect(1, pid, node, resource)))
            if len(comps) == 3:  # start/end coordinates: (0, start lo, end hi)
                ends = [hi for _, _, hi in _second_values(comps[2][0], collect(2, pid, node, resource))]
                seconds = [(0, lo, hi) for _, lo, _ in seconds for hi in ends]
            if not seconds:
                continue
            firsts = [(s, c) for _, s, c in collect(0, pid, node, resource).tokens]
            for s, c in firsts:
                for h2, lo, hi in seconds:
                    rows.composites.append((pid, s, c, h2, lo, hi))
    return handle


_INFERRED = {
    "code": "token", "Coding": "token", "CodeableConcept": "token", "Identifier": "token",
    "boolean": "token", "Reference": "reference", "Quantity": "quantity", "dateTime": "date",
    "Period": "date", "string": "string", "uri": "uri",
}


def _second_values(kind: str, t: IndexRows) -> Iterator[tuple[int, float, float]]:
    if kind == "token":
        yield from ((c, 0.0, 0.0) for _, _, c in t.tokens)
    elif kind == "string":
        yield from ((hs(n), 0.0, 0.0) for _, n, _ in t.strings)
    elif kind == "reference":
        yield from ((h, 0.0, 0.0) for _, h, _, _ in t.references)
    elif kind == "uri":
        yield from ((hs(u), 0.0, 0.0) for _, u in t.uris)
    elif kind == "quantity":
        yield from ((c, lo, hi) for _, _, c, lo, hi in t.quantities)
    elif kind == "number":
        yield from ((0, lo, hi) for _, lo, hi in t.numbers)
    elif kind == "date":
        yield from ((0, float(lo), float(hi)) for _, lo, hi in t.dates)


class TypeExtractor:
    """All search parameters of one resource type, compiled, grouped by the first JSON key."""

    def __init__(self, resource_type: str, registry: Registry) -> None:
        self.resource_type = resource_type
        self.compiled: dict[str, Compiled] = {}
        self.by_key: dict[str, list[tuple[int, Runner, Handler]]] = {}
        self.always: list[tuple[int, Runner, Handler]] = []
        self.dynamic: list[tuple[int, Callable[[Any], list[tuple[Any, str]]], str]] = []
        self.single_dates = frozenset(p.id for p in registry.for_type(resource_type)
                                      if p.type == "date" and single_valued(p, resource_type))
        for p in registry.for_type(resource_type):
            c = compile_param(p, resource_type, registry)
            self.compiled[p.code] = c
            for b in c.branches:
                if p.type == "composite":
                    handler = _composite_handler(p, b, registry, resource_type)
                else:
                    conv = converter(p.type, b.ctx.type)
                    handler = _values_handler(conv) if conv else None
                if handler is None:
                    continue
                if b.steps and b.steps[0][0] == KEY:
                    entry = (p.id, steps_runner(b.steps[1:]), handler)
                    self.by_key.setdefault(b.steps[0][1], []).append(entry)
                else:
                    self.always.append((p.id, _from_root(steps_runner(b.steps)), handler))
            if c.boolean is not None or c.fallback:
                fallback_c = Compiled(p, resource_type, [], c.boolean, c.fallback)
                self.dynamic.append((p.id, fallback_c.values, p.type))

    def run(self, resource: dict[str, Any], rows: IndexRows) -> None:
        by_key = self.by_key
        for key, value in resource.items():
            entries = by_key.get(key)
            if entries is None:
                continue
            start = [x for x in value if x is not None] if type(value) is list else [value]
            for pid, run, handle in entries:
                values = run(start, resource)
                if values:
                    handle(pid, values, resource, rows)
        for pid, run, handle in self.always:
            values = run([resource], resource)
            if values:
                handle(pid, values, resource, rows)
        for pid, values_of, ptype in self.dynamic:
            for v, t in values_of(resource):
                conv = converter(ptype, t)
                if conv:
                    conv(pid, v, rows)


def _from_root(run: Runner) -> Runner:
    return lambda cur, root: run([root], root)

