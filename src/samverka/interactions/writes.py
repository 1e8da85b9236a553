"""The write path shared by create, update, patch, delete and transactions.

https://hl7.org/fhir/R4/http.html#create and https://hl7.org/fhir/R4/resource.html#Meta

A write happens in two steps. `prepare` does the CPU work (checks, validation, index extraction)
outside any database transaction; `commit` runs inside one, stamps `meta.versionId` and
`meta.lastUpdated`, serialises and hands the rows to the store. Keeping the locked part short is
what lets several writers share one SQLite file.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import Category, FhirError, invalid
from ..fhir.definitions import resource_types
from ..fhir.instant import format_instant, now_us
from ..search import custom
from ..search.extract import extract, patient_compartment
from ..search.params import Registry
from ..store import Current, IndexRows, UnitOfWork, Version, Write
from .context import RECORDED_AT_PROVIDER, RECORDED_AT_UNIT, Services

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_SERVER_META = ("versionId", "lastUpdated")
_RECORDED_AT = (RECORDED_AT_UNIT, RECORDED_AT_PROVIDER)


@dataclass
class Prepared:
    type: str
    id: str
    resource: dict[str, Any]
    index: IndexRows
    compartment: str | None
    registry: Registry | None = None  # the registry `index` was extracted with


def check_type(type_: str) -> None:
    if type_ not in resource_types():
        raise FhirError.of(Category.NOT_FOUND, f"unknown resource type {type_!r}", code="not-supported")


def check_id(id_: str, expression: str | None = None) -> None:
    if not ID_RE.match(id_):
        raise invalid(f"{id_!r} is not a valid resource id ([A-Za-z0-9-.], 1 to 64 characters)", expression)


def new_id() -> str:
    return str(uuid.uuid4())


def check_body(body: Any, type_: str, expr: str = "") -> dict[str, Any]:
    """The body must be a JSON object for a resource of the URL's type."""
    if not isinstance(body, dict):
        raise invalid("the body is not a FHIR resource (expected a JSON object)", expr or None, "structure")
    rt = body.get("resourceType")
    if rt is None:
        raise invalid("the resource has no resourceType", f"{expr}resourceType" if expr else None, "required")
    if rt != type_:
        raise invalid(
            f"resourceType {rt!r} does not match the type {type_!r} in the URL",
            f"{expr}resourceType" if expr else str(rt), "invalid",
        )
    return body


def validate(svc: Services, resource: dict[str, Any], expr_prefix: str = "") -> None:
    """Base R4 validation; every issue found is reported, with its FHIRPath expression."""
    if svc.validator is None or not svc.settings.validate_writes:
        return
    issues = svc.validator.validate(resource, resource.get("resourceType"))
    errors = [i for i in issues if i.severity in ("error", "fatal")]
    if errors:
        if expr_prefix:
            errors = [type(i)(i.severity, i.code, i.diagnostics, _prefix(expr_prefix, i.expression))
                      for i in errors]
        raise FhirError(Category.INVALID, errors)


def _prefix(prefix: str, expression: str | None) -> str | None:
    if not expression:
        return prefix.rstrip(".") or None
    # "Patient.name[0]" inside "Bundle.entry[3].resource." -> "Bundle.entry[3].resource.name[0]"
    _, _, rest = expression.partition(".")
    return prefix + rest if rest else prefix.rstrip(".")


def prepare(svc: Services, resource: dict[str, Any], id_: str) -> Prepared:
    """Index rows and compartment for a resource about to be stored (no database access, apart from a
    user's `Services.write_check`)."""
    type_ = resource["resourceType"]
    resource["id"] = id_
    meta = resource.get("meta")
    if isinstance(meta, dict):
        for key in _SERVER_META:
            meta.pop(key, None)
        if not meta:
            resource.pop("meta")
    registry = svc.searchable()
    if type_ == "SearchParameter" and custom.searchable(resource):
        custom.check(resource, registry)
    compartment = patient_compartment(resource)
    if svc.write_check is not None and compartment is not None:
        svc.write_check(svc.repo, resource, compartment)
    if svc.recorded_by is not None and compartment is not None and type_ != "Patient":
        stamp_recorded_by(resource, svc.recorded_by)
    index = extract(resource, registry)
    return Prepared(type_, id_, resource, index, compartment, registry)


def stamp_recorded_by(resource: dict[str, Any], by: tuple[str, str | None]) -> None:
    """Tag patient data a user writes with the care unit and provider it is recorded at (replacing any
    such tags the client sent): what Patientdatalagen's spärr and provider rules read (`auth.pdl`)."""
    meta = resource.setdefault("meta", {})
    tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") in _RECORDED_AT)]
    unit, provider = by
    tags.append({"system": RECORDED_AT_UNIT, "code": unit})
    if provider:
        tags.append({"system": RECORDED_AT_PROVIDER, "code": provider})
    meta["tag"] = tags


def stamp_us() -> int:
    """A write's lastUpdated, truncated to the millisecond precision we write."""
    return now_us() // 1000 * 1000


def commit(
    uow: UnitOfWork, svc: Services, p: Prepared, current: Current | None, method: str, ts_us: int
) -> Version:
    """Write `p` as the next version of its resource inside the open unit of work."""
    version = current.version + 1 if current else 1
    if svc.live is not None:  # index with the registry current when this transaction commits
        registry = svc.live.for_write(uow)
        if registry is not p.registry:
            p.index, p.registry = extract(p.resource, registry), registry
    instant = format_instant(ts_us)
    meta = {"versionId": str(version), "lastUpdated": instant}
    old_meta = p.resource.get("meta")
    if isinstance(old_meta, dict):
        meta.update((k, v) for k, v in old_meta.items() if k not in _SERVER_META)
    body = {"resourceType": p.type, "id": p.id, "meta": meta}
    body.update((k, v) for k, v in p.resource.items() if k not in body)
    p.resource = body
    data = orjson.dumps(body)
    p.index.dates.append((last_updated_param(svc), ts_us, ts_us + 999))
    uow.write(Write(p.type, p.id, version, instant, ts_us, method, data, p.index, p.compartment,
                    current.pk if current else None))
    if p.type == "SearchParameter" and svc.live is not None:
        svc.live.on_write(uow, p.id, body)
    return Version(p.type, p.id, version, instant, method, data)


def commit_delete(uow: UnitOfWork, type_: str, id_: str, current: Current, ts_us: int,
                  svc: Services | None = None) -> Version:
    instant = format_instant(ts_us)
    version = current.version + 1
    if type_ == "SearchParameter" and svc is not None and svc.live is not None:
        svc.live.on_write(uow, id_, None)
    uow.write(Write(type_, id_, version, instant, ts_us, "DELETE", None, None, None, current.pk))
    return Version(type_, id_, version, instant, "DELETE", None)


def last_updated_param(svc: Services) -> int:
    param = svc.registry.get("Resource", "_lastUpdated")
    assert param is not None, "the R4 definitions always define _lastUpdated"
    return param.id


def etag(version: int | str) -> str:
    return f'W/"{version}"'


def parse_etag(value: str) -> int:
    """`W/"3"` (or `"3"`, or `3`) -> 3; a malformed ETag is a 400."""
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    if not v.isdigit():
        raise invalid(f"malformed ETag {value!r}: expected W/\"<version>\"", "If-Match")
    return int(v)


def check_if_match(current: Current | None, if_match: str | None, type_: str, id_: str) -> None:
    if if_match is None:
        return
    wanted = parse_etag(if_match)
    if current is None or current.deleted or current.version != wanted:
        have = "nothing" if current is None or current.deleted else f"version {current.version}"
        raise FhirError.of(
            Category.PRECONDITION,
            f"If-Match wants version {wanted} of {type_}/{id_}, but the server has {have}",
        )
