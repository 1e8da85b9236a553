"""SMART scopes v2 and v1 as a permission model: https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html

`patient/Observation.rs`, `user/*.cruds`, `system/Appointment.cu` (v2) and `patient/*.read`,
`user/Observation.write`, `system/*.*` (v1) become `Grant`s. A v2 scope with search parameters
(`...rs?category=...`) is not granted: this server cannot yet narrow access by them, and granting the
unnarrowed scope would give more than was asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PERMS = "cruds"  # create, read, update, delete, search: the order v2 requires
CONTEXTS = ("patient", "user", "system")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^(patient|user|system)/([A-Z][A-Za-z]*|\*)\.([a-z*]+)(\?.*)?$")
# scopes that are not about resources; accepted and passed through when registered
OTHER = frozenset({"openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
                   "offline_access", "online_access"})
ADMIN = "admin"  # the local administrator's scope (only `samverka admin token` mints it)


class ScopeError(ValueError):
    """A scope string that is neither a SMART resource scope nor a known non-resource scope."""


@dataclass(frozen=True, slots=True)
class Grant:
    """One resource scope: a context (patient | user | system), a type or `*`, and permission letters."""

    context: str
    type: str
    perms: frozenset[str]

    def covers(self, perm: str, type_: str) -> bool:
        return perm in self.perms and self.type in ("*", type_)

    def text(self) -> str:
        return f"{self.context}/{self.type}.{''.join(p for p in PERMS if p in self.perms)}"


def parse_one(scope: str) -> Grant | None:
    """A Grant, None for a non-resource or query-narrowed scope; ScopeError when malformed."""
    if scope in OTHER or scope == ADMIN:
        return None
    m = _SCOPE.match(scope)
    if m is None:
        raise ScopeError(f"not a SMART scope: {scope!r}")
    context, type_, perms, narrowed = m.groups()
    letters = _V1.get(perms)
    if letters is None:
        if any(p not in PERMS for p in perms) or "".join(p for p in PERMS if p in perms) != perms:
            raise ScopeError(f"{scope!r}: permissions must be some of c, r, u, d, s in that order, or read/write/*")
        letters = perms
    elif narrowed:
        raise ScopeError(f"{scope!r}: v1 scopes take no search parameters")
    if narrowed:
        return None
    return Grant(context, type_, frozenset(letters))


def parse(scopes: str) -> list[Grant]:
    """Every resource Grant in a space-separated scope string (ScopeError on a malformed scope)."""
    out = []
    for s in scopes.split():
        g = parse_one(s)
        if g is not None:
            out.append(g)
    return out


def check(scopes: str) -> None:
    """Raise ScopeError unless every scope is understood; `admin` is never a client's scope."""
    for s in scopes.split():
        if s == ADMIN:
            raise ScopeError("the admin scope cannot be registered or requested")
        parse_one(s)


def intersect(requested: str, allowed: str) -> str:
    """The scopes to grant: what was requested, narrowed to what the client is registered for.

    https://hl7.org/fhir/smart-app-launch/backend-services.html#scopes
    """
    allowed_set = set(allowed.split())
    reg = parse(allowed)
    out: list[str] = []
    for s in requested.split():
        if s == ADMIN:
            continue
        g = parse_one(s)
        if g is None:
            if s in OTHER and s in allowed_set:
                out.append(s)
            continue
        for r in reg:
            if r.context != g.context or not (r.type == "*" or g.type in ("*", r.type)):
                continue
            perms = g.perms & r.perms
            if perms:
                text = Grant(g.context, r.type if g.type == "*" else g.type, frozenset(perms)).text()
                if text not in out:
                    out.append(text)
    return " ".join(out)
