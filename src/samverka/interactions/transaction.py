"""transaction: all or nothing, https://hl7.org/fhir/R4/http.html#transaction

The work is split so that the database lock is held as briefly as possible:
1. Outside the lock: parse every entry, validate every resource, assign ids, resolve `urn:uuid`
   fullUrls, and extract index rows (assuming conditional creates will create).
2. Inside one unit of work, in the spec's order (DELETE, POST, PUT/PATCH, GET): match
   conditional criteria, resolve conditional references (`Patient?identifier=...`), re-extract only
   the resources those changed, and write. Any failure rolls everything back and the client gets the
   failing entry's OperationOutcome.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer
import orjson

from ..errors import Category, FhirError, invalid, not_found, unprocessable
from ..fhir.definitions import resource_types
from ..store import UnitOfWork, Version
from .bundles import new_bundle
from .conditional import matches
from .context import Result, Services
from .entries import ORDER, Entry, check_bundle, parse_entry, rewrite_references
from .writes import (
    Prepared,
    check_body,
    check_id,
    check_if_match,
    commit,
    commit_delete,
    etag,
    new_id,
    prepare,
    stamp_us,
    validate,
)


def transaction(svc: Services, base: str, body: Any, return_resources: bool = False) -> Result:
    _kind, raw_entries = check_bundle(body, svc.settings.max_bundle_entries)
    entries = [parse_entry(i, raw) for i, raw in enumerate(raw_entries)]
    ids: dict[str, str] = {}  # fullUrl -> Type/id, for every entry that creates or updates
    seen: set[tuple[str, str]] = set()
    for e in entries:
        _check_target(e)
        if e.method in ("POST", "PUT"):
            assert e.type is not None and e.resource is not None
            check_body(e.resource, e.type, f"{e.expr}.resource.")
            validate(svc, e.resource, f"{e.expr}.resource.")
            if e.method == "POST":
                e.id = new_id()
            elif e.query is None:
                assert e.id is not None
                check_id(e.id, f"{e.expr}.request.url")
                if e.resource.get("id") != e.id:
                    raise invalid(f"{e.expr}: the resource id {e.resource.get('id')!r} does not match the "
                                  f"request URL {e.url}", f"{e.expr}.resource.id")
            if e.id is not None:
                if (e.type, e.id) in seen:
                    raise invalid(f"{e.expr}: {e.type}/{e.id} appears twice in the transaction", e.expr)
                seen.add((e.type, e.id))
                if e.full_url:
                    ids[e.full_url] = f"{e.type}/{e.id}"
    for e in entries:
        if e.resource is not None and e.method in ("POST", "PUT"):
            e.resource, e.unresolved = rewrite_references(e.resource, ids.get)
            if e.id is not None:
                e.prepared = _prepare(svc, e)
    results: dict[int, dict[str, Any]] = {}
    written: dict[int, Version] = {}
    with svc.repo.transaction() as uow:
        ts = stamp_us()
        ordered = sorted(entries, key=lambda x: ORDER[x.method])
        deletes = [e for e in ordered if e.method == "DELETE"]
        # DELETEs come first (http.html#trules): the conditionals matched next must not see what they delete
        for e in deletes:
            try:
                results[e.index], _v = _apply(svc, uow, e, ids, False, ts)
            except FhirError as exc:
                raise _in_entry(exc, e) from exc
        changed = _resolve_conditionals(svc, uow, entries, ids)
        for e in ordered:
            if e.method in ("GET", "HEAD", "DELETE"):
                continue
            try:
                results[e.index], v = _apply(svc, uow, e, ids, changed, ts)
            except FhirError as exc:
                raise _in_entry(exc, e) from exc
            if v is not None:
                written[e.index] = v
    bundle = new_bundle("transaction-response")
    out = []
    for e in entries:
        if e.method in ("GET", "HEAD"):
            out.append(_get(svc, base, e))
            continue
        entry: dict[str, Any] = {"response": results[e.index]}
        v = written.get(e.index)
        if return_resources and v is not None and v.data is not None:
            entry["resource"] = orjson.Fragment(v.data)
        if v is not None:
            entry["fullUrl"] = f"{base}/{v.type}/{v.id}"
        out.append(entry)
    bundle["entry"] = out
    return Result(200, resource=bundle)


def _check_target(e: Entry) -> None:
    if e.type is None or e.type not in resource_types():
        raise invalid(f"{e.expr}.request.url {e.url!r} does not name a resource type", f"{e.expr}.request.url")
    if e.method in ("PUT", "DELETE", "PATCH") and e.id is None and e.query is None:
        raise invalid(f"{e.expr}: {e.method} needs Type/id or Type?criteria", f"{e.expr}.request.url")


def _resolve_conditionals(svc: Services, uow: UnitOfWork, entries: list[Entry], ids: dict[str, str]) -> bool:
    """Match conditional creates/updates and conditional references; True when ids changed."""
    changed = False
    for e in entries:
        assert e.type is not None
        if e.method == "POST" and e.request.get("ifNoneExist"):
            found = matches(svc, uow, e.type, e.request["ifNoneExist"], f"{e.expr}.request.ifNoneExist")
            if len(found) > 1:
                raise _in_entry(FhirError.of(Category.PRECONDITION, "ifNoneExist matched more than one "
                                             f"{e.type}"), e)
            if found:
                if e.id is not None:  # references were already rewritten to the provisional id
                    ids[f"{e.type}/{e.id}"] = f"{e.type}/{found[0]}"
                e.id, e.prepared, e.resource = found[0], None, None  # nothing to create
                if e.full_url:
                    ids[e.full_url] = f"{e.type}/{found[0]}"
                changed = True
        elif e.method == "PUT" and e.query is not None:
            found = matches(svc, uow, e.type, e.query, f"{e.expr}.request.url")
            if len(found) > 1:
                raise _in_entry(FhirError.of(Category.PRECONDITION, f"the criteria match more than one {e.type}"), e)
            e.id = found[0] if found else (e.resource or {}).get("id") or new_id()
            if e.full_url:
                ids[e.full_url] = f"{e.type}/{e.id}"
            changed = True
    refs: dict[str, str] = {}
    for e in entries:
        for ref in e.unresolved:
            if ref in ids or ref in refs or "?" not in ref:
                continue
            rtype, _, criteria = ref.partition("?")
            found = matches(svc, uow, rtype, criteria, f"{e.expr}.resource (reference {ref})")
            if len(found) != 1:
                raise _in_entry(FhirError.of(Category.PRECONDITION, f"the conditional reference {ref} matches "
                                             f"{len(found)} resources; it must match exactly one"), e)
            refs[ref] = f"{rtype}/{found[0]}"
            changed = True
    if changed:
        ids.update(refs)
        for e in entries:
            if e.resource is not None and e.method in ("POST", "PUT"):
                e.resource, _pending = rewrite_references(e.resource, ids.get)
                e.prepared = None  # re-extract below, with the final references
    for e in entries:
        if e.resource is not None and e.method in ("POST", "PUT") and e.prepared is None:
            e.prepared = _prepare(svc, e)
    return changed


def _apply(svc: Services, uow: UnitOfWork, e: Entry, ids: dict[str, str], changed: bool,
           ts: int) -> tuple[dict[str, Any], Version | None]:
    assert e.type is not None
    if e.method == "POST" and e.prepared is None:  # ifNoneExist matched an existing resource
        assert e.id is not None
        existing = uow.read(e.type, e.id)
        assert existing is not None
        return {"status": "200 OK", "location": f"{e.type}/{e.id}/_history/{existing.version}",
                "etag": etag(existing.version), "lastModified": existing.last_updated}, existing
    if e.method == "DELETE":
        targets = [e.id] if e.query is None else matches(svc, uow, e.type, e.query, f"{e.expr}.request.url")
        if len(targets) > 1:
            raise FhirError.of(Category.PRECONDITION, f"the criteria match more than one {e.type}")
        for id_ in targets:
            assert id_ is not None
            current = uow.current(e.type, id_)
            if current is not None and not current.deleted:
                check_if_match(current, e.request.get("ifMatch"), e.type, id_)
                commit_delete(uow, e.type, id_, current, ts, svc)
        return {"status": "204 No Content"}, None
    if e.method == "PATCH":
        return _patch(svc, uow, e, ts)
    assert e.prepared is not None and e.id is not None
    if e.method == "PUT" and e.query is not None:
        # POSTs run before PUTs: if one of them created a resource these criteria now match, the
        # match decided before the writes is stale, and the spec lets the transaction fail.
        found = matches(svc, uow, e.type, e.query, f"{e.expr}.request.url")
        if found and found != [e.id]:
            raise FhirError.of(Category.PRECONDITION, f"the criteria {e.query} also match a {e.type} created "
                               "earlier in this transaction")
    current = uow.current(e.type, e.id)
    check_if_match(current, e.request.get("ifMatch"), e.type, e.id)
    if e.request.get("ifNoneMatch") is not None and current is not None and not current.deleted:
        raise FhirError.of(Category.PRECONDITION, f"{e.type}/{e.id} exists (ifNoneMatch)")
    v = commit(uow, svc, e.prepared, current, e.method, ts)
    created = current is None or current.deleted
    return {"status": "201 Created" if created else "200 OK", "location": f"{e.type}/{e.id}/_history/{v.version}",
            "etag": etag(v.version), "lastModified": v.last_updated}, v


def _patch(svc: Services, uow: UnitOfWork, e: Entry, ts: int) -> tuple[dict[str, Any], Version]:
    assert e.type is not None
    id_ = e.id
    if id_ is None:
        found = matches(svc, uow, e.type, e.query or "", f"{e.expr}.request.url")
        if len(found) != 1:
            raise FhirError.of(Category.PRECONDITION, f"the criteria match {len(found)} resources")
        id_ = found[0]
    current = uow.current(e.type, id_)
    stored = uow.read(e.type, id_)
    if current is None or current.deleted or stored is None or stored.data is None:
        raise not_found(f"{e.type}/{id_} is not known")
    check_if_match(current, e.request.get("ifMatch"), e.type, id_)
    try:
        resource = jsonpatch.JsonPatch(e.patch or []).apply(orjson.loads(stored.data))
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise unprocessable(f"the patch cannot be applied to {e.type}/{id_}: {exc}") from exc
    if resource.get("resourceType") != e.type or resource.get("id") != id_:
        raise unprocessable("a patch may not change the resourceType or id")
    validate(svc, resource, f"{e.expr}.resource.")
    v = commit(uow, svc, prepare(svc, resource, id_), current, "PATCH", ts)
    return {"status": "200 OK", "location": f"{e.type}/{id_}/_history/{v.version}", "etag": etag(v.version),
            "lastModified": v.last_updated}, v


def _get(svc: Services, base: str, e: Entry) -> dict[str, Any]:
    from .batch import run_get

    return run_get(svc, base, e)


def _prepare(svc: Services, e: Entry) -> Prepared:
    """`writes.prepare` of an entry's resource; a refusal (a user's write under Patientdatalagen) names the entry."""
    assert e.resource is not None and e.id is not None
    try:
        return prepare(svc, e.resource, e.id)
    except FhirError as exc:
        if exc.category != Category.FORBIDDEN:
            raise
        issues = [type(i)(i.severity, i.code, i.diagnostics,
                          i.expression and f"{e.expr}.resource.{i.expression.partition('.')[2]}".rstrip("."))
                  for i in exc.issues]
        raise _in_entry(FhirError(exc.category, issues, exc.headers), e) from exc


def _in_entry(exc: FhirError, e: Entry) -> FhirError:
    """Point the failing entry's issues at the entry, so the client knows which one failed."""
    issues = [type(i)(i.severity, i.code, i.diagnostics if i.diagnostics.startswith("Bundle.entry")
                      else f"{e.expr} ({e.method} {e.url}): {i.diagnostics}", i.expression or e.expr)
              for i in exc.issues]
    return FhirError(exc.category, issues, exc.headers)
