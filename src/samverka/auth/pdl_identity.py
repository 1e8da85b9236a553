"""Protected identity (sekretessmarkering): a marked Patient's address and contact details are withheld.

shared/docs/sweden.md: a Patient with `meta.security` code `protected-information`
(`sweden.codes.SECURITY_LABEL_SYSTEM`) must not have its address or other contact details released.
For a user's token, `redact` removes `address`, `telecom` and the contacts' `address`/`telecom` from
every such Patient an answer carries (read, vread, search matches and includes, history, bundle
entries) and labels it REDACTED (v3-ObservationValue). A user may see them only when the assignment
they act under (the PractitionerRole in the token) carries the code `protected-identity` of
`PERMISSION_SYSTEM` in `PractitionerRole.code`, read fresh on every request that needs it.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..interactions.context import Result
from ..store import Repository
from ..sweden.protected import REDACTED, protected, strip

__all__ = ["REDACTED", "may_see", "protected", "redact", "strip"]

PERMISSION_SYSTEM = "https://samverka.se/fhir/CodeSystem/pdl-permission"
PROTECTED_IDENTITY = "protected-identity"
def may_see(repo: Repository, practitioner_role: str | None) -> bool:
    """True when the user's assignment carries the protected-identity permission."""
    if not practitioner_role:
        return False
    v = repo.read("PractitionerRole", practitioner_role.rpartition("/")[2])
    role = orjson.loads(v.data) if v is not None and v.data is not None else {}
    return any(isinstance(c, dict) and c.get("system") == PERMISSION_SYSTEM and c.get("code") == PROTECTED_IDENTITY
               for code in role.get("code") or [] if isinstance(code, dict) for c in code.get("coding") or [])


def _redact_bundle(bundle: dict[str, Any], allowed: Any) -> bool:
    changed = False
    for entry in bundle.get("entry") or []:
        inner = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(inner, orjson.Fragment):
            full = str(entry.get("fullUrl", ""))
            if "/Patient/" not in full and not full.startswith("Patient/"):
                continue
            inner = orjson.loads(orjson.dumps(inner))
        if not isinstance(inner, dict):
            continue
        if inner.get("resourceType") == "Bundle":
            changed = _redact_bundle(inner, allowed) or changed
        elif inner.get("resourceType") == "Patient" and protected(inner) and not allowed():
            entry["resource"] = strip(inner)
            changed = True
    return changed


def redact(result: Result, repo: Repository, practitioner_role: str | None) -> Result:
    """`result` with every protected Patient's contact details removed, unless the user may see them."""
    decided: list[bool] = []

    def allowed() -> bool:
        if not decided:
            decided.append(may_see(repo, practitioner_role))
        return decided[0]

    v = result.version
    if v is not None and v.type == "Patient" and v.data is not None:
        body = orjson.loads(v.data)
        if protected(body) and not allowed():
            return Result(result.status, resource=strip(body), headers=result.headers, outcome=result.outcome)
    if result.resource is not None and result.resource.get("resourceType") == "Bundle":
        _redact_bundle(result.resource, allowed)
    return result
