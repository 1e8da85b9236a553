"""Stored PDL access grants (migration 0008): emergency access (nödåtkomst) and spärr lifts.

A grant belongs to one user (HSA-id) and one patient and ends at `expires`; rows are only ever
inserted, so the table doubles as a record of every grant given (the audit log has the events).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..store import Repository

EMERGENCY = "emergency"
LIFT = "lift"


@dataclass(frozen=True)
class Grants:
    """The patients a user holds an unexpired emergency access or spärr lift for."""

    emergency: frozenset[str]
    lifted: frozenset[str]
    bounds: tuple[int, ...] = ()  # µs: when each of them expires


def current(repo: Repository, user_hsa_id: str, now: int | None = None) -> Grants:
    now = int(time.time()) if now is None else now
    rows = repo.fetch("SELECT kind, patient, expires FROM pdl_access_grants WHERE user_hsa_id = ? AND expires > ?",
                      (user_hsa_id, now))
    return Grants(frozenset(str(p) for k, p, _ in rows if k == EMERGENCY),
                  frozenset(str(p) for k, p, _ in rows if k == LIFT),
                  tuple(int(e) * 1_000_000 for _, _, e in rows))


def add(repo: Repository, kind: str, user_hsa_id: str, care_unit: str | None, care_provider: str | None,
        patient: str, seconds: int, reason: str | None = None, consent: str | None = None) -> int:
    """Store a grant lasting `seconds` from now; returns its expiry (Unix seconds)."""
    now = int(time.time())
    expires = now + seconds
    with repo.transaction() as uow:
        uow.execute("INSERT INTO pdl_access_grants (kind, user_hsa_id, care_unit, care_provider, patient, reason,"
                    " consent, created, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (kind, user_hsa_id, care_unit, care_provider, patient, reason, consent, now, expires))
    return expires
