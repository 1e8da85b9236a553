"""Content negotiation, body parsing and response rendering: https://hl7.org/fhir/R4/http.html#mime-type

JSON (`application/fhir+json`, the default, and `application/json`) and XML (`application/fhir+xml`)
for reading and writing; `_format`, `_pretty`, `_summary` and `_elements` on responses.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ..errors import Category, FhirError, invalid
from ..fhir.summary import elements, summarize
from ..interactions.context import Result

JSON = "application/fhir+json"
XML = "application/fhir+xml"
_FORMAT_ALIASES = {
    "json": JSON, "application/json": JSON, "application/fhir+json": JSON, "text/json": JSON,
    "xml": XML, "application/xml": XML, "application/fhir+xml": XML, "text/xml": XML,
}


def _xml_available() -> bool:
    try:
        from ..fhir import xml  # noqa: F401
    except ImportError:
        return False
    return True


def response_format(request: Request) -> str:
    """The format to answer in: `_format` wins over Accept; JSON unless XML is asked for."""
    fmt = request.query_params.get("_format")
    if fmt:
        chosen = _FORMAT_ALIASES.get(fmt.split(";")[0].strip())
        if chosen is None:
            raise FhirError.of(Category.NOT_ACCEPTABLE, f"_format {fmt!r} is not supported", "_format")
        return chosen
    accept = request.headers.get("accept", "")
    for part in accept.split(","):
        mime = part.split(";")[0].strip()
        if mime in _FORMAT_ALIASES:
            return _FORMAT_ALIASES[mime]
        if mime in ("*/*", "application/*", ""):
            return JSON
    if accept and "html" not in accept:
        raise FhirError.of(Category.NOT_ACCEPTABLE, f"cannot answer in {accept!r}; use application/fhir+json")
    return JSON


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FhirError.of(Category.TOO_LARGE, f"the body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FhirError.of(Category.TOO_LARGE, f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(raw: bytes, content_type: str, patch: bool = False) -> Any:
    """A resource (or JSON Patch) from the body, by its declared media type."""
    mime = content_type.split(";")[0].strip().lower()
    if not raw.strip():
        raise invalid("the request has no body", None, "required")
    if patch and mime not in ("application/json-patch+json",):
        raise FhirError.of(Category.UNSUPPORTED_MEDIA, f"PATCH supports application/json-patch+json, not {mime!r}")
    if mime in ("application/fhir+xml", "application/xml", "text/xml"):
        from ..fhir import xml

        try:
            return xml.parse_xml(raw)
        except ValueError as exc:
            raise invalid(f"the body is not a valid FHIR XML resource: {exc}", None, "structure") from exc
    if mime not in ("application/fhir+json", "application/json", "application/json-patch+json", "", "text/json"):
        raise FhirError.of(Category.UNSUPPORTED_MEDIA, f"unsupported content type {mime!r}; use {JSON}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"the body is not valid JSON: {exc}", None, "structure") from exc


def render(request: Request, result: Result, fmt: str, prefer_return: str | None = None) -> Response:
    """Serialise a Result, applying Prefer: return, `_summary`, `_elements` and `_pretty`."""
    headers = dict(result.headers)
    if result.file is not None:
        return FileResponse(result.file, result.status, headers=headers, media_type=result.media_type)
    if result.status == 304 or (result.version is None and result.resource is None):
        return Response(None, result.status, headers=headers)
    if prefer_return == "minimal" and result.status in (200, 201) and result.version is not None:
        return Response(None, result.status, headers=headers)
    if prefer_return == "OperationOutcome" and result.version is not None:
        body: Any = {"resourceType": "OperationOutcome", "issue": [{
            "severity": "information", "code": "informational",
            "diagnostics": f"{result.version.type}/{result.version.id} version {result.version.version} stored"}]}
        return _encode(body, result.status, headers, fmt, False)
    q = request.query_params
    summary = q.get("_summary")
    wanted = q.get("_elements")
    pretty = q.get("_pretty") == "true"
    if result.version is not None and result.resource is None:
        assert result.version.data is not None
        if fmt == JSON and not (summary or wanted or pretty):
            return Response(result.version.data, result.status, headers=headers, media_type=_ct(JSON))
        body = orjson.loads(result.version.data)
    else:
        body = result.resource
    if body.get("resourceType") != "Bundle":
        if summary:
            body = summarize(body, summary)
        if wanted:
            body = elements(body, [n.strip() for n in wanted.split(",") if n.strip()])
    elif summary or wanted:
        body = orjson.loads(orjson.dumps(body))
        for entry in body.get("entry", []):
            res = entry.get("resource")
            if isinstance(res, dict) and entry.get("search", {}).get("mode") != "outcome":
                res = summarize(res, summary) if summary else res
                entry["resource"] = elements(res, wanted.split(",")) if wanted else res
    return _encode(body, result.status, headers, fmt, pretty)


def _ct(fmt: str) -> str:
    return f"{fmt}; charset=utf-8"


def _encode(body: Any, status: int, headers: dict[str, str], fmt: str, pretty: bool) -> Response:
    if fmt == XML:
        from ..fhir import xml

        plain = orjson.loads(orjson.dumps(body))
        return Response(xml.to_xml(plain), status, headers=headers, media_type=_ct(XML))
    # a re-parse turns stored Fragments into objects, so the indentation covers them too
    data = orjson.dumps(orjson.loads(orjson.dumps(body)), option=orjson.OPT_INDENT_2) if pretty else orjson.dumps(body)
    return Response(data, status, headers=headers, media_type=_ct(JSON))
