"""Parse a FHIR search query string into criteria and result parameters.

https://hl7.org/fhir/R4/search.html -- `,` inside one value is OR, a repeated parameter is AND.
Unknown parameters are collected (not dropped) so `Prefer: handling` can decide what to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from ..errors import invalid
from .params import Registry, SearchParam

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_PREFIXED_TYPES = {"number", "date", "quantity"}
RESULT_PARAMS = {
    "_count", "_sort", "_include", "_revinclude", "_total", "_summary", "_elements", "_contained",
    "_containedType", "_format", "_pretty", "_explain", "_page", "_offset",
}


@dataclass(frozen=True)
class Value:
    """One OR-alternative of a parameter: an optional comparison prefix and the raw text."""

    prefix: str | None
    text: str


@dataclass(frozen=True)
class Criterion:
    """One parameter occurrence: all its values are ORed; criteria are ANDed."""

    param: SearchParam
    modifier: str | None
    values: tuple[Value, ...]
    raw_name: str


@dataclass
class Query:
    type: str | None
    criteria: list[Criterion] = field(default_factory=list)
    result: dict[str, list[str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # parameter names we could not use


_SPLIT_COMMA = re.compile(r"(?<!\\),")


def split_values(raw: str) -> list[str]:
    """Split on unescaped commas and undo the spec's escapes (`\\,` `\\$` `\\|` `\\\\`)."""
    return [re.sub(r"\\([,$|\\])", r"\1", part) for part in _SPLIT_COMMA.split(raw)]


def parse_pairs(query_string: str) -> list[tuple[str, str]]:
    return parse_qsl(query_string, keep_blank_values=True)


def parse(registry: Registry, type_: str | None, pairs: list[tuple[str, str]]) -> Query:
    """Criteria for `type_` (None for a system-level search over common parameters)."""
    q = Query(type_)
    for name, raw in pairs:
        if name in RESULT_PARAMS:
            q.result.setdefault(name, []).append(raw)
            continue
        base, _, modifier = name.partition(":")
        if "." in base:
            q.unknown.append(name)  # chains: completed by the search issue
            continue
        param = registry.get(type_ or "Resource", base)
        if param is None:
            q.unknown.append(name)
            continue
        values = []
        for text in split_values(raw):
            prefix = None
            if (param.type in _PREFIXED_TYPES and modifier != "missing" and text[:2] in PREFIXES
                    and len(text) > 2 and (text[2].isdigit() or text[2] == "-")):
                prefix, text = text[:2], text[2:]
            values.append(Value(prefix, text))
        if modifier == "missing" and raw not in ("true", "false"):
            raise invalid(f"{name} must be true or false, not {raw!r}", name)
        q.criteria.append(Criterion(param, modifier or None, tuple(values), name))
    return q
