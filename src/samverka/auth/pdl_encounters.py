"""The Encounters of a policy's patients, and which of them another care provider recorded (auth.pdl).

"Recorded by another care provider" is decided per row by following the row's `encounter`/`context`
reference to the Encounter and looking at its service provider: four index lookups per row, which a
patient's search repeats for hundreds of rows. When the policy's patients are bound (`reachable_ids`),
their Encounters are read once per policy instead: `all` holds every current Encounter of those
patients, `other` the ones whose service provider lies outside the user's care provider. A row linked
to one of `all` is then decided by a lookup in `other`; a row linked to any other Encounter (of a
patient outside the set, which the rules refuse anyway, or a deleted one) still takes the full check,
so the answer is the same as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..search.params import Registry
from ..store import Repository
from ..store.hashing import h64

MAX_ENCOUNTERS = 5000  # beyond this many the sets would cost more to bind than the per-row check


@dataclass(frozen=True)
class Encounters:
    all: tuple[int, ...]  # `resources.ref` of every current Encounter of the policy's patients
    other: tuple[int, ...]  # those with a service provider outside the user's care provider


def read(repo: Repository, registry: Registry, patients: frozenset[str], provider_refs: Sequence[int]
         ) -> Encounters | None:
    """The Encounters of `patients` (None when there are more than MAX_ENCOUNTERS)."""
    if not patients:
        return Encounters((), ())
    subject, sp = registry.get("Encounter", "patient"), registry.get("Encounter", "service-provider")
    assert subject is not None and sp is not None
    outside = f"z.ref NOT IN ({_marks(provider_refs)})" if provider_refs else "z.ref IS NOT NULL"
    refs = [h64(f"Patient/{p}") for p in sorted(patients)]
    rows = repo.fetch(
        f"SELECT DISTINCT e.ref, CASE WHEN EXISTS (SELECT 1 FROM idx_reference z WHERE z.res = e.pk AND z.param = ?"
        f" AND {outside}) THEN 1 ELSE 0 END FROM idx_reference p JOIN resources e ON e.pk = p.res"
        f" WHERE p.param = ? AND p.ref IN ({_marks(refs)}) AND e.type = 'Encounter' AND e.deleted = 0"
        f" LIMIT {MAX_ENCOUNTERS + 1}", [sp.id, *provider_refs, subject.id, *refs])
    if len(rows) > MAX_ENCOUNTERS:
        return None
    return Encounters(tuple(sorted(int(r[0]) for r in rows)), tuple(sorted(int(r[0]) for r in rows if r[1])))


def linked(known: Encounters, column: str, full: str, full_params: list[Any]) -> tuple[str, list[Any]]:
    """A condition on the Encounter reference `column` (a `resources.ref`): another provider recorded it.
    Known Encounters by set membership, any other by `full` (the per-row check)."""
    parts: list[str] = []
    params: list[Any] = []
    if known.other:
        parts.append(f"{column} IN ({_marks(known.other)})")
        params += known.other
    if known.all:
        parts.append(f"({column} NOT IN ({_marks(known.all)}) AND {full})")
        params += [*known.all, *full_params]
    else:
        parts.append(full)
        params += full_params
    return "(" + " OR ".join(parts) + ")", params


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)
