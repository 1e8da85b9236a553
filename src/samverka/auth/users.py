"""Users and their assignments (medarbetaruppdrag), read from Practitioner and PractitionerRole resources.

A user is a Practitioner identified by its HSA-id (`urn:oid:1.2.752.29.4.19`); each active
PractitionerRole at a care unit is one assignment the user may act under. The unit's and its care
provider's HSA-ids come from the Organization resources (`PractitionerRole.organization`, then
`Organization.partOf`). Passwords for the embedded login page are argon2id hashes (argon2-cffi):
https://www.rfc-editor.org/rfc/rfc9106
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..search.engine import matching_ids
from ..search.params import Registry
from ..search.query import parse
from ..store import Repository
from ..sweden.codes import ASSIGNMENT_PURPOSE_EXTENSION, ASSIGNMENT_PURPOSE_SYSTEM
from ..sweden.identifiers import HSA_ID, HSA_ID_ALIASES
from .store import now

_HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters
# checked when the user does not exist, so a wrong user name costs as long as a wrong password
_DUMMY_HASH = _HASHER.hash("samverka-no-such-user")
MAX_PASSWORD = 1024


@dataclass(frozen=True)
class Assignment:
    """One PractitionerRole a user may act under: the care unit, its provider, role and purpose."""

    practitioner_role: str  # PractitionerRole id
    care_unit: str  # the unit's HSA-id
    care_unit_name: str
    care_provider: str | None  # the provider's HSA-id
    role: str | None
    purpose: str | None  # code from ASSIGNMENT_PURPOSE_SYSTEM

    def claims(self) -> dict[str, Any]:
        """The access-token claims that carry this assignment (see `auth.access.Access`)."""
        out: dict[str, Any] = {"practitioner_role": f"PractitionerRole/{self.practitioner_role}",
                               "care_unit": self.care_unit, "care_unit_name": self.care_unit_name}
        if self.care_provider:
            out["care_provider"] = self.care_provider
        if self.role:
            out["role"] = self.role
        if self.purpose:
            out["assignment_purpose"] = self.purpose
        return out


@dataclass(frozen=True)
class User:
    """A Practitioner by HSA-id, with the assignments active now."""

    hsa_id: str
    practitioner_id: str
    name: str
    assignments: tuple[Assignment, ...]

    def assignment(self, care_unit: str) -> Assignment | None:
        """The assignment at a care unit (by its HSA-id) or PractitionerRole id."""
        return next((a for a in self.assignments if care_unit in (a.care_unit, a.practitioner_role)), None)

    def claims(self, assignment: Assignment) -> dict[str, Any]:
        """Access-token claims: who the user is and which assignment they act under."""
        return {"sub": self.hsa_id, "user_hsa_id": self.hsa_id, "user_name": self.name,
                "fhirUser": f"Practitioner/{self.practitioner_id}", **assignment.claims()}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def set_password(repo: Repository, hsa_id: str, password: str) -> None:
    """Create the login for a user, or replace its password (and enable it)."""
    if not password or len(password) > MAX_PASSWORD:
        raise ValueError(f"the password must be 1 to {MAX_PASSWORD} characters")
    digest = hash_password(password)
    with repo.transaction() as uow:
        uow.execute("INSERT INTO auth_users (hsa_id, password_hash, created, disabled) VALUES (?, ?, ?, NULL)"
                    " ON CONFLICT (hsa_id) DO UPDATE SET password_hash = excluded.password_hash, disabled = NULL",
                    (hsa_id, digest, now()))


def disable(repo: Repository, hsa_id: str) -> bool:
    with repo.transaction() as uow:
        rows = uow.execute("UPDATE auth_users SET disabled = COALESCE(disabled, ?) WHERE hsa_id = ? RETURNING hsa_id",
                           (now(), hsa_id))
    return bool(rows)


def list_logins(repo: Repository) -> list[tuple[str, bool]]:
    """(HSA-id, enabled) of every login."""
    return [(str(h), d is None) for h, d in repo.fetch("SELECT hsa_id, disabled FROM auth_users ORDER BY hsa_id", ())]


def check_password(repo: Repository, hsa_id: str, password: str) -> bool:
    """True when the login exists, is enabled and the password matches (argon2 verify)."""
    rows = repo.fetch("SELECT password_hash, disabled FROM auth_users WHERE hsa_id = ?", (hsa_id,))
    stored = rows[0][0] if rows and rows[0][1] is None else _DUMMY_HASH
    try:
        ok = _HASHER.verify(stored, password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        return False
    if ok and rows and rows[0][1] is None and _HASHER.check_needs_rehash(stored):
        set_password(repo, hsa_id, password)
    return ok and bool(rows) and rows[0][1] is None


def login_enabled(repo: Repository, hsa_id: str) -> bool:
    rows = repo.fetch("SELECT disabled FROM auth_users WHERE hsa_id = ?", (hsa_id,))
    return bool(rows) and rows[0][0] is None


def _resource(repo: Repository, type_: str, id_: str) -> dict[str, Any] | None:
    v = repo.read(type_, id_)
    if v is None or v.data is None:
        return None
    body = json.loads(v.data)
    return body if isinstance(body, dict) else None


def search_ids(repo: Repository, type_: str, pairs: list[tuple[str, str]], limit: int) -> list[str]:
    registry = Registry.default()
    return matching_ids(repo, registry, parse(registry, type_, pairs), limit)


def _hsa_of(resource: dict[str, Any] | None) -> str | None:
    for ident in (resource or {}).get("identifier", []):
        if isinstance(ident, dict) and ident.get("system") in HSA_ID_ALIASES and isinstance(ident.get("value"), str):
            return str(ident["value"])
    return None


def _ref_id(ref: Any, type_: str) -> str | None:
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    head, _, id_ = ref["reference"].rpartition("/")
    return id_ if head.endswith(type_) and id_ else None


def _display_name(practitioner: dict[str, Any], fallback: str) -> str:
    for name in practitioner.get("name", []):
        if not isinstance(name, dict):
            continue
        if isinstance(name.get("text"), str):
            return str(name["text"])
        parts = [*[g for g in name.get("given", []) if isinstance(g, str)], name.get("family")]
        text = " ".join(p for p in parts if isinstance(p, str) and p)
        if text:
            return text
    return fallback


def _active(resource: dict[str, Any], today: str) -> bool:
    if resource.get("active") is False:
        return False
    period = resource.get("period")
    if isinstance(period, dict):
        start, end = period.get("start"), period.get("end")
        if isinstance(start, str) and start[:10] > today:
            return False
        if isinstance(end, str) and end[:10] < today:
            return False
    return True


def _assignment(repo: Repository, role: dict[str, Any], today: str) -> Assignment | None:
    if not _active(role, today):
        return None
    unit_id = _ref_id(role.get("organization"), "Organization")
    unit = _resource(repo, "Organization", unit_id) if unit_id else None
    unit_hsa = _hsa_of(unit)
    if unit is None or unit_hsa is None or unit.get("active") is False:
        return None
    provider_id = _ref_id(unit.get("partOf"), "Organization")
    provider_hsa = _hsa_of(_resource(repo, "Organization", provider_id)) if provider_id else None
    purpose = None
    for ext in role.get("extension", []):
        if isinstance(ext, dict) and ext.get("url") == ASSIGNMENT_PURPOSE_EXTENSION:
            coding = ext.get("valueCoding")
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                purpose = str(coding["code"])
    role_text = None
    for code in role.get("code", []):
        if not isinstance(code, dict):
            continue
        codings = [c for c in code.get("coding", []) if isinstance(c, dict)]
        if any(c.get("system") == ASSIGNMENT_PURPOSE_SYSTEM for c in codings):
            continue
        role_text = code.get("text") or next((c.get("display") or c.get("code") for c in codings), None)
        if role_text:
            break
    return Assignment(str(role["id"]), unit_hsa, str(unit.get("name") or unit_hsa), provider_hsa,
                      str(role_text) if role_text else None, purpose)


def lookup(repo: Repository, hsa_id: str) -> User | None:
    """The active Practitioner with this HSA-id and its active assignments; None when there is none."""
    if not hsa_id or len(hsa_id) > 64 or "|" in hsa_id or "," in hsa_id:
        return None
    ids = search_ids(repo, "Practitioner", [("identifier", f"{HSA_ID}|{hsa_id}")], 2)
    practitioner = _resource(repo, "Practitioner", ids[0]) if len(ids) == 1 else None
    if practitioner is None or practitioner.get("active") is False:
        return None
    today = datetime.now(UTC).date().isoformat()
    role_ids = search_ids(repo, "PractitionerRole", [("practitioner", f"Practitioner/{practitioner['id']}")], 100)
    assignments = []
    for rid in role_ids:
        role = _resource(repo, "PractitionerRole", rid)
        a = _assignment(repo, role, today) if role is not None else None
        if a is not None:
            assignments.append(a)
    assignments.sort(key=lambda a: (a.care_unit_name, a.practitioner_role))
    return User(hsa_id, str(practitioner["id"]), _display_name(practitioner, hsa_id), tuple(assignments))
