"""The patient's Consent resources as Patientdatalagen reads them: blocks (spärr) and consents.

https://hl7.org/fhir/R4/consent.html, PDL 4:4 (spärr) and lag 2022:913 (sammanhållen journalföring).
A Consent counts when `status` is `active`, `patient` names the patient and `provision.period` (if
any) covers now. Its organisations are the `Organization/{id}` references in `provision.actor[].reference`
(or, when there are no actors, `Consent.organization[]`):
- `provision.type = deny`: a **block** of the information recorded at those care units / care providers;
- `provision.type = permit`: the patient's **consent** that those care units / providers read
  information recorded by other care providers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..fhir.instant import parse_instant
from ..search.params import Registry
from ..search.plan import build, page
from ..search.query import parse
from ..store import Repository

MAX_CONSENTS = 100_000


@dataclass(frozen=True)
class PatientConsent:
    """One active deny (block) or permit Consent of a patient, with the Organization ids it names."""

    id: str
    patient: str
    kind: str  # "deny" | "permit"
    orgs: frozenset[str]


def _ref_id(ref: Any, type_: str) -> str | None:
    text = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(text, str):
        return None
    head, _, id_ = text.rpartition("/")
    return id_ if id_ and (head == type_ or head.endswith("/" + type_)) else None


def _current(period: Any, now_us: int) -> bool:
    if not isinstance(period, dict):
        return True
    try:
        start = period.get("start")
        end = period.get("end")
        if isinstance(start, str) and parse_instant(start) > now_us:
            return False
        if isinstance(end, str) and parse_instant(end) < now_us:
            return False
    except ValueError:
        return False
    return True


def read_consent(body: dict[str, Any], now_us: int) -> PatientConsent | None:
    """The block or consent a Consent resource expresses now; None when it does not count."""
    if body.get("status") != "active":
        return None
    patient = _ref_id(body.get("patient"), "Patient")
    provision = body.get("provision")
    if patient is None or not isinstance(provision, dict) or provision.get("type") not in ("deny", "permit"):
        return None
    if not _current(provision.get("period"), now_us):
        return None
    orgs = {o for a in provision.get("actor") or [] if isinstance(a, dict)
            if (o := _ref_id(a.get("reference"), "Organization"))}
    if not orgs:
        orgs = {o for ref in body.get("organization") or [] if (o := _ref_id(ref, "Organization"))}
    if not orgs:
        return None
    return PatientConsent(str(body.get("id")), patient, str(provision["type"]), frozenset(orgs))


def _bounds(body: dict[str, Any], now_us: int) -> list[int]:
    """The future instants at which an active Consent's `provision.period` starts or ends."""
    provision = body.get("provision")
    period = provision.get("period") if isinstance(provision, dict) else None
    if not isinstance(period, dict):
        return []
    out = []
    # `_current`: in force from `start` (inclusive) until just after `end`
    for name, after in (("start", 0), ("end", 1)):
        edge = period.get(name)
        try:
            at = parse_instant(edge) + after if isinstance(edge, str) else None
        except ValueError:
            at = None
        if at is not None and at > now_us:
            out.append(at)
    return out


def active_consents(repo: Repository, registry: Registry, now_us: int, patient: str | None = None,
                    bounds: list[int] | None = None) -> list[PatientConsent]:
    """Every block and consent in force now (of one patient, or of all). `bounds`, when given, collects
    the future instants at which an active Consent's period starts or ends (`pdl_cache`)."""
    pairs = [("status", "active")] + ([("patient", f"Patient/{patient}")] if patient else [])
    plan = build(repo, registry, parse(registry, "Consent", pairs))
    out = []
    for v in page(repo, plan, MAX_CONSENTS, None).versions:
        if v.data is None:
            continue
        body = orjson.loads(v.data)
        found = read_consent(body, now_us) if isinstance(body, dict) else None
        if bounds is not None and isinstance(body, dict) and body.get("status") == "active":
            bounds += _bounds(body, now_us)
        if found is not None:
            out.append(found)
    return out
