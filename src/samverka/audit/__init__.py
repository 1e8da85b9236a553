"""The audit log: IHE BALP AuditEvents (https://profiles.ihe.net/ITI/BALP/) for every interaction on
patient data, hash-chained and append-only, with follow-up reports (https://hl7.org/fhir/R4/auditevent.html).

`Auditor` is what the API layer holds (one per process): it wraps a request's services so writes
record themselves in their own transaction, and records reads, bundle reads and failures before the
response leaves. `chain` stores and verifies; `query` searches, reports and exports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..errors import Category, FhirError, to_outcome
from ..fhir.definitions import patient_compartment_types
from ..interactions.context import Result, Services
from ..store import Repository
from .model import SYSTEM_HSA_ID, Entity, Who, event, who_from_access
from .recorder import Auditing, GroupCommit, compartments, returned

__all__ = ["Auditor", "Who", "classify", "reach", "who_from_access"]

WRITES = frozenset({"create", "update", "patch", "delete"})


patient_types = patient_compartment_types  # resource types that can hold patient data


def classify(method: str, parts: Sequence[str]) -> str | None:
    """The restful-interaction code of a request (http://hl7.org/fhir/restful-interaction); None: not audited."""
    n = len(parts)
    read_like = method in ("GET", "HEAD")
    if n == 0:
        return {"POST": "transaction"}.get(method, "search-system" if read_like else None)
    head, last = parts[0], parts[-1]
    if last == "$export" or head == "$export-file":  # a Bulk Data kick-off, or a download of its data
        return "export"
    if head == "metadata" or last == "$validate" or head.startswith("$") or last == "$reindex":
        return None
    writes = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    if head == "_history" and n == 1:
        return "history-system"
    if n == 1:
        return "search-type" if read_like else writes.get(method)
    if last.startswith("$"):
        return "operation"
    if n == 2 and last == "_search":
        return "search-type"
    if n == 2 and last == "_history":
        return "history-type"
    if n == 2:
        return "read" if read_like else {k: v for k, v in writes.items() if k != "POST"}.get(method)
    if n == 3 and last == "_history":
        return "history-instance"
    if n == 3 and read_like:
        return "search-type"
    if n == 4 and parts[2] == "_history" and read_like:
        return "vread"
    return None


def reach(access: Any, perm: str) -> str | None:
    """"all" (auditor), "patient" (the patient's own log) or None: only explicit AuditEvent scopes count."""
    found = None
    for g in getattr(access, "grants", ()):
        if g.type != "AuditEvent" or perm not in g.perms:
            continue
        if g.context != "patient":
            return "all"
        if getattr(access, "patient", None):
            found = "patient"
    return found


class Auditor:
    """Records one process's requests into the audit chain of `repo`."""

    def __init__(self, repo: Repository, settings: Any = None) -> None:
        self.repo = repo
        self.system_hsa_id = str(getattr(settings, "system_hsa_id", None) or SYSTEM_HSA_ID)
        self.reads = GroupCommit(repo, flush=bool(getattr(settings, "audit_read_flush", False)))

    def services(self, svc: Services, who: Who) -> Services:
        """The request's services: write transactions append their records before committing."""
        return dataclasses.replace(svc, repo=Auditing(svc.repo, who, self.system_hsa_id))

    def _url_entity(self, parts: Sequence[str], subtype: str) -> list[Entity]:
        if len(parts) >= 2 and not parts[1].startswith(("$", "_")) and subtype not in ("search-type",):
            return [Entity(parts[0], parts[1])]
        if len(parts) == 3 and subtype == "search-type":  # a compartment search: Patient/123/Observation
            return [Entity(parts[0], parts[1])]
        return []

    async def success(self, parts: Sequence[str], subtype: str | None, who: Who, result: Result,
                      query: str) -> None:
        """Record a read-like success (writes recorded themselves in their transaction)."""
        if subtype is None or subtype in WRITES:
            return
        entities = returned(result.resource, result.version)
        asked = self._url_entity(parts, subtype)
        if result.patients is not None:  # a search read its rows' compartments already
            patients = sorted(set(result.patients) | set(compartments(self.repo, asked) if asked else ()))
        else:
            patients = compartments(self.repo, [*entities, *asked]) if entities or asked else []
        for e in asked:
            if e.type == "Patient" and e.id not in patients and subtype == "search-type":
                patients.append(e.id)  # the compartment asked about, even when nothing matched
        rtype = parts[0] if parts else None
        if (not patients and rtype is not None and rtype not in patient_types()
                and subtype not in ("transaction", "export")):
            return  # no patient data involved
        if subtype == "transaction" and not entities:
            return  # its writes recorded themselves; no reads inside
        is_query = subtype.startswith(("search", "history")) or subtype == "export"
        ev = event(who, subtype, "0", patients, entities if not is_query else entities[:1000],
                   self.system_hsa_id, query=query if is_query else None)
        if subtype == "transaction":
            ev["action"] = "R"
        await self.reads.write([ev])

    async def failure(self, parts: Sequence[str], subtype: str | None, who: Who, exc: Exception) -> None:
        """Record a refused or failed attempt: always for 401/403, else when patient data was involved."""
        if isinstance(exc, FhirError):
            status, _outcome = to_outcome(exc)
            description = "; ".join(i.diagnostics for i in exc.issues)
            denied = exc.category in (Category.UNAUTHORIZED, Category.FORBIDDEN)
        else:
            status, description, denied = 500, type(exc).__name__, False
        rtype = parts[0] if parts else None
        if subtype is None and not denied:
            return
        if not denied and rtype is not None and rtype not in patient_types():
            return
        asked = self._url_entity(parts, subtype or "")
        try:
            patients = compartments(self.repo, asked) if asked else []
        except Exception:  # the failure record matters more than its patient list
            patients = []
        patients = sorted(set(patients) | {e.id for e in asked if e.type == "Patient"})
        outcome = "4" if status < 500 else "8"
        ev = event(who, subtype or "operation", outcome, patients, asked, self.system_hsa_id,
                   description=f"{status}: {description}")
        if subtype is None:
            ev["action"] = "E"
        await self.reads.write([ev])
