"""batch: independent entries, each with its own status, https://hl7.org/fhir/R4/http.html#batch"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson

from ..errors import FhirError, invalid, to_outcome
from .bundles import new_bundle
from .context import Result, Services
from .entries import Entry, check_bundle, parse_entry

_REASONS = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified", 400: "Bad Request",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 410: "Gone",
            412: "Precondition Failed", 413: "Payload Too Large", 422: "Unprocessable Entity",
            500: "Internal Server Error", 503: "Service Unavailable"}


def batch(svc: Services, base: str, body: Any, return_resources: bool = False) -> Result:
    _kind, raw_entries = check_bundle(body, svc.settings.max_bundle_entries)
    out = []
    for i, raw in enumerate(raw_entries):
        try:
            entry = parse_entry(i, raw)
            result = run(svc, base, entry)
            out.append(_entry(base, result, return_resources or entry.method == "GET"))
        except FhirError as exc:
            out.append(_error_entry(exc))
    bundle = new_bundle("batch-response")
    bundle["entry"] = out
    return Result(200, resource=bundle)


def run(svc: Services, base: str, e: Entry) -> Result:
    """One entry through the ordinary interaction handlers (each in its own unit of work)."""
    from . import create, delete, history, patch, read, search, update

    if e.type is None:
        raise invalid(f"{e.expr}.request.url {e.url!r} does not name a resource type", f"{e.expr}.request.url")
    r = e.request
    if e.method in ("GET", "HEAD"):
        parts = e.url.partition("?")[0].strip("/").split("/")
        pairs = parse_qsl(e.query or "", keep_blank_values=True)
        if len(parts) == 1:
            return search.search(svc, base, e.type, pairs)
        if parts[-1] == "_history":
            return history.history(svc, base, e.type, e.id if len(parts) == 3 else None, pairs)
        if len(parts) == 4 and parts[2] == "_history":
            return read.vread(svc, e.type, parts[1], parts[3])
        assert e.id is not None
        return read.read(svc, e.type, e.id, r.get("ifNoneMatch"), r.get("ifModifiedSince"))
    if e.method == "POST":
        return create.create(svc, e.type, e.resource, r.get("ifNoneExist"))
    if e.method == "PUT":
        if e.id is None:
            return update.conditional_update(svc, e.type, e.query or "", e.resource, r.get("ifMatch"))
        return update.update(svc, e.type, e.id, e.resource, r.get("ifMatch"))
    if e.method == "DELETE":
        if e.id is None:
            return delete.conditional_delete(svc, e.type, e.query or "")
        return delete.delete(svc, e.type, e.id, r.get("ifMatch"))
    return patch.patch(svc, e.type, e.id, e.patch, r.get("ifMatch"), e.query)


def run_get(svc: Services, base: str, e: Entry) -> dict[str, Any]:
    """A GET entry of a transaction (response and resource), answered after the writes; failures do not undo them."""
    try:
        return _entry(base, run(svc, base, e), True)
    except FhirError as exc:
        return _error_entry(exc)


def _status(code: int) -> str:
    return f"{code} {_REASONS.get(code, '')}".strip()


def _entry(base: str, result: Result, with_resource: bool) -> dict[str, Any]:
    response: dict[str, Any] = {"status": _status(result.status)}
    if "Location" in result.headers:
        response["location"] = result.headers["Location"]
    if "ETag" in result.headers:
        response["etag"] = result.headers["ETag"]
    v = result.version
    if v is not None:
        response["lastModified"] = v.last_updated
    entry: dict[str, Any] = {"response": response}
    if v is not None:
        entry["fullUrl"] = f"{base}/{v.type}/{v.id}"
    if with_resource:
        if v is not None and v.data is not None:
            entry["resource"] = orjson.Fragment(v.data)
        elif result.resource is not None:
            entry["resource"] = result.resource
    return entry


def _error_entry(exc: FhirError) -> dict[str, Any]:
    status, outcome = to_outcome(exc)
    return {"response": {"status": _status(status), "outcome": outcome}}
