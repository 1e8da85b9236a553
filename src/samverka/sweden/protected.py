"""Protected identity (sekretessmarkering) on a Patient resource: shared/docs/sweden.md.

A Patient with `meta.security` code `protected-information` must not have its address or other contact
details released to users without the permission; `strip` removes them and labels the copy REDACTED.
Who may see them is decided by `auth.pdl_identity`; the Bulk Data export applies `strip` too.
"""

from __future__ import annotations

from typing import Any

from .codes import PROTECTED_INFORMATION, SECURITY_LABEL_SYSTEM

REDACTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED",
            "display": "redacted"}


def protected(body: dict[str, Any]) -> bool:
    labels = (body.get("meta") or {}).get("security") or []
    return any(isinstance(s, dict) and s.get("system") == SECURITY_LABEL_SYSTEM
               and s.get("code") == PROTECTED_INFORMATION for s in labels)


def strip(body: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if k not in ("address", "telecom")}
    if isinstance(out.get("contact"), list):
        out["contact"] = [{k: v for k, v in c.items() if k not in ("address", "telecom")}
                          for c in out["contact"] if isinstance(c, dict)]
    meta = dict(out.get("meta") or {})
    meta["security"] = [*(meta.get("security") or []), REDACTED]
    out["meta"] = meta
    return out
