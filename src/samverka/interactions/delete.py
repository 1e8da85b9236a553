"""delete and conditional delete (versioned): https://hl7.org/fhir/R4/http.html#delete"""

from __future__ import annotations

from ..errors import Category, FhirError
from .conditional import matches
from .context import Result, Services
from .writes import check_id, check_if_match, check_type, commit_delete, etag, stamp_us


def delete(svc: Services, type_: str, id_: str, if_match: str | None = None) -> Result:
    """A later read answers 410 and the history shows the deletion. Deleting nothing is a 204."""
    check_type(type_)
    check_id(id_)
    with svc.repo.transaction() as uow:
        current = uow.current(type_, id_)
        if current is None or current.deleted:
            if if_match is not None:
                check_if_match(current, if_match, type_, id_)
            return Result(204)
        check_if_match(current, if_match, type_, id_)
        v = commit_delete(uow, type_, id_, current, stamp_us(), svc)
    return Result(204, headers={"ETag": etag(v.version)})


def conditional_delete(svc: Services, type_: str, criteria: str) -> Result:
    """Zero matches: nothing to do; one: an ordinary delete; several: 412 (criteria not selective)."""
    check_type(type_)
    with svc.repo.transaction() as uow:
        found = matches(svc, uow, type_, criteria, "the conditional delete")
        if len(found) > 1:
            raise FhirError.of(Category.PRECONDITION, f"the criteria match more than one {type_}: {criteria}")
        if not found:
            return Result(204)
        current = uow.current(type_, found[0])
        assert current is not None
        v = commit_delete(uow, type_, found[0], current, stamp_us(), svc)
    return Result(204, headers={"ETag": etag(v.version)})
