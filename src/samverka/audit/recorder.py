"""Recording what a request did: writes inside their own transaction, reads before their response.

IHE BALP (https://profiles.ihe.net/ITI/BALP/) records for FHIR REST interactions
(https://hl7.org/fhir/R4/auditevent.html):
- **Writes.** `Auditing` wraps the request's repository: each unit of work remembers what it writes,
  and appends one AuditEvent per action (C, U, D) to the chain inside the same transaction, just
  before it commits. A rolled-back write leaves no success record (the API logs the failure).
- **Reads.** `groupcommit.GroupCommit` appends read records from one committing thread, in one short transaction
  per batch: everything that arrived while the previous batch committed (at least everything of one
  event-loop turn). Each read's response waits for the commit of its record: durable before the data
  leaves the server, at the cost of one commit per batch rather than per read.
- **Index.** The same thread writes the records' patient and entity rows (`side`) in small chunks when
  no read is waiting: every `side.TICK` seconds once `start`ed, and sooner once `side.EAGER` reads are
  behind.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from ..errors import Category, FhirError
from ..store import Current, HistoryEntry, HistoryQuery, IndexRows, Repository, UnitOfWork, Version, Write
from ..store.base import Head
from ..store.hashing import h64
from . import chain
from .groupcommit import GroupCommit
from .model import Entity, Who, event

log = logging.getLogger(__name__)
__all__ = ["Auditing", "GroupCommit", "RecordingUnitOfWork", "compartments", "dumps", "returned",
           "write_events"]
_SUBTYPE = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class RecordingUnitOfWork:
    """A UnitOfWork that remembers every version written (with the patient it concerns)."""

    def __init__(self, inner: UnitOfWork) -> None:
        self.inner = inner
        self.writes: list[tuple[str, Entity, str | None]] = []  # (method, entity, patient)

    def current(self, type: str, id: str) -> Current | None:
        return self.inner.current(type, id)

    def write(self, w: Write) -> None:
        if w.type == "AuditEvent":
            raise FhirError.of(Category.METHOD_NOT_ALLOWED, "AuditEvent records are written by the server only")
        patient = w.compartment
        if w.data is None and w.previous_pk is not None:  # a delete: the compartment it had
            rows = self.inner.execute("SELECT compartment FROM resources WHERE pk = ?", (w.previous_pk,))
            patient = rows[0][0] if rows else None
        self.inner.write(w)
        self.writes.append((w.method, Entity(w.type, w.id, w.version), patient))

    def read(self, type: str, id: str) -> Version | None:
        return self.inner.read(type, id)

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.inner.fetch(sql, params)

    def lock(self, key: int) -> None:
        self.inner.lock(key)

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.inner.execute(sql, params)

    def param_generation(self, bump: bool = False) -> int:
        return self.inner.param_generation(bump)

    def heads(self, after_pk: int, max_pk: int, limit: int, types: Sequence[str] | None) -> list[Head]:
        return self.inner.heads(after_pk, max_pk, limit, types)

    def replace_index(self, params: Sequence[int], rows: Sequence[tuple[int, IndexRows]]) -> None:
        self.inner.replace_index(params, rows)


def write_events(who: Who, writes: Sequence[tuple[str, Entity, str | None]], system_hsa_id: str,
                 ) -> list[dict[str, Any]]:
    """One AuditEvent per kind of write (create, update, patch, delete) in one transaction."""
    by_kind: dict[str, list[tuple[Entity, str | None]]] = {}
    for method, entity, patient in writes:
        by_kind.setdefault(_SUBTYPE.get(method, "update"), []).append((entity, patient))
    out = []
    for subtype, items in by_kind.items():
        patients = sorted({p for _e, p in items if p})
        out.append(event(who, subtype, "0", patients, [e for e, _p in items], system_hsa_id))
    return out


class Auditing:
    """The request's view of the repository: every write transaction also appends its audit records."""

    def __init__(self, inner: Repository, who: Who, system_hsa_id: str) -> None:
        self.inner = inner
        self.who = who
        self.system_hsa_id = system_hsa_id
        self.dialect = inner.dialect
        self.written = 0  # audit records appended by this request's write transactions

    @contextmanager
    def transaction(self) -> Iterator[RecordingUnitOfWork]:
        with self.inner.transaction() as uow:
            rec = RecordingUnitOfWork(uow)
            yield rec
            if rec.writes:
                events = write_events(self.who, rec.writes, self.system_hsa_id)
                chain.append(uow, events, self.dialect)
                self.written += len(events)

    def read(self, type: str, id: str) -> Version | None:
        return self.inner.read(type, id)

    def vread(self, type: str, id: str, version: int) -> Version | None:
        return self.inner.vread(type, id, version)

    def history(self, q: HistoryQuery) -> list[HistoryEntry]:
        return self.inner.history(q)

    def history_count(self, q: HistoryQuery) -> int:
        return self.inner.history_count(q)

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.inner.fetch(sql, params)

    def check(self) -> list[str]:
        return self.inner.check()

    def iter_current(self, batch: int = 1000) -> Iterator[Version]:
        return self.inner.iter_current(batch)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def returned(resource: dict[str, Any] | None, version: Version | None) -> list[Entity]:
    """The resources a read answer carries: the version, or a Bundle's matches and includes (nested too)."""
    out: list[Entity] = []
    if version is not None and version.data is not None:
        out.append(Entity(version.type, version.id, version.version))
    if resource is None or resource.get("resourceType") != "Bundle":
        return out
    kind = resource.get("type")
    for entry in resource.get("entry") or ():
        inner = entry.get("resource")
        if isinstance(inner, dict) and inner.get("resourceType") == "Bundle":
            out += returned(inner, None)
            continue
        full = entry.get("fullUrl")
        if not full or inner is None:
            continue
        if kind in ("batch-response", "transaction-response") and "location" in (entry.get("response") or {}):
            continue  # a write: its own transaction recorded it
        parts = full.rstrip("/").split("/")
        if len(parts) >= 2:
            out.append(Entity(parts[-2], parts[-1]))
    return out


def compartments(repo: Repository, entities: Sequence[Entity]) -> list[str]:
    """The patients (patient compartments) of `entities`, by one indexed lookup per 500 of them."""
    wanted = {(e.type, e.id) for e in entities}
    patients: set[str] = set()
    refs = sorted({h64(f"{t}/{i}") for t, i in wanted})
    for start in range(0, len(refs), 500):
        chunk = refs[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        for t, i, comp in repo.fetch(f"SELECT type, id, compartment FROM resources WHERE ref IN ({marks})", chunk):
            if (t, i) in wanted and comp:
                patients.add(str(comp))
    return sorted(patients)


def dumps(events: Sequence[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)
