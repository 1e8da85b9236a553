"""Value set expansion and code hierarchies for the token modifiers :in, :not-in, :above and :below.

https://hl7.org/fhir/R4/search.html#token -- `:in`/`:not-in` take a ValueSet canonical URL, `:above`/
`:below` a `system|code` whose subsumption the CodeSystem defines (nested `concept`s). Definitions come
from resources stored in the server (looked up through a `Lookup` callable, so this module never sees
the store or HTTP) and, failing that, from the shipped R4 value sets and code systems.

What an expansion can express (`Expansion`): enumerated `(system, code)` pairs, plus whole code
systems that cannot be enumerated here (SNOMED CT, LOINC, ...) -- those match on the system alone,
less any codes excluded from them. Filters supported: `is-a`, `descendent-of`, `is-not-a` and `=` on
`concept`/`code` over hierarchies we know; any other filter makes the expansion a 400 (not-supported).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson

from ..errors import invalid
from ..fhir.definitions import resources_of

# (resource type, canonical url) -> the stored resources of that type with that url
Lookup = Callable[[str, str], list[dict[str, Any]]]
MAX_DEPTH = 8  # ValueSet imports nesting
MAX_CODES = 20_000


@dataclass
class Expansion:
    codes: set[tuple[str, str]] = field(default_factory=set)
    systems: set[str] = field(default_factory=set)  # whole systems, matched on the system alone
    excluded: set[tuple[str, str]] = field(default_factory=set)  # codes removed from a whole system


@dataclass(frozen=True)
class Hierarchy:
    """One code system's concepts: parent links from nesting (and the `parent` property)."""

    codes: frozenset[str]
    parents: dict[str, frozenset[str]]

    def descendants(self, code: str) -> set[str]:
        children: dict[str, set[str]] = {}
        for c, ps in self.parents.items():
            for p in ps:
                children.setdefault(p, set()).add(c)
        out, todo = {code}, [code]
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in out:
                    out.add(child)
                    todo.append(child)
        return out

    def ancestors(self, code: str) -> set[str]:
        out, todo = {code}, [code]
        while todo:
            for parent in self.parents.get(todo.pop(), ()):
                if parent not in out:
                    out.add(parent)
                    todo.append(parent)
        return out


def hierarchy_of(code_system: dict[str, Any]) -> Hierarchy:
    codes: set[str] = set()
    parents: dict[str, set[str]] = {}

    def walk(concepts: Iterable[Any], parent: str | None) -> None:
        for c in concepts:
            if type(c) is not dict or not isinstance(c.get("code"), str):
                continue
            code = c["code"]
            codes.add(code)
            if parent is not None:
                parents.setdefault(code, set()).add(parent)
            for prop in c.get("property", ()):
                if type(prop) is dict and prop.get("code") == "parent" and isinstance(prop.get("valueCode"), str):
                    parents.setdefault(code, set()).add(prop["valueCode"])
            walk(c.get("concept", ()), code)

    walk(code_system.get("concept", ()), None)
    return Hierarchy(frozenset(codes), {c: frozenset(ps) for c, ps in parents.items()})


@cache
def _shipped() -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["resourceType"], r["url"]): r for r in resources_of("valuesets") if isinstance(r.get("url"), str)}


@cache
def _shipped_hierarchy(url: str) -> Hierarchy | None:
    cs = _shipped().get(("CodeSystem", url))
    return hierarchy_of(cs) if cs and cs.get("content", "complete") == "complete" else None


class Terminology:
    """Resolves canonical URLs against stored resources first, then the shipped R4 definitions."""

    def __init__(self, lookup: Lookup | None = None) -> None:
        self._lookup = lookup
        self._cache: dict[tuple[str, str], dict[str, Any] | None] = {}

    def resource(self, type_: str, url: str) -> dict[str, Any] | None:
        url, _, version = url.partition("|")
        key = (type_, url + "|" + version)
        if key not in self._cache:
            found = None
            if self._lookup is not None:
                stored = self._lookup(type_, url)
                if version:
                    stored = [r for r in stored if r.get("version") == version]
                found = stored[0] if stored else None
            self._cache[key] = found or _shipped().get((type_, url))
        return self._cache[key]

    def hierarchy(self, system: str) -> Hierarchy | None:
        """The concepts of code system `system` when they are known here (stored or shipped), else None."""
        cs = self.resource("CodeSystem", system)
        if cs is None:
            return None
        if cs is _shipped().get(("CodeSystem", system)):
            return _shipped_hierarchy(system)
        return hierarchy_of(cs) if cs.get("concept") else None

    def below(self, system: str, code: str) -> set[str]:
        """`code` and everything it subsumes; just `code` when the system's hierarchy is unknown."""
        h = self.hierarchy(system)
        return h.descendants(code) if h is not None else {code}

    def above(self, system: str, code: str) -> set[str]:
        """`code` and everything subsuming it; just `code` when the system's hierarchy is unknown."""
        h = self.hierarchy(system)
        return h.ancestors(code) if h is not None else {code}

    def expand(self, url: str, name: str, depth: int = 0) -> Expansion:
        """The expansion of ValueSet `url`; a 400 naming parameter `name` when it cannot be built."""
        if depth > MAX_DEPTH:
            raise invalid(f"{name}: value set {url} imports value sets more than {MAX_DEPTH} deep", name)
        vs = self.resource("ValueSet", url)
        if vs is None:
            raise invalid(f"{name}: unknown value set {url!r}", name, "not-found")
        out = Expansion()
        contains = (vs.get("expansion") or {}).get("contains")
        if contains and not vs.get("compose"):
            out.codes |= set(_contains(contains))
        for inc in (vs.get("compose") or {}).get("include", ()):
            self._include(inc, out, name, depth)
        for exc in (vs.get("compose") or {}).get("exclude", ()):
            removed = Expansion()
            self._include(exc, removed, name, depth)
            out.codes -= removed.codes
            out.excluded |= {sc for sc in removed.codes if sc[0] in out.systems}
            out.systems -= removed.systems
        if len(out.codes) > MAX_CODES:
            raise invalid(f"{name}: value set {url} has more than {MAX_CODES} codes", name, "too-costly")
        return out

    def _include(self, inc: Any, out: Expansion, name: str, depth: int) -> None:
        if type(inc) is not dict:
            return
        part: Expansion | None = None
        system = inc.get("system")
        if isinstance(system, str) and system:
            part = Expansion()
            concepts = inc.get("concept")
            filters = inc.get("filter")
            if concepts:
                part.codes = {(system, c["code"]) for c in concepts
                              if type(c) is dict and isinstance(c.get("code"), str)}
            elif filters:
                part.codes = {(system, c) for c in self._filtered(system, filters, name)}
            else:
                h = self.hierarchy(system)
                if h is not None:
                    part.codes = {(system, c) for c in h.codes}
                else:
                    part.systems.add(system)
        for imported in inc.get("valueSet", ()):
            sub = self.expand(imported, name, depth + 1)
            part = sub if part is None else _intersect(part, sub)
        if part is not None:
            out.codes |= part.codes
            out.systems |= part.systems
            out.excluded |= part.excluded

    def _filtered(self, system: str, filters: list[Any], name: str) -> set[str]:
        h = self.hierarchy(system)
        if h is None:
            raise invalid(f"{name}: cannot apply filters on code system {system}: its concepts are not known here",
                          name, "not-supported")
        result = set(h.codes)
        for f in filters:
            f = f if type(f) is dict else {}
            prop, op, value = f.get("property"), f.get("op"), f.get("value")
            if prop not in ("concept", "code") or not isinstance(value, str):
                raise invalid(f"{name}: value set filter on property {prop!r} is not supported", name, "not-supported")
            if op == "is-a":
                result &= h.descendants(value)
            elif op == "descendent-of":
                result &= h.descendants(value) - {value}
            elif op == "is-not-a":
                result -= h.descendants(value)
            elif op == "=":
                result &= {value}
            else:
                raise invalid(f"{name}: value set filter op {op!r} is not supported", name, "not-supported")
        return result


def _intersect(a: Expansion, b: Expansion) -> Expansion:
    codes = (a.codes & b.codes) | {sc for sc in a.codes if sc[0] in b.systems} | {
        sc for sc in b.codes if sc[0] in a.systems}
    return Expansion(codes, a.systems & b.systems, a.excluded | b.excluded)


def _contains(items: Iterable[Any]) -> Iterator[tuple[str, str]]:
    for c in items:
        if type(c) is not dict:
            continue
        if isinstance(c.get("system"), str) and isinstance(c.get("code"), str):
            yield c["system"], c["code"]
        yield from _contains(c.get("contains", ()))


def store_lookup(fetch: Callable[[str, list[Any]], list[tuple[Any, ...]]], url_param: int) -> Lookup:
    """A `Lookup` over a store's `fetch`: current resources of a type whose `url` index equals the url."""

    def lookup(type_: str, url: str) -> list[dict[str, Any]]:
        rows = fetch("SELECT h.data FROM resources r JOIN history h ON h.seq = r.seq WHERE r.type = ?"
                     " AND r.deleted = 0 AND r.pk IN (SELECT u.res FROM idx_uri u WHERE u.param = ? AND u.uri = ?)"
                     " ORDER BY r.last_updated DESC", [type_, url_param, url])
        out = []
        for (data,) in rows:
            body = data if isinstance(data, dict) else orjson.loads(bytes(data) if not isinstance(data, str) else data)
            if isinstance(body, dict):
                out.append(body)
        return out

    return lookup
