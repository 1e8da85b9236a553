"""Expansion of the shipped R4 ValueSets for required bindings (https://hl7.org/fhir/R4/valueset.html).

Only what can be expanded exactly from the shipped `valuesets` bundle is expanded: includes of
complete CodeSystems (whole, by explicit concept list, or by `is-a`/`descendent-of` filters), nested
ValueSet imports and excludes. Anything else (SNOMED CT, UCUM, BCP-47, unknown systems, other
filters) makes the expansion `None`, and the binding is then not checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from samverka.fhir.definitions import resources_of

Expansion = dict[str, frozenset[str]]  # system -> codes


class _Cannot(Exception):
    """The value set cannot be expanded from shipped content."""


def _walk(concepts: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for c in concepts:
        yield c
        yield from _walk(c.get("concept", []))


def _find(concepts: list[dict[str, Any]], code: str) -> dict[str, Any] | None:
    for c in _walk(concepts):
        if c.get("code") == code:
            return c
    return None


class Terminology:
    """Expands ValueSets by canonical URL, memoising results (including failures)."""

    def __init__(self) -> None:
        self._cs = {
            c["url"]: c
            for c in resources_of("valuesets", "CodeSystem")
            if c.get("content") == "complete" and "url" in c
        }
        self._vs = {v["url"]: v for v in resources_of("valuesets", "ValueSet") if "url" in v}
        self._memo: dict[str, Expansion | None] = {}

    def expand(self, url: str) -> Expansion | None:
        """All codes of a ValueSet by system, or None when it cannot be expanded exactly."""
        url = url.split("|", 1)[0]
        if url in self._memo:
            return self._memo[url]
        self._memo[url] = None  # guards against import cycles
        try:
            result: Expansion | None = self._expand(url)
        except _Cannot:
            result = None
        self._memo[url] = result
        return result

    def _expand(self, url: str) -> Expansion:
        vs = self._vs.get(url)
        if vs is None or "compose" not in vs:
            raise _Cannot(url)
        out: dict[str, set[str]] = {}
        for inc in vs["compose"].get("include", []):
            for system, codes in self._include(inc).items():
                out.setdefault(system, set()).update(codes)
        for exc in vs["compose"].get("exclude", []):
            for system, codes in self._include(exc).items():
                if system in out:
                    out[system] -= codes
        if not out:
            raise _Cannot(url)
        return {s: frozenset(c) for s, c in out.items()}

    def _include(self, inc: dict[str, Any]) -> dict[str, set[str]]:
        imported: list[Expansion] = []
        for ref in inc.get("valueSet", []):
            exp = self.expand(ref)
            if exp is None:
                raise _Cannot(ref)
            imported.append(exp)
        system: str | None = inc.get("system")
        if system is None:
            if not imported:
                raise _Cannot("include without system or valueSet")
            out: dict[str, set[str]] = {}
            for exp in imported:
                for s, members in exp.items():
                    out.setdefault(s, set()).update(members)
            return out
        codes = self._system_codes(system, inc)
        for exp in imported:  # system and valueSet together mean the intersection
            codes &= set(exp.get(system, ()))
        return {system: codes}

    def _system_codes(self, system: str, inc: dict[str, Any]) -> set[str]:
        if "concept" in inc:
            return {c["code"] for c in inc["concept"]}
        cs = self._cs.get(system)
        if cs is None:
            raise _Cannot(system)
        concepts = cs.get("concept", [])
        filters = inc.get("filter", [])
        if not filters:
            return {c["code"] for c in _walk(concepts)}
        result: set[str] | None = None
        for f in filters:
            if f.get("property") != "concept" or f.get("op") not in ("is-a", "descendent-of"):
                raise _Cannot(f"filter {f}")
            root = _find(concepts, f.get("value", ""))
            if root is None:
                raise _Cannot(f"filter value {f}")
            found = {c["code"] for c in _walk(root.get("concept", []))}
            if f["op"] == "is-a":
                found.add(root["code"])
            result = found if result is None else result & found
        return result or set()
