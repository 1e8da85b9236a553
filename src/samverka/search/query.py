"""Parse a FHIR search query string into a tree of criteria and the result parameters.

https://hl7.org/fhir/R4/search.html -- `,` inside one value is OR, a repeated parameter is AND;
chains (`subject:Patient.name=x`, any depth) and reverse chains (`_has:Observation:patient:code=x`,
nestable) become `Chain` and `Has` nodes around a leaf `Criterion`. Unknown parameters are collected,
not dropped, so `Prefer: handling` can decide what to do with them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union
from urllib.parse import parse_qsl

from ..errors import invalid
from .params import Registry, SearchParam

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_PREFIXED_TYPES = {"number", "date", "quantity"}
RESULT_PARAMS = {
    "_count", "_sort", "_include", "_revinclude", "_total", "_summary", "_elements", "_contained",
    "_containedType", "_format", "_pretty", "_explain", "_cursor", "_offset",
}
MAX_CHAIN_DEPTH = 8
MAX_VALUES = 1000  # OR alternatives in one parameter


@dataclass(frozen=True)
class Value:
    """One OR-alternative of a parameter: an optional comparison prefix and the raw text."""

    prefix: str | None
    text: str


@dataclass(frozen=True)
class Criterion:
    """A leaf: one parameter on the current resource type; its values are ORed."""

    param: SearchParam
    modifier: str | None
    values: tuple[Value, ...]
    raw_name: str


@dataclass(frozen=True)
class Chain:
    """`ref.param=...`: resources whose reference `param` points at a target matching `inner`
    (one inner node per possible target type, since each type has its own parameters)."""

    param: SearchParam
    targets: tuple[tuple[str, Node], ...]
    raw_name: str


@dataclass(frozen=True)
class Has:
    """`_has:Type:ref:...=...`: resources pointed at, through `param` on `type`, by one matching `inner`."""

    type: str
    param: SearchParam
    inner: Node
    raw_name: str
    # conditions on a resources alias `r` the referring resource must also meet: the request's access
    # filters (`guarded`), so a `_has` cannot match through resources the token may not see
    guard: tuple[str, tuple[Any, ...]] | None = None


@dataclass(frozen=True)
class InCompartment:
    """Resources in one Patient's compartment (https://hl7.org/fhir/R4/compartmentdefinition.html):
    a reference to `Patient/{patient_id}` (hash `ref`) through one of `param_ids`, or that Patient."""

    param_ids: tuple[int, ...]
    ref: int
    patient_id: str
    raw_name: str


Node = Union[Criterion, Chain, Has, InCompartment]  # noqa: UP007 -- a runtime alias used before Chain and Has exist


def guarded(node: Node, filters: Sequence[tuple[str, Sequence[Any]]]) -> Node:
    """`node` with every `_has` in it (nested, or under a chain) limited to referring resources that meet
    `filters` (conditions on alias `r`); without this, `Patient?_has:Observation:patient:code=x` told a
    token which patients have Observations it may not read (Patientdatalagen, patient scopes)."""
    if not filters:
        return node
    if isinstance(node, Has):
        cond = " AND ".join(f"({c})" for c, _ in filters)
        return replace(node, inner=guarded(node.inner, filters),
                       guard=(cond, tuple(p for _, ps in filters for p in ps)))
    if isinstance(node, Chain):
        return replace(node, targets=tuple((t, guarded(n, filters)) for t, n in node.targets))
    return node


@dataclass
class Query:
    type: str | None
    criteria: list[Node] = field(default_factory=list)
    result: dict[str, list[str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # parameter names we could not use
    types: list[str] = field(default_factory=list)  # _type on a system-level search
    list_ids: list[str] = field(default_factory=list)  # _list


_SPLIT_COMMA = re.compile(r"(?<!\\),")


def split_values(raw: str) -> list[str]:
    """Split on unescaped commas and undo the spec's escapes (`\\,` `\\$` `\\|` `\\\\`)."""
    return [re.sub(r"\\([,$|\\])", r"\1", part) for part in _SPLIT_COMMA.split(raw)]


def parse_pairs(query_string: str) -> list[tuple[str, str]]:
    return parse_qsl(query_string, keep_blank_values=True)


class _Unknown(Exception):
    pass


class _TooDeep(Exception):
    pass


def parse(registry: Registry, type_: str | None, pairs: list[tuple[str, str]]) -> Query:
    """Criteria for `type_` (None for a system-level search over the common parameters)."""
    q = Query(type_)
    for name, raw in pairs:
        if name.partition(":")[0] in RESULT_PARAMS:
            q.result.setdefault(name, []).append(raw)
        elif name == "_type" and type_ is None:
            q.types += [t for t in raw.split(",") if t]
        elif name == "_list":
            q.list_ids += [v for v in split_values(raw) if v]
        else:
            try:
                q.criteria.append(_node(registry, type_ or "Resource", name, raw, 0))
            except _Unknown:
                q.unknown.append(name)
            except _TooDeep:  # named by the whole parameter, not the tail the recursion reached
                raise invalid(f"{name}: chains and _has may nest at most {MAX_CHAIN_DEPTH} deep", name) from None
    return q


def _node(registry: Registry, type_: str, name: str, raw: str, depth: int) -> Node:
    if depth > MAX_CHAIN_DEPTH:
        raise _TooDeep
    if name.startswith("_has:"):
        parts = name.split(":", 3)
        if len(parts) < 4 or not parts[3]:
            raise invalid(f"{name}: _has takes the form _has:Type:reference:parameter", name)
        _, src_type, ref_code, rest = parts
        ref = registry.get(src_type, ref_code)
        if ref is None or ref.type != "reference":
            raise _Unknown
        inner = _node(registry, src_type, rest, raw, depth + 1)
        return Has(src_type, ref, inner, name)
    head, dot, rest = name.partition(".")
    code, _, modifier = head.partition(":")
    param = registry.get(type_, code)
    if param is None:
        raise _Unknown
    if not dot:
        return _leaf(param, modifier or None, raw, name)
    if param.type != "reference":
        raise invalid(f"{name}: only reference parameters can be chained, and {code} is a {param.type}", name)
    candidates = [modifier] if modifier else list(param.targets)
    targets: list[tuple[str, Node]] = []
    for target in candidates:
        try:
            targets.append((target, _node(registry, target, rest, raw, depth + 1)))
        except _Unknown:
            continue
    if not targets:
        raise _Unknown
    return Chain(param, tuple(targets), name)


def _leaf(param: SearchParam, modifier: str | None, raw: str, name: str) -> Criterion:
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise invalid(f"{name} must be true or false, not {raw!r}", name)
        return Criterion(param, modifier, (Value(None, raw),), name)
    texts = split_values(raw)
    if len(texts) > MAX_VALUES:
        raise invalid(f"{name} has {len(texts)} values; at most {MAX_VALUES} may be ORed", name, "too-costly")
    values = []
    for text in texts:
        prefix = None
        if (param.type in _PREFIXED_TYPES and text[:2] in PREFIXES
                and len(text) > 2 and (text[2].isdigit() or text[2] == "-")):
            prefix, text = text[:2], text[2:]
        values.append(Value(prefix, text))
    return Criterion(param, modifier, tuple(values), name)
