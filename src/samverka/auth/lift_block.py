"""`POST [base]/Patient/{id}/$lift-block`: a user's temporary lift of a patient's spärr (blocks).

Issue 4 and PDL 4:4 (shared/docs/sweden.md): a spärr may be lifted temporarily with the patient's
consent or in an emergency, for at most 7 days, and the lift is itself logged. Input: a Parameters
resource with either `consent` (valueReference to an active permit Consent of this patient, the
patient's consent to the lift) or `emergency` (valueBoolean true) with `reason` (valueString), and
`duration` (valueDuration, optional, default 1 day, at most 7 days). The lift covers this user and
this patient only (`auth.pdl_grants`, migration 0008); the request is audited (purpose ETREAT for an
emergency lift) and answered as Parameters (`patient`, `expires`).
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import invalid, not_found
from ..fhir.instant import format_instant, now_us
from ..interactions.context import Result, Services
from . import pdl_grants
from .pdl import denied
from .pdl_consent import read_consent
from .pdl_params import parameters, seconds, text, where

MAX_LIFT = 7 * 86400


def lift_block(svc: Services, access: Any, patient: str, body: Any) -> Result:
    if access is None or not getattr(access, "is_user", False):
        raise denied("$lift-block is for users acting under an assignment (a user's token)")
    params = parameters(body, "$lift-block")
    duration = seconds(params, "duration", 86400, MAX_LIFT)
    found = svc.repo.read("Patient", patient)
    if found is None or found.deleted:
        raise not_found(f"Patient/{patient} is not known")
    emergency = params.get("emergency", {}).get("valueBoolean") is True
    consent_ref = params.get("consent", {}).get("valueReference", {}).get("reference")
    reason = text(params, "reason", required=emergency)
    if emergency == bool(consent_ref):
        raise invalid("$lift-block needs either consent (the patient's Consent) or emergency = true with a reason",
                      where("consent"), "required")
    if consent_ref:
        _check_consent(svc, patient, str(consent_ref))
    expires = pdl_grants.add(svc.repo, pdl_grants.LIFT, access.user_hsa_id, access.care_unit, access.care_provider,
                             patient, duration, reason=reason, consent=str(consent_ref) if consent_ref else None)
    if emergency:
        access.emergency_patients = access.emergency_patients | {patient}
    return Result(200, resource={"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}},
        {"name": "expires", "valueInstant": format_instant(expires * 1_000_000)}]})


def _check_consent(svc: Services, patient: str, ref: str) -> None:
    """The consent must be this patient's active permit Consent."""
    head, _, id_ = ref.rpartition("/")
    v = svc.repo.read("Consent", id_) if head.endswith("Consent") and id_ else None
    body = orjson.loads(v.data) if v is not None and v.data is not None else None
    found = read_consent(body, now_us()) if isinstance(body, dict) else None
    if found is None or found.patient != patient or found.kind != "permit":
        raise invalid(f"{ref} is not an active permit Consent of Patient/{patient}",
                      f"{where('consent')}.valueReference", "value")
