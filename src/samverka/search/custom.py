"""Custom SearchParameter resources, live in every process (https://hl7.org/fhir/R4/searchparameter.html).

Writing a SearchParameter (status active or draft) records it in `search_parameters` and increments
`search_state.generation` in the same transaction. Each process keeps a `LiveRegistry` tagged with the
generation it was built from: searches compare it with the stored one at most every `interval` seconds
(and always when a query names an unknown or custom parameter), and every write compares it inside its
own transaction under a shared lock (`UnitOfWork.param_generation`), so index rows always come from the
registry that was current when they commit. A parameter whose existing resources are not yet reindexed
(`ready = 0`, see `interactions.reindex`) is refused by searches, never answered from a partial index.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from ..errors import Category, FhirError, invalid, unprocessable
from ..fhir.definitions import resource_types
from ..store.base import Repository, UnitOfWork
from .compile_convert import converter
from .compile_extract import TypeExtractor, compile_param, fhirpath_values, parts_for_type
from .compile_types import is_subtype
from .params import Registry, SearchParam, param_id
from .query import Chain, Criterion, Has, Node, Query

SEARCHABLE_STATUS = ("active", "draft")
_INDEXING = ("url", "code", "base", "type", "expression", "target", "component")
_GENERIC = ("Resource", "DomainResource")


class LiveRegistry(Registry):
    """A Registry built from the stored custom parameters of one `search_state.generation`.

    Types no custom parameter touches share the compiled extractors of `Registry.default()`.
    """

    generation: int = -1
    pending: dict[str, int]  # url -> param id of parameters whose reindex has not finished
    _custom: list[SearchParam]
    _affected: frozenset[str] | None  # types whose parameters differ from R4 (None: every type)

    @classmethod
    def build(cls, generation: int, rows: Iterable[tuple[str, bytes, bool, bool]]) -> LiveRegistry:
        """From (url, definition JSON, active, ready) rows."""
        rows = list(rows)
        custom = [SearchParam.from_resource(orjson.loads(d)) for _u, d, a, _r in rows if a]
        urls = {p.url for p in custom}
        reg = cls([p for p in Registry.default().all() if p.url not in urls] + custom)  # as with_custom
        reg.generation = generation
        reg.pending = {u: param_id(u) for u, _d, _a, r in rows if not r}
        reg._custom = [p for p in reg.all() if p.url in urls]
        replaced = [b for u in urls if (old := Registry.default().by_url(u)) for b in old.base]
        bases = {b for p in reg._custom for b in p.base} | set(replaced)
        reg._affected = None if bases & set(_GENERIC) else frozenset(bases)
        return reg

    def extractor(self, resource_type: str) -> TypeExtractor:
        if self._affected is not None and resource_type not in self._affected:
            return Registry.default().extractor(resource_type)
        return super().extractor(resource_type)

    def custom(self) -> list[SearchParam]:
        return list(self._custom)


def searchable(resource: dict[str, Any]) -> bool:
    return resource.get("status") in SEARCHABLE_STATUS


def indexing_key(definition: dict[str, Any]) -> bytes:
    """What decides a parameter's index rows: a change to any of these needs a reindex."""
    return orjson.dumps({k: definition.get(k) for k in _INDEXING}, option=orjson.OPT_SORT_KEYS)


def check(resource: dict[str, Any], registry: Registry) -> SearchParam:
    """A SearchParameter this server can index, or a 422 pointing at the element at fault."""
    try:
        param = SearchParam.from_resource(resource)
    except (ValueError, KeyError, TypeError) as exc:
        raise unprocessable(f"SearchParameter cannot be indexed: {exc}", "SearchParameter", "invalid") from exc
    for b in param.base:
        if b not in resource_types() and b not in _GENERIC:
            raise unprocessable(f"base {b!r} is not a resource type", "SearchParameter.base", "invalid")
    if param.type == "special":
        raise unprocessable("special parameters need server code; they cannot be defined by a resource",
                            "SearchParameter.type", "not-supported")
    if not param.expression:
        raise unprocessable("a custom parameter needs an expression", "SearchParameter.expression", "required")
    try:
        reg = Registry([*(p for p in registry.all() if p.url != param.url), param])
    except ValueError as exc:
        raise unprocessable(str(exc), "SearchParameter.url", "duplicate") from exc
    _check_syntax(param.expression)
    for t in _types_of(param):
        if not parts_for_type(param.expression, t):
            continue
        c = compile_param(param, t, reg)
        usable = [b for b in c.branches if param.type == "composite" or converter(param.type, b.ctx.type)]
        for text in c.fallback:
            try:
                fhirpath_values({"resourceType": t, "id": "x"}, text)
            except Exception as exc:  # fhirpathpy raises plain Exceptions for unknown functions
                raise unprocessable(f"expression {text!r} cannot be evaluated: {exc}",
                                    "SearchParameter.expression", "invalid") from exc
        if usable or c.fallback or c.boolean is not None:
            return param
    raise unprocessable(f"expression {param.expression!r} selects no {param.type} value of "
                        f"{', '.join(param.base)}", "SearchParameter.expression", "invalid")


def _check_syntax(expression: str) -> None:
    from antlr4 import CommonTokenStream, InputStream
    from antlr4.error.ErrorListener import ErrorListener
    from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
    from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

    class Raise(ErrorListener):
        def syntaxError(self, recognizer: Any, symbol: Any, line: int, column: int, msg: str, e: Any) -> None:
            raise unprocessable(f"FHIRPath syntax error at column {column + 1}: {msg}",
                                "SearchParameter.expression", "invalid")

    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(Raise())
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(Raise())
    parser.entireExpression()


def _types_of(param: SearchParam) -> list[str]:
    if any(b in _GENERIC for b in param.base):
        return sorted(t for t in resource_types() if any(is_subtype(t, b) for b in param.base))
    return [b for b in param.base if b in resource_types()]


def types_of(bases: Iterable[str]) -> list[str] | None:
    """The resource types that parameters on `bases` index (None: every type)."""
    bases = set(bases)
    return None if bases & set(_GENERIC) else sorted(bases)


_LOAD = ("SELECT s.generation, p.url, p.definition, p.active, p.ready FROM search_state s"
         " LEFT JOIN search_parameters p ON 1 = 1")


class LiveParams:
    """The process's current LiveRegistry and the generation checks that keep it current."""

    def __init__(self, repo: Repository, interval: float = 0.1) -> None:
        self.repo = repo
        self.interval = interval
        self._lock = threading.Lock()
        self._checked = 0.0
        self._current = self._load(repo.fetch(_LOAD, ()))
        self._in_uow: weakref.WeakKeyDictionary[Any, LiveRegistry] = weakref.WeakKeyDictionary()

    @staticmethod
    def _load(rows: list[tuple[Any, ...]]) -> LiveRegistry:
        gen = int(rows[0][0])
        defs = [(str(u), bytes(d), bool(a), bool(r)) for _g, u, d, a, r in rows if u is not None]
        return LiveRegistry.build(gen, defs)

    def registry(self, force: bool = False) -> LiveRegistry:
        """The current registry; the stored generation is checked when `interval` has passed (or `force`)."""
        now = time.monotonic()
        if force or now - self._checked >= self.interval:
            self._checked = now
            gen = int(self.repo.fetch("SELECT generation FROM search_state", ())[0][0])
            if gen != self._current.generation:
                # read without holding this lock: a writer holds the repository's lock while it waits for
                # this one (`for_write`), and reading here needs the repository's lock (a deadlock, seen as a
                # reindex test hanging under concurrent writes); the newer generation wins either way
                loaded = self._load(self.repo.fetch(_LOAD, ()))
                with self._lock:
                    if loaded.generation > self._current.generation:
                        self._current = loaded
        return self._current

    def for_write(self, uow: UnitOfWork) -> LiveRegistry:
        """The registry of the generation this transaction commits in (read under the shared lock)."""
        gen = uow.param_generation()
        mine = self._in_uow.get(uow)
        if mine is not None and mine.generation == gen:
            return mine
        if gen == self._current.generation and uow not in self._in_uow:
            return self._current
        reg = self._load(uow.fetch(_LOAD, ()))
        if uow in self._in_uow:  # this transaction changed the parameters: not yet anyone else's registry
            self._in_uow[uow] = reg
        else:
            with self._lock:
                if reg.generation > self._current.generation:
                    self._current = reg
        return reg

    def on_write(self, uow: UnitOfWork, resource_id: str, resource: dict[str, Any] | None) -> None:
        """Record a written (or deleted: None) SearchParameter in `search_parameters`."""
        url = resource.get("url") if resource is not None and searchable(resource) else None
        rows = uow.fetch("SELECT url, definition, active, resource_id, bases FROM search_parameters"
                         " WHERE resource_id = ? OR url = ?", (resource_id, url or ""))
        if url is None and not any(r[3] == resource_id and r[2] for r in rows):
            return
        gen = uow.param_generation(bump=True)
        self._in_uow[uow] = self._current
        for old_url, definition, active, owner, bases in rows:
            if owner == resource_id and old_url != url and active:
                self._retire(uow, old_url, orjson.loads(bytes(definition)), orjson.loads(bases), gen)
        if url is None or resource is None:
            return
        other = next((r for r in rows if r[0] == url and r[3] != resource_id and r[2]), None)
        if other is not None:
            raise FhirError.of(Category.CONFLICT, f"SearchParameter/{other[3]} already defines {url}",
                               "SearchParameter.url", "duplicate")
        stored = next((r for r in rows if r[0] == url), None)
        data = orjson.dumps(resource)
        if stored is not None and stored[2] and indexing_key(orjson.loads(bytes(stored[1]))) == indexing_key(resource):
            uow.execute("UPDATE search_parameters SET definition = ?, resource_id = ? WHERE url = ?",
                        (data, resource_id, url))
            return
        builtin = Registry.default().by_url(url)
        same = builtin is not None and stored is None and _same_as_builtin(resource, builtin)
        param = SearchParam.from_resource(resource)
        # rows of an earlier definition (other base types, too) are replaced by the same reindex
        bases = sorted({*param.base, *(orjson.loads(stored[4]) if stored is not None else ())})
        ready = same or not self._has_resources(uow, bases)
        uow.execute("DELETE FROM search_parameters WHERE url = ?", (url,))
        uow.execute("INSERT INTO search_parameters (url, resource_id, param, definition, active, ready, changed,"
                    " bases) VALUES (?, ?, ?, ?, 1, ?, ?, ?)",
                    (url, resource_id, param.id, data, int(ready), gen, orjson.dumps(bases).decode()))

    def _retire(self, uow: UnitOfWork, url: str, definition: dict[str, Any], bases: list[str], gen: int) -> None:
        """A parameter no longer searchable: its rows are purged (or rebuilt, for an R4 url) by a reindex."""
        builtin = Registry.default().by_url(url)
        bases = sorted({*bases, *definition.get("base", ()), *(builtin.base if builtin else ())})
        if (builtin is not None and _same_as_builtin(definition, builtin)) or not self._has_resources(uow, bases):
            uow.execute("DELETE FROM search_parameters WHERE url = ?", (url,))
        else:
            uow.execute("UPDATE search_parameters SET active = 0, ready = 0, changed = ?, bases = ? WHERE url = ?",
                        (gen, orjson.dumps(bases).decode(), url))

    @staticmethod
    def _has_resources(uow: UnitOfWork, bases: Sequence[str]) -> bool:
        types = types_of(bases)
        where = f" AND type IN ({', '.join('?' for _ in types)})" if types else ""
        return bool(uow.fetch(f"SELECT 1 FROM resources WHERE deleted = 0{where} LIMIT 1", types or ()))

    def check_ready(self, registry: LiveRegistry, query: Query) -> None:
        """A 400 naming the first parameter of `query` that is still being reindexed."""
        if not registry.pending:
            return
        for name, param in _used(registry, query):
            if param.url in registry.pending:
                raise invalid(f"search parameter {name!r} ({param.url}) is being reindexed "
                              f"({self.progress(param.url)}); it can be used when the reindex finishes",
                              name, "transient")

    def progress(self, url: str) -> str:
        rows = self.repo.fetch("SELECT params, done, total FROM reindex_jobs WHERE status = 'running'"
                               " ORDER BY id DESC", ())
        for params, done, total in rows:
            if url in orjson.loads(params):
                return f"{100 * done // max(total, 1)}% done"
        return "no reindex is running; start one with POST [base]/$reindex"

    @staticmethod
    def uses_custom(registry: LiveRegistry, query: Query) -> bool:
        urls = {p.url for p in registry.custom()} | set(registry.pending)
        return bool(urls) and any(p.url in urls for _n, p in _used(registry, query))


def _same_as_builtin(definition: dict[str, Any], builtin: SearchParam) -> bool:
    p = SearchParam.from_resource(definition)
    return (p.code, p.type, set(p.base), p.expression, set(p.targets), p.components) == (
        builtin.code, builtin.type, set(builtin.base), builtin.expression, set(builtin.targets), builtin.components)


def _used(registry: Registry, query: Query) -> list[tuple[str, SearchParam]]:
    out: list[tuple[str, SearchParam]] = []

    def walk(node: Node) -> None:
        if isinstance(node, Criterion):
            out.append((node.raw_name, node.param))
        elif isinstance(node, Chain):
            out.append((node.raw_name, node.param))
            for _t, inner in node.targets:
                walk(inner)
        elif isinstance(node, Has):
            out.append((node.raw_name, node.param))
            walk(node.inner)

    for n in query.criteria:
        walk(n)
    for raw in query.result.get("_sort", []):
        for code in (c.strip().lstrip("-") for c in raw.split(",")):
            p = registry.get(query.type or "Resource", code)
            if p is not None:
                out.append(("_sort", p))
    for name, values in query.result.items():
        if name.startswith(("_include", "_revinclude")):
            for raw in values:
                parts = raw.split(":")
                p = registry.get(parts[0], parts[1]) if len(parts) > 1 else None
                if p is not None:
                    out.append((name, p))
    return out
