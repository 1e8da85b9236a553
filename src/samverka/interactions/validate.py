"""$validate at type and instance level: https://hl7.org/fhir/R4/resource-operation-validate.html

Runs the same checks as a write, stores nothing, and always answers with an OperationOutcome.
"""

from __future__ import annotations

from typing import Any

from ..errors import FhirError, invalid
from .context import Result, Services
from .writes import check_body, check_id, check_type, validate


def validate_operation(svc: Services, type_: str, id_: str | None, body: Any) -> Result:
    check_type(type_)
    if id_ is not None:
        check_id(id_)
    resource = body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        found = [p.get("resource") for p in body.get("parameter", []) if p.get("name") == "resource"]
        if not found:
            raise invalid("the Parameters have no 'resource' parameter", "Parameters.parameter", "required")
        resource = found[0]
    issues: list[dict[str, Any]] = []
    try:
        resource = check_body(resource, type_)
        if id_ is not None and resource.get("id") not in (None, id_):
            raise invalid(f"the id {resource.get('id')!r} in the body does not match {id_!r}", f"{type_}.id")
        validate(svc, resource)
    except FhirError as exc:
        issues = [i.to_fhir() for i in exc.issues]
    if not issues:
        issues = [{"severity": "information", "code": "informational", "diagnostics": "validation passed"}]
    return Result(200, resource={"resourceType": "OperationOutcome", "issue": issues})
