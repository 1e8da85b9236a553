"""The search parameter registry (https://hl7.org/fhir/R4/searchparameter.html).

Built once from the 1,377 R4 SearchParameters shipped in `samverka.fhir.definitions`, plus any custom
SearchParameter resources. Parameters on base `Resource` / `DomainResource` (`_id`, `_lastUpdated`,
`_tag`, `_profile`, `_security`, `_source`, ...) apply to every (domain) resource type.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from hashlib import blake2b
from typing import Any

from samverka.fhir.definitions import resource_types, resources_of
from samverka.search.compile_extract import Compiled, TypeExtractor
from samverka.search.compile_types import is_subtype

SEARCH_TYPES = frozenset(
    {"string", "token", "reference", "date", "number", "quantity", "uri", "composite", "special"}
)
_ORDERED = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_DEFAULT_MODIFIERS: dict[str, tuple[str, ...]] = {
    "string": ("missing", "exact", "contains"),
    "token": ("missing", "text", "not", "above", "below", "in", "not-in", "of-type"),
    "reference": ("missing", "type", "identifier", "above", "below"),
    "uri": ("missing", "above", "below"),
}


def param_id(url: str) -> int:
    """A stable positive 31-bit id for a search parameter's canonical URL (never 0)."""
    n = int.from_bytes(blake2b(url.encode(), digest_size=4).digest(), "big") & 0x7FFFFFFF
    return n or 1


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One SearchParameter, as the indexer and the query compiler need it."""

    id: int
    url: str
    code: str
    type: str
    base: tuple[str, ...]
    expression: str
    targets: tuple[str, ...] = ()
    components: tuple[tuple[str, str], ...] = ()  # (definition url, expression relative to the base)
    modifiers: tuple[str, ...] = ("missing",)
    comparators: tuple[str, ...] = ()
    multiple_or: bool = True
    multiple_and: bool = True
    chains: tuple[str, ...] = ()

    @classmethod
    def from_resource(cls, r: dict[str, Any]) -> SearchParam:
        """From a SearchParameter resource; raises ValueError when it cannot be indexed."""
        url, code, ptype = r.get("url"), r.get("code"), r.get("type")
        if not url or not code or ptype not in SEARCH_TYPES or not r.get("base"):
            raise ValueError(f"SearchParameter {r.get('id')!r} needs url, code, base and a valid type")
        return cls(
            id=param_id(url),
            url=url,
            code=code,
            type=ptype,
            base=tuple(r["base"]),
            expression=r.get("expression") or "",
            targets=tuple(r.get("target", ())),
            components=tuple((c["definition"], c["expression"]) for c in r.get("component", ())),
            modifiers=tuple(r.get("modifier") or _DEFAULT_MODIFIERS.get(ptype, ("missing",))),
            comparators=tuple(
                r.get("comparator") or (_ORDERED if ptype in ("date", "number", "quantity") else ())
            ),
            multiple_or=r.get("multipleOr", True),
            multiple_and=r.get("multipleAnd", True),
            chains=tuple(r.get("chain", ())),
        )


class Registry:
    """Search parameters by resource type and code, with the compiled extractor per type."""

    def __init__(self, params: Iterable[SearchParam]) -> None:
        self._params: dict[str, SearchParam] = {}
        ids: dict[int, str] = {}
        for p in params:
            other = ids.get(p.id)
            if other is not None and other != p.url:
                raise ValueError(f"search parameter id collision: {p.url} and {other} -> {p.id}")
            ids[p.id] = p.url
            self._params[p.url] = p
        # "Resource" / "DomainResource" hold only the generic parameters (for system-level search)
        self._by_type: dict[str, dict[str, SearchParam]] = {
            t: {} for t in (*sorted(resource_types()), "Resource", "DomainResource")
        }
        generic: list[tuple[str, SearchParam]] = []
        for p in self._params.values():
            for b in p.base:
                if b in ("Resource", "DomainResource"):
                    generic.append((b, p))
                elif b in self._by_type:
                    self._by_type[b][p.code] = p
        for b, p in generic:
            for t, codes in self._by_type.items():
                if is_subtype(t, b):
                    codes.setdefault(p.code, p)  # a type's own parameter wins over a generic one
        self._extractors: dict[str, TypeExtractor] = {}
        self._lock = threading.Lock()

    @staticmethod
    @cache
    def default() -> Registry:
        """The registry of the shipped R4 SearchParameters (built once per process)."""
        return Registry(SearchParam.from_resource(r) for r in resources_of("search-parameters"))

    @classmethod
    def with_custom(cls, resources: Iterable[dict[str, Any]]) -> Registry:
        """The R4 parameters plus custom SearchParameter resources.

        A custom parameter replaces one with the same url, and wins over one with the same code on a type.
        """
        custom = [SearchParam.from_resource(r) for r in resources]
        urls = {p.url for p in custom}
        # later parameters win for the same (type, code): customs come last
        return cls([p for p in Registry.default()._params.values() if p.url not in urls] + custom)

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self._by_type.get(resource_type, {}).get(code)

    def for_type(self, resource_type: str) -> list[SearchParam]:
        return list(self._by_type.get(resource_type, {}).values())

    def by_url(self, url: str) -> SearchParam | None:
        return self._params.get(url)

    def all(self) -> list[SearchParam]:
        return list(self._params.values())

    def extractor(self, resource_type: str) -> TypeExtractor:
        """The compiled index extractor of one resource type (compiled on first use, then cached)."""
        ex = self._extractors.get(resource_type)
        if ex is None:
            with self._lock:
                ex = self._extractors.get(resource_type)
                if ex is None:
                    ex = TypeExtractor(resource_type, self)
                    self._extractors[resource_type] = ex
        return ex

    def compiled(self, resource_type: str, code: str) -> Compiled | None:
        """One parameter compiled for one type (raw values, fallback parts), for tests and diagnostics."""
        return self.extractor(resource_type).compiled.get(code)
