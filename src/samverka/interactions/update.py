"""update, update-as-create and conditional update: https://hl7.org/fhir/R4/http.html#update"""

from __future__ import annotations

from typing import Any

from ..errors import Category, FhirError, invalid
from .conditional import matches
from .context import Result, Services
from .read import version_headers
from .writes import check_body, check_id, check_if_match, check_type, commit, new_id, prepare, stamp_us, validate


def update(svc: Services, type_: str, id_: str, body: Any, if_match: str | None = None) -> Result:
    check_type(type_)
    check_id(id_)
    resource = check_body(body, type_)
    if "id" not in resource:
        raise invalid(f"the resource has no id; an update of {type_}/{id_} needs one", f"{type_}.id", "required")
    if resource["id"] != id_:
        raise invalid(f"the id {resource['id']!r} in the body does not match the id {id_!r} in the URL",
                      f"{type_}.id")
    validate(svc, resource)
    p = prepare(svc, resource, id_)
    for attempt in (1, 2):
        try:
            with svc.repo.transaction() as uow:
                current = uow.current(type_, id_)
                check_if_match(current, if_match, type_, id_)
                v = commit(uow, svc, p, current, "PUT", stamp_us())
            break
        except FhirError as exc:
            # two update-as-creates of one new id raced and the other committed first: now it exists,
            # so this one is an ordinary update of it (row locks make the second try safe)
            if exc.category is not Category.CONFLICT or attempt == 2 or current is not None:
                raise
            p = prepare(svc, p.resource, id_)
    created = current is None or current.deleted
    headers = version_headers(v) | {"Location": f"{type_}/{id_}/_history/{v.version}"}
    return Result(201 if created else 200, version=v, headers=headers)


def conditional_update(
    svc: Services, type_: str, criteria: str, body: Any, if_match: str | None = None
) -> Result:
    check_type(type_)
    resource = check_body(body, type_)
    validate(svc, resource)
    body_id = resource.get("id")
    if body_id is not None:
        check_id(body_id, f"{type_}.id")
    with svc.repo.transaction() as uow:
        found = matches(svc, uow, type_, criteria, "the conditional update")
        if len(found) > 1:
            raise FhirError.of(Category.PRECONDITION, f"the criteria match more than one {type_}: {criteria}")
        if found and body_id is not None and body_id != found[0]:
            raise invalid(f"the id {body_id!r} in the body is not the id {found[0]!r} of the matching {type_}",
                          f"{type_}.id")
        id_ = found[0] if found else (body_id or new_id())
        current = uow.current(type_, id_)
        check_if_match(current, if_match, type_, id_)
        p = prepare(svc, resource, id_)
        v = commit(uow, svc, p, current, "PUT", stamp_us())
    created = current is None or current.deleted
    headers = version_headers(v) | {"Location": f"{type_}/{id_}/_history/{v.version}"}
    return Result(201 if created else 200, version=v, headers=headers)
