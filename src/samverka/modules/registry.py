"""The module registry: register, list, show, disable, enable and replace modules.

A module is a SMART backend-services client (`auth.clients`) with exactly its manifest's scopes, plus
one backport Subscription per declared subscription (`modules.subscriptions`). Each operation changes
the registry, the client's state and the Subscription resources in one transaction, together with its
AuditEvents (the Subscription writes through the audited write path, the action itself as a
`module-*` record). Only registering a client is a transaction of its own (`auth.clients.register`);
if what follows fails, that client is revoked again.

States: `active` (holds its role; subscriptions requested/active), `standby` (registered while another
module held the role: client ready, no subscriptions until `replace` hands it the role), `disabled`
(client disabled, subscriptions off) and `replaced` (client revoked, subscriptions off; final).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..audit import Auditor
from ..audit import chain as audit_chain
from ..audit.model import Who
from ..auth import clients
from ..auth import store as auth_store
from ..auth.store import Client
from ..errors import Category, FhirError, Issue, invalid, not_found
from ..interactions.context import Services
from ..store import UnitOfWork
from . import records, subscriptions
from . import store as mstore
from .manifest import Manifest, ManifestError, validate
from .store import ACTIVE, DISABLED, REPLACED, STANDBY, ModuleRow, SubscriptionRow


def manifest_error(exc: ManifestError) -> FhirError:
    """A 400 OperationOutcome with one issue per problem, its expression the manifest key at fault."""
    return FhirError(Category.INVALID, [Issue("error", "invalid", f"{k}: {m}" if k else m, k or None)
                                        for k, m in exc.problems])


def _conflict(message: str) -> FhirError:
    return FhirError.of(Category.CONFLICT, message, code="conflict")


_AUDITORS: dict[int, Auditor] = {}  # one per repository (a process has one or two)


@contextmanager
def _audited(svc: Services, who: Who, client: Client | None = None) -> Iterator[tuple[Services, UnitOfWork]]:
    """One transaction whose resource writes are audited like any API write and append their outbox
    events; Subscriptions it creates belong to `client`."""
    auditor = _AUDITORS.get(id(svc.repo))
    if auditor is None or auditor.repo is not svc.repo:
        auditor = _AUDITORS[id(svc.repo)] = Auditor(svc.repo, svc.settings)
    svc = subscriptions.owned(svc, client.client_id if client else None, client.scope if client else "")
    asvc = auditor.services(svc, who)
    with asvc.repo.transaction() as uow:
        yield asvc, uow


def _module(svc: Services, module_id: str) -> ModuleRow:
    row = mstore.get(svc.repo, module_id)
    if row is None:
        raise not_found(f"no module {module_id!r} is registered")
    return row


def register(svc: Services, doc: Any, who: Who) -> dict[str, Any]:
    """Register a module from its manifest document (already parsed from YAML/JSON)."""
    try:
        m = validate(doc)
    except ManifestError as exc:
        raise manifest_error(exc) from exc
    if mstore.get(svc.repo, m.id) is not None:
        raise _duplicate(m.id)
    try:
        client = clients.register(svc.repo, m.client_metadata())
    except clients.OAuthError as exc:
        raise invalid(f"the module's client cannot be registered: {exc}", "jwks") from exc
    try:
        with _audited(svc, who, client) as (asvc, uow):
            if mstore.get(uow, m.id) is not None:  # registered meanwhile (checked again under the write lock)
                raise _duplicate(m.id)
            holder = mstore.role_holder(uow, m.role)
            t = mstore.now()
            state = STANDBY if holder is not None else ACTIVE
            mstore.insert(uow, ModuleRow(m.id, m.role, state, client.client_id, m.raw, t, t, None, None))
            subs = [] if holder is not None else _create_subscriptions(asvc, uow, m, client.client_id, {})
            note = f" (standby: role {m.role} is held by {holder.id})" if holder is not None else ""
            ev = records.module_event(who, "register", m.id, client.client_id, [s.subscription for s in subs],
                                      f"registered module {m.id} ({m.name}, {m.vendor} {m.version}), role "
                                      f"{m.role}, scopes {' '.join(m.scopes)}{note}")
            audit_chain.append(uow, [ev], svc.repo.dialect)
    except BaseException:
        auth_store.revoke_client(svc.repo, client.client_id)
        raise
    return view(svc, m.id)


def _duplicate(module_id: str) -> FhirError:
    return FhirError.of(Category.CONFLICT, f"a module {module_id!r} is already registered (use replace to hand "
                        "its role to a new module)", "id", "duplicate")


def _create_subscriptions(svc: Services, uow: UnitOfWork, m: Manifest, client_id: str,
                          handover: dict[int, dict[str, Any]]) -> list[SubscriptionRow]:
    out = []
    for i, s in enumerate(m.subscriptions):
        h = handover.get(i)
        try:
            sub_id = subscriptions.create(svc, uow, subscriptions.resource(m, s, client_id, h))
        except FhirError as exc:
            raise _in_manifest(exc, i) from exc
        row = SubscriptionRow(m.id, i, sub_id, s.topic, h["predecessor"] if h else None,
                              h.get("after_event") if h else None, h.get("after_seq") if h else None)
        mstore.add_subscription(uow, row)
        out.append(row)
    return out


def _in_manifest(exc: FhirError, i: int) -> FhirError:
    """A refused Subscription (unknown topic, bad filter, ...) reported against the manifest key it came from."""
    def key(expr: str | None) -> str:
        e = expr or ""
        if e.startswith("Subscription.criteria.extension"):
            return f"subscriptions[{i}].filter"
        if e.startswith("Subscription.criteria"):
            return f"subscriptions[{i}].topic"
        if e.startswith("Subscription.channel.payload"):
            return f"subscriptions[{i}].payload"
        if e.startswith("Subscription.channel.endpoint"):
            return "endpoint"
        return f"subscriptions[{i}]"
    issues = [Issue(x.severity, x.code, f"{key(x.expression)}: {x.diagnostics}", key(x.expression))
              for x in exc.issues]
    return FhirError(exc.category, issues, exc.headers)


def disable(svc: Services, module_id: str, who: Who) -> dict[str, Any]:
    """Disable the module's client (no tokens; issued ones refused) and set its subscriptions off."""
    row = _module(svc, module_id)
    if row.state not in (ACTIVE, STANDBY):
        raise _conflict(f"module {module_id} is {row.state}; only an active or standby module can be disabled")
    with _audited(svc, who) as (asvc, uow):
        auth_store.set_client_disabled(uow, row.client_id, True)
        subs = mstore.subscriptions(uow, module_id)
        for s in subs:
            subscriptions.set_status(asvc, uow, s.subscription, "off")
        mstore.set_state(uow, module_id, DISABLED)
        audit_chain.append(uow, [records.module_event(who, "disable", module_id, row.client_id,
                                                      [s.subscription for s in subs],
                                                      f"disabled module {module_id}")], svc.repo.dialect)
    return view(svc, module_id)


def enable_delay(svc: Services, module_id: str) -> float:
    """How long an `enable` of this module should wait first (`auth.store.enable_delay`; 0 when not disabled)."""
    row = _module(svc, module_id)
    return auth_store.enable_delay(svc.repo, row.client_id) if row.state == DISABLED else 0.0


def enable(svc: Services, module_id: str, who: Who) -> dict[str, Any]:
    """Undo `disable`: the client may get tokens again and the subscriptions are requested again,
    resuming from where they were switched off (the events committed meanwhile follow the handshake)."""
    row = _module(svc, module_id)
    if row.state != DISABLED:
        raise _conflict(f"module {module_id} is {row.state}; only a disabled module can be enabled")
    with _audited(svc, who) as (asvc, uow):
        auth_store.set_client_disabled(uow, row.client_id, False)
        subs = mstore.subscriptions(uow, module_id)
        for s in subs:  # each continues where it was switched off: nothing committed meanwhile is lost
            subscriptions.resume(asvc, uow, s.subscription)
        holder = mstore.role_holder(uow, row.role)
        state = ACTIVE if subs or holder is None or holder.id == module_id else STANDBY
        mstore.set_state(uow, module_id, state)
        audit_chain.append(uow, [records.module_event(who, "enable", module_id, row.client_id,
                                                      [s.subscription for s in subs],
                                                      f"enabled module {module_id} ({state})")], svc.repo.dialect)
    return view(svc, module_id)


def _handover(svc: Services, uow: UnitOfWork, new: Manifest, old_subs: list[SubscriptionRow]
              ) -> dict[int, dict[str, Any]]:
    """Match NEW's declared subscriptions to OLD's by topic (the same filter first) and take each OLD
    subscription's last acknowledged event as the point NEW's continues from."""
    old_filters = {s.subscription: _filter_of(svc, s.subscription) for s in old_subs}
    free = list(old_subs)
    out: dict[int, dict[str, Any]] = {}
    for i, s in enumerate(new.subscriptions):
        same = [o for o in free if o.topic == s.topic]
        if not same:
            continue
        pick = next((o for o in same if old_filters[o.subscription] == s.filter), same[0])
        free.remove(pick)
        state = subscriptions.delivery(svc, pick.subscription, uow.fetch)
        out[i] = {"predecessor": pick.subscription, "after_event": _int(state["acknowledgedEvent"]),
                  "after_seq": _int(state["acknowledgedSequence"])}
    return out


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _filter_of(svc: Services, sub_id: str) -> str | None:
    body = subscriptions.read(svc, sub_id) or {}
    for e in body.get("_criteria", {}).get("extension", []):
        if e.get("url") == subscriptions.FILTER:
            return str(e.get("valueString"))
    return None


def replace(svc: Services, old_id: str, new_id: str, who: Who) -> dict[str, Any]:
    """Hand OLD's role to NEW: OLD's client is revoked and its subscriptions set off, then NEW's are
    created to continue after the last event OLD acknowledged. Data OLD wrote stays where it is."""
    old, new = _module(svc, old_id), _module(svc, new_id)
    if old_id == new_id:
        raise invalid("a module cannot replace itself", "new")
    if old.state not in (ACTIVE, DISABLED):
        raise _conflict(f"module {old_id} is {old.state}; only an active or disabled module can be replaced")
    if new.state != STANDBY:
        raise _conflict(f"module {new_id} is {new.state}; the replacement must be registered for role {old.role} "
                        "while it is held (standby)")
    if new.role != old.role:
        raise _conflict(f"module {new_id} has role {new.role}, not {old.role}")
    try:
        manifest = validate(new.manifest)
    except ManifestError as exc:
        raise manifest_error(exc) from exc
    new_client = auth_store.get_client(svc.repo, new.client_id)
    if new_client is None:
        raise _conflict(f"module {new_id}'s client {new.client_id} no longer exists")
    with _audited(svc, who, new_client) as (asvc, uow):
        auth_store.revoke_client_in(uow, old.client_id)
        old_subs = mstore.subscriptions(uow, old_id)
        for s in old_subs:
            subscriptions.set_status(asvc, uow, s.subscription, "off")
        handover = _handover(svc, uow, manifest, old_subs)
        subs = _create_subscriptions(asvc, uow, manifest, new.client_id, handover)
        mstore.set_state(uow, old_id, REPLACED, replaced_by=new_id)
        mstore.set_state(uow, new_id, ACTIVE, replaces=old_id)
        points = {s.subscription: h for s in subs if (h := s.handover()) is not None}
        summary = ", ".join(f"Subscription/{k} after {v['predecessor']} event {v['afterEvent']}"
                            for k, v in points.items()) or "no matching topics: new subscriptions start fresh"
        ev = records.module_event(who, "replace", new_id, new.client_id,
                                  [s.subscription for s in old_subs] + [s.subscription for s in subs],
                                  f"module {new_id} replaces {old_id} in role {old.role}; {old_id}'s client "
                                  f"revoked and subscriptions off; handover: {summary}", points, old.client_id,
                                  old_id)
        audit_chain.append(uow, [ev], svc.repo.dialect)
    return view(svc, new_id)


def view(svc: Services, module_id: str) -> dict[str, Any]:
    """The platform's view of one module: role, state, scopes, subscriptions with delivery figures."""
    row = _module(svc, module_id)
    m = row.manifest
    subs = []
    for s in mstore.subscriptions(svc.repo, module_id):
        body = subscriptions.read(svc, s.subscription) or {}
        payload = next((e.get("valueCode") for e in body.get("channel", {}).get("_payload", {}).get("extension", [])
                        if e.get("url") == subscriptions.PAYLOAD), None)
        subs.append({"id": s.subscription, "topic": s.topic, "filter": _filter_of(svc, s.subscription),
                     "payload": payload, **subscriptions.delivery(svc, s.subscription), "handover": s.handover()})
    lags = [s["lag"] for s in subs if isinstance(s["lag"], int)]
    tried = sum(s["deliveryAttempts"] for s in subs if isinstance(s.get("deliveryAttempts"), int))
    failed = sum(s["failedAttempts"] for s in subs if isinstance(s.get("failedAttempts"), int))
    failures = [s["consecutiveFailures"] for s in subs if isinstance(s.get("consecutiveFailures"), int)]
    last = [str(s["lastDelivery"]) for s in subs if s["lastDelivery"]]
    client = auth_store.get_client(svc.repo, row.client_id)
    client_state = ("revoked" if client is None or client.revoked is not None
                    else "disabled" if auth_store.client_disabled(svc.repo, row.client_id) else "active")
    return {"id": row.id, "name": m.get("name"), "vendor": m.get("vendor"), "version": m.get("version"),
            "role": row.role, "state": row.state, "clientId": row.client_id, "clientState": client_state,
            "scopes": list(m.get("scopes", [])), "profiles": list(m.get("profiles", [])),
            "endpoint": m.get("endpoint"), "replaces": row.replaces, "replacedBy": row.replaced_by,
            "created": row.created, "updated": row.updated, "subscriptions": subs,
            "eventLag": sum(lags) if lags else None, "lastDelivery": max(last) if last else None,
            "errorRate": round(failed / tried, 4) if tried else None,  # failed POSTs / POSTs, recent window
            "deliveryAttempts": tried, "failedAttempts": failed,
            "consecutiveFailures": sum(failures) if failures else None,
            "deliverySource": subs[0]["source"] if subs else None}


def list_modules(svc: Services) -> list[dict[str, Any]]:
    out = []
    for r in mstore.list_all(svc.repo):
        v = view(svc, r.id)
        out.append({"id": r.id, "role": r.role, "state": r.state, "clientId": r.client_id,
                    "name": r.manifest.get("name"), "vendor": r.manifest.get("vendor"),
                    "version": r.manifest.get("version"), "replacedBy": r.replaced_by, "eventLag": v["eventLag"],
                    "lastDelivery": v["lastDelivery"], "errorRate": v["errorRate"]})
    return out


__all__ = ["disable", "enable", "list_modules", "manifest_error", "register", "replace", "view"]
