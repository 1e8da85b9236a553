"""patch with JSON Patch (RFC 6902): https://hl7.org/fhir/R4/http.html#patch"""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer
import orjson

from ..errors import Category, FhirError, invalid, not_found, unprocessable
from .conditional import matches
from .context import Result, Services
from .read import version_headers
from .writes import check_id, check_if_match, check_type, commit, prepare, stamp_us, validate


def patch(svc: Services, type_: str, id_: str | None, operations: Any, if_match: str | None = None,
          criteria: str | None = None) -> Result:
    """Apply a JSON Patch to the current version (found by id, or by criteria) and store the result."""
    check_type(type_)
    if id_ is not None:
        check_id(id_)
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise invalid("a JSON Patch document is an array of operation objects", None, "structure")
    try:
        compiled = jsonpatch.JsonPatch(operations)
    except (jsonpatch.InvalidJsonPatch, jsonpointer.JsonPointerException) as exc:
        raise invalid(f"invalid JSON Patch: {exc}", None, "structure") from exc
    with svc.repo.transaction() as uow:
        if id_ is None:
            assert criteria is not None
            found = matches(svc, uow, type_, criteria, "the conditional patch")
            if len(found) != 1:
                raise FhirError.of(Category.PRECONDITION if found else Category.NOT_FOUND,
                                   f"the criteria match {len(found) or 'no'} {type_} resources: {criteria}")
            id_ = found[0]
        current = uow.current(type_, id_)
        if current is None or current.deleted:
            raise not_found(f"{type_}/{id_} is not known") if current is None else FhirError.of(
                Category.GONE, f"{type_}/{id_} was deleted")
        check_if_match(current, if_match, type_, id_)
        stored = uow.read(type_, id_)
        assert stored is not None and stored.data is not None
        try:
            resource = compiled.apply(orjson.loads(stored.data))
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise unprocessable(f"the patch cannot be applied to {type_}/{id_}: {exc}") from exc
        if not isinstance(resource, dict) or resource.get("resourceType") != type_ or resource.get("id") != id_:
            raise unprocessable("a patch may not change the resourceType or id", f"{type_}.id")
        validate(svc, resource)
        p = prepare(svc, resource, id_)
        v = commit(uow, svc, p, current, "PATCH", stamp_us())
    return Result(200, version=v, headers=version_headers(v))
