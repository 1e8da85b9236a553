"""create and conditional create: https://hl7.org/fhir/R4/http.html#create"""

from __future__ import annotations

from typing import Any

from ..errors import Category, FhirError
from .conditional import matches
from .context import Result, Services
from .read import version_headers
from .writes import check_body, check_type, commit, new_id, prepare, stamp_us, validate


def create(svc: Services, type_: str, body: Any, if_none_exist: str | None = None) -> Result:
    check_type(type_)
    resource = check_body(body, type_)
    resource.pop("id", None)  # the server assigns the id of a created resource
    validate(svc, resource)
    p = prepare(svc, resource, new_id())
    with svc.repo.transaction() as uow:
        if if_none_exist:
            found = matches(svc, uow, type_, if_none_exist, "If-None-Exist")
            if len(found) > 1:
                raise FhirError.of(Category.PRECONDITION,
                                   f"If-None-Exist matched more than one {type_}: {if_none_exist}")
            if found:
                existing = uow.read(type_, found[0])
                assert existing is not None
                return Result(200, version=existing, headers=version_headers(existing))
        v = commit(uow, svc, p, None, "POST", stamp_us())
    headers = version_headers(v) | {"Location": f"{type_}/{v.id}/_history/{v.version}"}
    return Result(201, version=v, headers=headers)
