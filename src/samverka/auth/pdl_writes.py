"""Patientdatalagen for users' writes: recording in a patient's record needs a care relationship.

Issue 4; PDL 4 kap. 1 § (shared/docs/sweden.md: staff may access a patient's data only if they take
part in that patient's care) and docs/architecture.md "PDL access rules". `pdl.Policy.check` guards
the resource a request names (read, update, patch, delete); this guards the resource a user sends
(create, update, patch and those entries of a batch or transaction), through
`interactions.writes.prepare` (`Services.write_check`), so the body's patient compartment is the one
the store will record:
- a Patient resource is not checked here (a new one is a registration; an existing one was checked
  by `Policy.check`);
- an Encounter whose `serviceProvider`, or an EpisodeOfCare whose `managingOrganization`, is the
  user's own care unit may be recorded for any patient: it is what starts a care relationship;
- a patient not (yet) stored has no record to protect (for example a Patient created in the same
  transaction);
- anything else needs the patient to be reachable now: a care relationship or an emergency access.
"""

from __future__ import annotations

from typing import Any

from ..store import Repository
from .pdl import Policy, denied

_STARTS_RELATIONSHIP = {"Encounter": "serviceProvider", "EpisodeOfCare": "managingOrganization"}


def check_write(policy: Policy, repo: Repository, resource: dict[str, Any], patient: str) -> None:
    """403 with the reason unless the user may record `resource` in `patient`'s compartment."""
    type_ = resource.get("resourceType")
    if type_ == "Patient" or patient in policy.emergency:
        return
    element = _STARTS_RELATIONSHIP.get(str(type_))
    if element is not None:
        ref = resource.get(element)
        if isinstance(ref, dict) and ref.get("reference") in {f"Organization/{o}" for o in policy.unit_orgs}:
            return
    if _reachable(policy, repo, patient):
        return
    stored = repo.fetch("SELECT 1 FROM resources WHERE type = 'Patient' AND id = ? AND deleted = 0", [patient])
    if not stored:
        return
    raise denied(f"PDL: Patient/{patient} has no care relationship with care unit {policy.care_unit}, so "
                 f"{type_} cannot be recorded for them (an Encounter or EpisodeOfCare at your own care unit "
                 f"starts one; in an emergency use POST Patient/{patient}/$emergency-access)",
                 _where(resource, patient))


def _reachable(policy: Policy, repo: Repository, patient: str) -> bool:
    if policy.reachable_ids is not None:
        return patient in policy.reachable_ids
    sql, params = policy.relationship
    return bool(repo.fetch(f"SELECT 1 FROM ({sql}) z WHERE z.compartment = ?", [*params, patient]))


def _where(resource: dict[str, Any], patient: str) -> str:
    """The element that puts the resource in the patient's compartment (`Observation.subject`)."""
    type_ = str(resource.get("resourceType"))
    target = f"Patient/{patient}"
    for key, value in resource.items():
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, dict) and v.get("reference") == target for v in items):
            return f"{type_}.{key}"
    return type_
