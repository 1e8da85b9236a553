"""Search semantics against one resource version: query criteria, filters and the subscriber's access.

A topic's query criteria and a Subscription's `backport-filter-criteria` are FHIR search queries
(https://hl7.org/fhir/uv/subscriptions-backport/components.html#filters) that must hold for the
version the event is about, not for whatever version is current when the event is delivered (and a
deleted resource has no index rows at all). `Scratch` therefore writes that one version, with the
index rows the real write path extracts, into a private SQLite store inside a transaction, runs the
real search engine there (`search.plan`), and rolls back: exactly the server's search semantics,
applied to exactly one version. Chains and `_has` (which need other resources) are refused when the
Subscription is created. The subscriber's access is checked the same way: `auth.access.Access.require`
looks up the compartment of the version in the scratch store.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson

from ..auth.access import Access, Need
from ..errors import FhirError
from ..fhir.instant import now_us
from ..search.extract import extract, patient_compartment
from ..search.params import Registry
from ..search.plan import build, page
from ..search.query import Criterion, parse
from ..store import IndexRows, UnitOfWork, Write
from ..store.hashing import h64
from ..store.sqlite import SqliteRepository
from .outbox import Owner


class _Rollback(Exception):
    """Ends a scratch transaction: nothing written there is ever kept."""


@dataclass
class Loaded:
    """One version written into an open scratch transaction."""

    uow: UnitOfWork
    registry: Registry
    type: str
    id: str

    def matches(self, query: str) -> bool:
        """Does the version match the search query ("Type?a=b" or "a=b" for its own type)?"""
        type_, sep, text = query.partition("?")
        if not sep:
            type_, text = self.type, query
        if type_ != self.type:
            return False
        return self._hit(parse_qsl(text, keep_blank_values=True), ())

    def _hit(self, pairs: list[tuple[str, str]], filters: Sequence[tuple[str, Sequence[Any]]]) -> bool:
        q = parse(self.registry, self.type, [*pairs, ("_id", self.id)])
        if q.unknown:
            return False
        return bool(page(self.uow, build(self.uow, self.registry, q, filters), 1, None).versions)

    def readable(self, owner: Owner) -> bool:
        """Could the owner's token read this version (type scopes, and the compartment for patient/)?"""
        access = Access.from_claims({"client_id": owner.client_id, "scope": owner.scope,
                                     "patient": owner.patient})
        try:
            access.require(Need("r", self.type, self.id), self.uow)
        except FhirError:
            return False
        return True


_Tokens = tuple[tuple[int, tuple[tuple[int | None, int | None], ...]], ...]  # AND of (param, OR of (system, code))


def _token_plan(registry: Registry, type_: str, text: str) -> _Tokens | None:
    """The query as token tests on extracted index rows, when it is only plain token parameters
    (`param=code`, `param=system|code`, `param=|code`, `param=system|`, values ORed); else None."""
    q = parse(registry, type_, parse_qsl(text, keep_blank_values=True))
    if q.unknown or q.result or q.types or q.list_ids or not q.criteria:
        return None
    plan = []
    for c in q.criteria:
        if (not isinstance(c, Criterion) or c.param.type != "token" or c.modifier is not None
                or c.param.code.startswith("_")):  # _id, _tag, ... are not plain token rows: Scratch
            return None
        alternatives: list[tuple[int | None, int | None]] = []
        for v in c.values:
            if v.prefix is not None:
                return None
            if "|" not in v.text:
                alternatives.append((None, h64(v.text)))
                continue
            system, _, code = v.text.partition("|")
            alternatives.append((h64(system) if system else 0, h64(code) if code else None))
        plan.append((c.param.id, tuple(alternatives)))
    return tuple(plan)


class Quick:
    """Plain token queries answered from the extracted index rows, without the scratch store: the same
    comparisons `search.sql_values.token` makes in SQL (the same hashes of the same extracted values)."""

    def __init__(self, registry: Callable[[], Registry]) -> None:
        self.registry = registry
        self._plans: dict[tuple[str, str, int], _Tokens | None] = {}
        # the index rows of the last resource looked at: dispatch tests one version against every topic and
        # filter in turn, and extraction is most of a test's cost (the object is held, so `is` is safe)
        self._last: tuple[dict[str, Any], Registry, IndexRows] | None = None

    def index_rows(self, resource: dict[str, Any]) -> IndexRows:
        """`extract(resource)`, computed once for the same resource object and registry."""
        registry = self.registry()
        last = self._last
        if last is not None and last[0] is resource and last[1] is registry:
            return last[2]
        rows = extract(resource, registry)
        self._last = (resource, registry, rows)
        return rows

    def matches(self, query: str, resource: dict[str, Any]) -> bool | None:
        """Does `resource` match the query; None when the query is not plain tokens (use `Scratch`)."""
        rtype = str(resource.get("resourceType"))
        type_, sep, text = query.partition("?")
        if not sep:
            type_, text = rtype, query
        if type_ != rtype:
            return False
        registry = self.registry()
        key = (type_, text, id(registry))
        if key not in self._plans:
            self._plans[key] = _token_plan(registry, type_, text)
        plan = self._plans[key]
        if plan is None:
            return None
        rows = self.index_rows(resource).tokens
        for param, alternatives in plan:
            if not any(p == param and (code is None or c == code) and (system is None or s == system)
                       for p, s, c in rows for system, code in alternatives):
                return False
        return True


class Scratch:
    """A private SQLite store that holds at most one resource version, inside a rolled-back transaction."""

    def __init__(self, registry: Callable[[], Registry], folder: Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="samverka-events-") if folder is None else None
        where = Path(self._tmp.name) if self._tmp is not None else folder
        assert where is not None
        self.registry = registry
        self.repo = SqliteRepository(where / "scratch.sqlite")
        self.quick = Quick(registry)

    def matches(self, resource: dict[str, Any], query: str) -> bool:
        """Does this version match the query (plain tokens in memory, anything else in the store)?"""
        fast = self.quick.matches(query, resource)
        if fast is not None:
            return fast
        with self.loaded(resource) as loaded:
            return loaded.matches(query)

    @contextmanager
    def loaded(self, resource: dict[str, Any]) -> Iterator[Loaded]:
        """`resource` written into the scratch store for the duration of the block."""
        registry = self.registry()
        type_, id_ = str(resource["resourceType"]), str(resource.get("id") or "x")
        data = orjson.dumps(resource)
        ts = now_us()
        try:
            with self.repo.transaction() as uow:
                uow.write(Write(type_, id_, 1, "", ts, "PUT", data, self.quick.index_rows(resource),
                                patient_compartment(resource, registry)))
                yield Loaded(uow, registry, type_, id_)
                raise _Rollback
        except _Rollback:
            pass

    def close(self) -> None:
        self.repo.close()
        if self._tmp is not None:
            self._tmp.cleanup()
