"""The one place where errors become OperationOutcome responses (https://hl7.org/fhir/R4/operationoutcome.html).

A `FhirError` keeps its category's status; anything else is a bug: a 500 whose traceback is logged.
"""

from __future__ import annotations

import logging
import uuid

import orjson
from starlette.responses import Response

from ..errors import FhirError, to_outcome

log = logging.getLogger("samverka.api")
FHIR_JSON = "application/fhir+json; charset=utf-8"


def error_response(exc: BaseException) -> Response:
    if isinstance(exc, FhirError):
        status, outcome = to_outcome(exc)
        return Response(orjson.dumps(outcome), status, headers=exc.headers, media_type=FHIR_JSON)
    incident = str(uuid.uuid4())
    log.error("internal error %s", incident, exc_info=exc)
    outcome = {"resourceType": "OperationOutcome", "issue": [{
        "severity": "fatal", "code": "exception",
        "diagnostics": f"internal server error (incident {incident}); the details are in the server log"}]}
    return Response(orjson.dumps(outcome), 500, media_type=FHIR_JSON)
