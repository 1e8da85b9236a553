"""read and vread: https://hl7.org/fhir/R4/http.html#read and https://hl7.org/fhir/R4/http.html#vread"""

from __future__ import annotations

from ..errors import Category, FhirError, not_found
from ..fhir.instant import http_date, parse_instant
from ..store import Version
from .context import Result, Services
from .writes import check_id, check_type, etag, parse_etag


def version_headers(v: Version) -> dict[str, str]:
    return {"ETag": etag(v.version), "Last-Modified": http_date(parse_instant(v.last_updated))}


def read(
    svc: Services, type_: str, id_: str, if_none_match: str | None = None, if_modified_since: str | None = None
) -> Result:
    check_type(type_)
    check_id(id_)
    v = svc.repo.read(type_, id_)
    if v is None:
        raise not_found(f"{type_}/{id_} is not known")
    if v.deleted:
        raise FhirError.of(Category.GONE, f"{type_}/{id_} was deleted (version {v.version})",
                           ETag=etag(v.version))
    headers = version_headers(v)
    if if_none_match is not None and _etag_matches(if_none_match, v.version):
        return Result(304, headers=headers)
    if if_modified_since is not None and _not_modified_since(if_modified_since, v.last_updated):
        return Result(304, headers=headers)
    return Result(200, version=v, headers=headers)


def vread(svc: Services, type_: str, id_: str, version: str) -> Result:
    check_type(type_)
    check_id(id_)
    if not version.isdigit():
        raise not_found(f"{type_}/{id_} has no version {version!r}")
    v = svc.repo.vread(type_, id_, int(version))
    if v is None:
        raise not_found(f"{type_}/{id_} has no version {version}")
    if v.deleted:
        raise FhirError.of(Category.GONE, f"version {version} of {type_}/{id_} is a deletion",
                           ETag=etag(v.version))
    return Result(200, version=v, headers=version_headers(v))


def _etag_matches(header: str, version: int) -> bool:
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        try:
            if parse_etag(tag) == version:
                return True
        except FhirError:
            continue
    return False


def _not_modified_since(header: str, last_updated: str) -> bool:
    from email.utils import parsedate_to_datetime

    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False
    return parse_instant(last_updated) // 1_000_000 <= int(since.timestamp())
