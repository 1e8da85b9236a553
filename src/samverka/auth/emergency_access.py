"""`POST [base]/Patient/{id}/$emergency-access`: a user's emergency access (nödåtkomst) to one patient.

Issue 4 and lag 2022:913 / PDL 4:3 (shared/docs/sweden.md): in an emergency, when consent cannot be
obtained, a user may reach a patient's data over the care-relationship and consent rules, never over
a spärr that has not been lifted. Input: a Parameters resource with `reason` (valueString, required)
and `duration` (valueDuration, optional; at most `Settings.emergency_access_max_hours`). The grant is
stored (`auth.pdl_grants`, migration 0008) and answered as Parameters (`patient`, `expires`); this
request and every access under the grant are audited with purpose of use ETREAT.
"""

from __future__ import annotations

from typing import Any

from ..errors import not_found
from ..fhir.instant import format_instant
from ..interactions.context import Result, Services
from . import pdl_grants
from .pdl import denied
from .pdl_params import parameters, seconds, text


def emergency_access(svc: Services, access: Any, patient: str, body: Any) -> Result:
    if access is None or not getattr(access, "is_user", False):
        raise denied("$emergency-access is for users acting under an assignment (a user's token)")
    params = parameters(body, "$emergency-access")
    reason = text(params, "reason", required=True)
    settings = svc.settings
    duration = seconds(params, "duration", settings.emergency_access_hours * 3600,
                       settings.emergency_access_max_hours * 3600)
    found = svc.repo.read("Patient", patient)
    if found is None or found.deleted:
        raise not_found(f"Patient/{patient} is not known")
    expires = pdl_grants.add(svc.repo, pdl_grants.EMERGENCY, access.user_hsa_id, access.care_unit,
                             access.care_provider, patient, duration, reason=reason)
    access.emergency_patients = access.emergency_patients | {patient}  # this request's audit record: ETREAT
    return Result(200, resource={"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}},
        {"name": "expires", "valueInstant": format_instant(expires * 1_000_000)},
        {"name": "duration", "valueDuration": {"value": duration, "unit": "s", "system": "http://unitsofmeasure.org",
                                               "code": "s"}}]})
