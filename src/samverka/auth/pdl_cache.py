"""Per-process cache of the Patientdatalagen policies (`auth.pdl.Policy`), invalidated exactly.

Issue 4 (the cost of authorization): building a policy reads the user's Organizations, every Consent
in force, the user's grants and the care relationship set (17-78 ms); this keeps one per user and
assignment (HSA-id, care unit, care provider, fhirUser, PractitionerRole) and reuses it while
- the change counters of migration 0013 (`pdl_changes`: one row per type the rules read -- Encounter,
  EpisodeOfCare, CareTeam, Consent, Organization, Location, PractitionerRole -- and one for
  `pdl_access_grants`, bumped by triggers in the writing transaction) are the ones read just before it
  was built: one small query per request, and it sees every committed write of any process;
- and the clock is before the policy's `valid_until`: the first instant a rule changes by time alone
  (a grant expires, a Consent period starts or ends, a finished Encounter leaves the last N days).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..fhir.instant import now_us
from ..search.params import Registry
from ..store import Repository
from .pdl import Policy
from .store import PDL_MARKER_SQL

MAX_ENTRIES = 4096

Key = tuple[str | None, str | None, str | None, str | None, str | None, int]


@dataclass(frozen=True)
class _Entry:
    repo: Repository
    registry: Registry
    marker: int
    policy: Policy


_entries: OrderedDict[Key, _Entry] = OrderedDict()
_lock = threading.Lock()


def changes(repo: Repository) -> int:
    """The change marker of everything a policy is built from: the sum of the counters of migration 0013."""
    return int(repo.fetch(PDL_MARKER_SQL, ())[0][0])


def policy(repo: Repository, registry: Registry, access: Any, days: int) -> Policy:
    """The user's policy now: the cached one when nothing it depends on changed, else a new one."""
    key: Key = (access.user_hsa_id, access.care_unit, access.care_provider, access.fhir_user,
                access.practitioner_role, days)
    # read before building (a write after it is seen by the next request); the token check read it already
    given = getattr(access, "pdl_marker", None)
    marker = given if given is not None else changes(repo)
    with _lock:
        hit = _entries.get(key)
    if (hit is not None and hit.repo is repo and hit.registry is registry and hit.marker == marker
            and (hit.policy.valid_until is None or now_us() < hit.policy.valid_until)):
        return hit.policy
    built = Policy.build(repo, registry, access, days)
    with _lock:
        _entries[key] = _Entry(repo, registry, marker, built)
        _entries.move_to_end(key)
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)
    return built
