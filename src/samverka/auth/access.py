"""What one request may do: the access context built from its token, checked in one place.

https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html. `required` maps a FHIR REST
request to the permission letter it needs (c, r, u, d, s) on a resource type. Searches are narrowed
inside the query by `search_filters` (conditions on the resources row `r` that `search.plan.build`
and `search.include.resolve` apply), so `_include`, `_revinclude` and `_total` see only what the
token allows. `patient/` grants need a patient context in the token and reach that patient's
compartment only; `user/` and `system/` grants reach every resource of their types.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..errors import Category, FhirError, Issue, to_outcome
from ..interactions import batch
from ..interactions.context import Result, Services
from . import pdl, pdl_cache, pdl_writes, scopes

Filter = tuple[str, Sequence[Any]]
PUBLIC = "public"


@dataclass(frozen=True)
class Need:
    """A permission letter on a type (`*`: on every type), or PUBLIC; `id` when one instance is named."""

    perm: str
    type: str
    id: str | None = None
    kind: str = ""  # "history" for a history interaction (PDL refuses it across patients)


def forbidden(message: str, expression: str | None = None) -> FhirError:
    return FhirError(Category.FORBIDDEN, [Issue("error", "forbidden", message, expression)])


def unauthorized(message: str, error: str | None = "invalid_token") -> FhirError:
    """401 with `WWW-Authenticate: Bearer` (RFC 6750 §3; no error code when no token was sent)."""
    challenge = 'Bearer realm="samverka"'
    if error:
        challenge += f', error="{error}", error_description="{message}"'
    return FhirError(Category.UNAUTHORIZED, [Issue("error", "login", message)], {"WWW-Authenticate": challenge})


def required(method: str, parts: Sequence[str]) -> Need | None:
    """The permission a FHIR REST request needs; None for a Bundle POST (its entries are checked)."""
    n = len(parts)
    read_like = method in ("GET", "HEAD")
    if n == 0:
        return None if method == "POST" else Need("s", "*")
    head = parts[0]
    if head == "metadata" or (n in (2, 3) and parts[-1] == "$validate"):
        return Need(PUBLIC, "*")
    if parts[-1] == "$export":  # Bulk Data kick-off: each exported type is checked by the handler
        return Need("s", "*") if n == 1 else Need("s", head) if n == 2 else Need("r", head, parts[1])
    if head in ("$export-status", "$export-file"):  # the job's own client (and user) only: the handler checks
        return Need("s", "*")
    if head in ("$reindex", "$reindex-status") or (n == 3 and parts[2] == "$reindex"):
        return Need("r" if head == "$reindex-status" else "u", "SearchParameter")
    if head == "_history":
        return Need("r", "*", kind="history")
    if n == 1:
        return Need({"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}.get(method, "s"), head)
    if n == 2 and parts[1] == "_search":
        return Need("s", head)
    if n == 2 and parts[1] == "_history":
        return Need("r", head, kind="history")
    if n == 2:
        return Need({"PUT": "u", "PATCH": "u", "DELETE": "d"}.get(method, "r"), head, parts[1])
    if n == 3 and parts[2] == "_history":
        return Need("r", head, parts[1], "history")
    if n == 3 and head == "Subscription" and parts[2] in ("$status", "$events",  # samverka.events
                                                          "$get-ws-binding-token"):
        return Need("r", head, parts[1])
    if n == 3 and read_like:  # a compartment search: Patient/123/Observation
        return Need("s", parts[2])
    if n == 4 and parts[2] == "_history":
        return Need("r", head, parts[1])
    return Need("r", head)  # anything else still needs a token; the router answers what it is


@dataclass
class Access:
    """The verified token of one request and the grants it carries.

    A user's token (authorization code or a trusted issuer's JWT-bearer grant, `auth.grants`) also
    names the user and the one assignment (medarbetaruppdrag) they act under; a backend service's
    token leaves these None.
    """

    client_id: str
    scope: str
    grants: list[scopes.Grant]
    patient: str | None = None
    encounter: str | None = None
    user_hsa_id: str | None = None  # the Practitioner's HSA-id
    user_name: str | None = None
    fhir_user: str | None = None  # "Practitioner/{id}"
    practitioner_role: str | None = None  # "PractitionerRole/{id}": the assignment
    role: str | None = None  # the role or profession under the assignment
    care_unit: str | None = None  # the care unit's HSA-id (vårdenhet)
    care_unit_name: str | None = None
    care_provider: str | None = None  # the care provider's HSA-id (vårdgivare)
    assignment_purpose: str | None = None  # code from sweden.codes.ASSIGNMENT_PURPOSE_SYSTEM
    policy: pdl.Policy | None = None  # a user's Patientdatalagen policy, per request by `attach_pdl` (cached)
    emergency_patients: frozenset[str] = frozenset()  # under emergency access: audited with ETREAT
    pdl_marker: int | None = None  # the PDL change marker read with the token's revocation check
    write_mark: int | None = None  # the store's last history seq, read with it (auth.store.token_state)

    @property
    def is_user(self) -> bool:
        return self.user_hsa_id is not None

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Access:
        scope = str(claims.get("scope", ""))
        grants = list(_grants(scope))

        def text(name: str) -> str | None:
            value = claims.get(name)
            return value if isinstance(value, str) and value else None

        return cls(str(claims["client_id"]), scope, grants, text("patient"), text("encounter"), text("user_hsa_id"),
                   text("user_name"), text("fhirUser"), text("practitioner_role"), text("role"), text("care_unit"),
                   text("care_unit_name"), text("care_provider"), text("assignment_purpose"))

    def _reach(self, perm: str, type_: str) -> str | None:
        """"all" when a user/system grant covers it, "patient" when only patient grants do, else None."""
        found = None
        for g in self.grants:
            if not g.covers(perm, type_) and not (type_ == "*" and perm in g.perms):
                continue
            if g.context != "patient":
                if type_ != "*" or g.type == "*":
                    return "all"
            elif self.patient is not None:
                found = "patient"
        return found

    def attach_pdl(self, svc: Services) -> None:
        """A user's token is subject to Patientdatalagen: build this request's policy (auth.pdl)."""
        if self.is_user:
            self.policy = pdl_cache.policy(svc.repo, svc.searchable(), self, svc.settings.care_relationship_days)
            self.emergency_patients = self.policy.emergency

    def require(self, need: Need, repo: Any = None, expression: str | None = None) -> None:
        """Raise 403 unless the grants allow `need` (checking a named instance's compartment), and, for a
        user, unless Patientdatalagen allows it (`auth.pdl`)."""
        if need.perm == PUBLIC:
            return
        self._require_scope(need, repo, expression)
        if self.policy is None:
            return
        if need.kind == "history" and need.id is None and (need.type == "*" or need.type in pdl.patient_types()):
            raise pdl.denied("PDL: history across patients is not available to users; read the history of one "
                             "resource instead", expression)
        if need.id is not None and repo is not None:
            self.policy.check(repo, need.type, need.id, expression, self.write_mark)

    def _require_scope(self, need: Need, repo: Any, expression: str | None) -> None:
        if need.type == "*":
            if need.perm == "s" and any(need.perm in g.perms for g in self.grants):
                return  # a system-level search is narrowed by search_filters
            if self._reach(need.perm, "*") != "all":
                raise forbidden(f"the token's scopes do not allow '{need.perm}' on every resource type", expression)
            return
        reach = self._reach(need.perm, need.type)
        if reach is None:
            raise forbidden(f"the token's scopes ({self.scope or 'none'}) do not allow '{need.perm}' on {need.type}",
                            expression)
        if reach == "patient":
            if need.perm == "s":
                return  # narrowed to the compartment by search_filters
            if need.perm != "r" or need.id is None or repo is None:
                raise forbidden(f"patient/ scopes allow only reads and searches of {self.patient}'s compartment",
                                expression)
            rows = repo.fetch("SELECT compartment FROM resources WHERE type = ? AND id = ?", (need.type, need.id))
            if rows and rows[0][0] != self.patient:
                raise forbidden(f"{need.type}/{need.id} is outside the patient compartment of this token", expression)

    def search_filters(self, portable: bool = False) -> tuple[Filter, ...]:
        """Conditions on `r`: what the scopes allow, and what Patientdatalagen allows a user (auth.pdl).
        `portable`: conditions that stay valid outside this request and process (a Bulk Data job's)."""
        own = self._scope_filters()
        if self.policy is None:
            return own
        return (*own, self.policy.portable_search_filter() if portable else self.policy.search_filter())

    def _scope_filters(self) -> tuple[Filter, ...]:
        """One condition on `r`: the types this token may search (and, for patient grants, the compartment)."""
        all_types: set[str] = set()
        patient_types: set[str] = set()
        for g in self.grants:
            if "s" not in g.perms:
                continue
            if g.context != "patient":
                if g.type == "*":
                    return ()
                all_types.add(g.type)
            elif self.patient is not None:
                patient_types.add(g.type)
        parts: list[str] = []
        params: list[Any] = []
        if all_types:
            parts.append(f"r.type IN ({', '.join('?' for _ in all_types)})")
            params += sorted(all_types)
        patient_types -= all_types
        if patient_types:
            if "*" in patient_types:
                parts.append("r.compartment = ?")
            else:
                parts.append(f"(r.type IN ({', '.join('?' for _ in patient_types)}) AND r.compartment = ?)")
                params += sorted(patient_types)
            params.append(self.patient)
        if not parts:
            return (("1 = 0", ()),)
        return (("(" + " OR ".join(parts) + ")", tuple(params)),)

    def services(self, svc: Services) -> Services:
        """The request's view of the services: every search it runs carries this token's filters."""
        filters = self.search_filters()
        changes: dict[str, Any] = {"access_filters": filters} if filters else {}
        if self.policy is not None:
            if self.care_unit:
                changes["recorded_by"] = (self.care_unit, self.care_provider)
            changes["write_check"] = functools.partial(pdl_writes.check_write, self.policy)
            withheld = self.policy.withheld_filter()
            if withheld is not None:
                changes["withheld_filters"] = (*self._scope_filters(), withheld)
        return dataclasses.replace(svc, **changes) if changes else svc  # one copy of the services per request

    def check_search(self, pairs: Sequence[tuple[str, str]]) -> None:
        """`_has` and typed chains reach into other types: they need search permission there too."""
        for name, _value in pairs:
            if name.startswith("_has:"):
                bits = name.split(":")
                if len(bits) > 1:
                    self.require(Need("s", bits[1]), expression=name)
            for link in name.split(".")[:-1]:
                if ":" in link and link.split(":")[-1][:1].isupper():
                    self.require(Need("s", link.split(":")[-1]), expression=name)

    def entry_need(self, i: int, raw: Any) -> tuple[Need | None, list[tuple[str, str]]]:
        request = raw.get("request") if isinstance(raw, dict) else None
        if not isinstance(request, dict):
            return None, []  # malformed: the handler reports it
        url = str(request.get("url", ""))
        split = urlsplit(url)
        path = split.path
        if "/fhir/" in path:
            path = path.split("/fhir/", 1)[1]
        parts = [p for p in path.split("/") if p]
        if not parts:
            return Need("r", "*"), []
        return required(str(request.get("method", "GET")).upper(), parts), parse_qsl(split.query)

    def check_entry(self, i: int, raw: Any, repo: Any) -> None:
        need, pairs = self.entry_need(i, raw)
        if need is None:
            return
        self.require(need, repo, f"Bundle.entry[{i}]")
        if need.perm == "s":
            self.check_search(pairs)

    def check_transaction(self, body: Any, repo: Any) -> None:
        """Every entry of a transaction must be allowed, or none runs (403)."""
        for i, raw in enumerate(_entries(body)):
            self.check_entry(i, raw, repo)

    def run_batch(self, svc: Services, base: str, body: Any, representation: bool) -> Result:
        """A batch: forbidden entries answer 403 in place; the others run as usual."""
        entries = _entries(body)
        denied: dict[int, FhirError] = {}
        for i, raw in enumerate(entries):
            try:
                self.check_entry(i, raw, svc.repo)
            except FhirError as exc:
                denied[i] = exc
        if not denied:
            return batch.batch(svc, base, body, representation)
        kept = [raw for i, raw in enumerate(entries) if i not in denied]
        result = batch.batch(svc, base, {**body, "entry": kept}, representation)
        assert result.resource is not None
        answered = iter(result.resource.get("entry", []))
        merged = []
        for i in range(len(entries)):
            if i in denied:
                status, outcome = to_outcome(denied[i])
                merged.append({"response": {"status": f"{status} Forbidden", "outcome": outcome}})
            else:
                merged.append(next(answered))
        result.resource["entry"] = merged
        return result


@functools.lru_cache(maxsize=1024)
def _grants(scope: str) -> tuple[scopes.Grant, ...]:
    """A token's grants, parsed once per scope string (Grants are frozen); none for a malformed scope."""
    try:
        return tuple(scopes.parse(scope))
    except scopes.ScopeError:
        return ()


def _entries(body: Any) -> list[Any]:
    entries = body.get("entry") if isinstance(body, dict) else None
    return entries if isinstance(entries, list) else []
