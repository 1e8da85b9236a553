"""The storage contract: what every backend (SQLite, PostgreSQL) must provide.

The store is deliberately dumb and fast. It never parses FHIR JSON, never validates and never
knows HTTP. Interactions decide versions, build `meta`, serialise the resource and extract index
rows; the store writes them in one database transaction and reads them back. The contract test
suite in `tests/store/test_contract.py` runs unchanged on every backend.

Table layout and a worked example: `docs/architecture.md`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgresql"]


@dataclass(slots=True)
class IndexRows:
    """Search index rows for one resource version, written with it in the same transaction.

    Every row starts with the search parameter's numeric id (`search.params.param_id`). Hashes are
    signed 64-bit integers from `samverka.store.hashing.h64`; 0 means "absent" (no system, no unit).
    Dates are microseconds since 1970-01-01T00:00:00Z, as an inclusive [lo, hi] range.
    """

    tokens: list[tuple[int, int, int]] = field(default_factory=list)  # (param, system_hash, code_hash)
    token_texts: list[tuple[int, str]] = field(default_factory=list)  # (param, normalised display text)
    strings: list[tuple[int, str, str]] = field(default_factory=list)  # (param, normalised, exact)
    dates: list[tuple[int, int, int]] = field(default_factory=list)  # (param, lo_us, hi_us)
    numbers: list[tuple[int, float, float]] = field(default_factory=list)  # (param, lo, hi)
    # (param, system_hash, code_hash, lo, hi): units as given (no UCUM conversion)
    quantities: list[tuple[int, int, int, float, float]] = field(default_factory=list)
    # (param, ref_hash, target_type, target) -- target is the id for local references, else the URL
    references: list[tuple[int, int, str, str]] = field(default_factory=list)
    uris: list[tuple[int, str]] = field(default_factory=list)  # (param, uri)
    # (param, system_hash1, code_hash1, hash2, lo2, hi2): first component a token; the second a token,
    # string or reference (hash2) or a number/quantity/date range (lo2, hi2)
    composites: list[tuple[int, int, int, int, float, float]] = field(default_factory=list)

    def count(self) -> int:
        return (
            len(self.tokens) + len(self.token_texts) + len(self.strings) + len(self.dates)
            + len(self.numbers) + len(self.quantities) + len(self.references) + len(self.uris)
            + len(self.composites)
        )


@dataclass(frozen=True, slots=True)
class Current:
    """The head of one resource as the store sees it, read under the transaction's lock."""

    pk: int
    version: int
    deleted: bool


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of a resource. `data` is the serialised JSON (None for a deletion)."""

    type: str
    id: str
    version: int
    last_updated: str  # FHIR instant
    method: str  # POST | PUT | PATCH | DELETE
    data: bytes | None
    # the patient compartment the row belongs to, when the query read it (searches: for the audit record)
    compartment: str | None = field(default=None, compare=False)

    @property
    def deleted(self) -> bool:
        return self.data is None


@dataclass(slots=True)
class Write:
    """One new version for `UnitOfWork.write`. `data` None means a delete."""

    type: str
    id: str
    version: int
    last_updated: str
    last_updated_us: int
    method: str
    data: bytes | None
    index: IndexRows | None
    compartment: str | None = None  # the patient compartment (Patient id) of the resource
    previous_pk: int | None = None  # from `Current.pk` when the resource exists already


@dataclass(frozen=True, slots=True)
class Head:
    """The current version of one resource, for a reindex batch (`data` None when deleted)."""

    pk: int
    type: str
    id: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    type: str | None = None
    id: str | None = None
    since_us: int | None = None
    at_us: int | None = None
    count: int = 50
    before_seq: int | None = None  # paging cursor: only entries older than this sequence number


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    seq: int
    version: Version


class UnitOfWork(Protocol):
    """One database transaction. Writes become visible together on commit, or not at all."""

    def current(self, type: str, id: str) -> Current | None:
        """The head of a resource, locked against concurrent writers until the transaction ends."""
        ...

    def write(self, w: Write) -> None:
        """Append a version, move the head, and replace the index rows."""
        ...

    def read(self, type: str, id: str) -> Version | None: ...

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run a read-only statement built by the search layer (qmark placeholders)."""
        ...

    def lock(self, key: int) -> None:
        """Serialise writers on a key (conditional create criteria) until the transaction ends."""
        ...

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Change the search-parameter and reindex tables (qmark placeholders); returns RETURNING rows."""
        ...

    def param_generation(self, bump: bool = False) -> int:
        """`search_state.generation`, locked until the transaction ends: shared by every writer, or
        exclusive and incremented (`bump`) by a change to the searchable parameters, so a write never
        commits index rows from a registry older than the one current at its commit."""
        ...

    def heads(self, after_pk: int, max_pk: int, limit: int, types: Sequence[str] | None) -> list[Head]:
        """Up to `limit` resources with after_pk < pk <= max_pk, in pk order, locked against writers."""
        ...

    def replace_index(self, params: Sequence[int], rows: Sequence[tuple[int, IndexRows]]) -> None:
        """Replace the index rows of `params` for each (pk, rows) resource: one reindex batch."""
        ...


class Repository(Protocol):
    """A backend. Reads run outside an explicit transaction; writes go through `transaction()`."""

    dialect: Dialect

    def transaction(self) -> AbstractContextManager[UnitOfWork]: ...

    def read(self, type: str, id: str) -> Version | None: ...

    def vread(self, type: str, id: str, version: int) -> Version | None: ...

    def history(self, q: HistoryQuery) -> list[HistoryEntry]: ...

    def history_count(self, q: HistoryQuery) -> int: ...

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...

    def check(self) -> list[str]:
        """Integrity problems between heads, history and index rows; empty when consistent."""
        ...

    def iter_current(self, batch: int = 1000) -> Iterator[Version]:
        """Every current, non-deleted version (for reindexing and checks)."""
        ...

    def close(self) -> None: ...
