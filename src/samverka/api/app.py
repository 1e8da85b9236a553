"""The ASGI application: routes FHIR REST requests to interaction handlers. https://hl7.org/fhir/R4/http.html

Handlers run inline on the event loop: reads against the embedded store take microseconds, and a
thread-pool hop would cost more than the read itself (see docs/architecture.md). Throughput across
cores comes from `--workers`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth.access import PUBLIC, Access, required
from ..auth.endpoints import AuthServer
from ..errors import Category, FhirError, invalid
from ..interactions import (
    batch,
    capabilities,
    create,
    delete,
    history,
    patch,
    read,
    reindex,
    search,
    transaction,
    update,
    validate,
)
from ..interactions.context import Result, Services
from .formats import JSON, XML, parse_body, read_body, render, response_format
from .outcome import error_response

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _prefer(request: Request) -> dict[str, str]:
    out = {}
    for part in request.headers.get("prefer", "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key:
                out[key.strip()] = value.strip().strip('"')
    return out


class FhirApi:
    """Holds the services and turns one HTTP request into one handler call."""

    def __init__(self, services: Services, auth: AuthServer | None = None) -> None:
        self.svc = services
        self.auth = auth  # None: auth is off (loopback development only)
        self._metadata: dict[str, Any] | None = None

    def base(self, request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}/fhir"

    async def handle(self, request: Request) -> Response:
        try:
            fmt = response_format(request)
            prefer = _prefer(request)
            result = await self.dispatch(request, prefer)
            location = result.headers.get("Location")
            if location and "://" not in location:  # [base]/[type]/[id]/_history/[vid], http.html#create
                result.headers["Location"] = f"{self.base(request)}/{location}"
            return render(request, result, fmt, prefer.get("return"))
        except Exception as exc:  # the one place errors become OperationOutcomes
            return error_response(exc)

    async def _body(self, request: Request, patch_: bool = False) -> Any:
        raw = await read_body(request, self.svc.settings.max_body_bytes)
        return parse_body(raw, request.headers.get("content-type", JSON), patch_)

    def _enter(self, request: Request, parts: list[str], pairs: list[tuple[str, str]]) -> Access | None:
        """The one access check: the token's grants against what this request needs (auth.access)."""
        if self.auth is None:
            return None
        need = required(request.method, parts)
        if need is not None and need.perm == PUBLIC:
            return None
        access = self.auth.access(request)
        if need is not None:
            access.require(need, self.svc.repo)
            if need.perm == "s":
                access.check_search(pairs)
        return access

    async def dispatch(self, request: Request, prefer: dict[str, str]) -> Result:
        svc, method = self.svc, request.method
        parts = [p for p in request.path_params.get("path", "").split("/") if p]
        query = request.url.query
        pairs = parse_qsl(query, keep_blank_values=True)
        access = self._enter(request, parts, pairs)
        if access is not None:
            svc = access.services(svc)
        base = self.base(request)
        strict = prefer.get("handling") == "strict"
        h = request.headers
        n = len(parts)
        if n == 0:
            if method == "POST":
                body = await self._body(request)
                kind = body.get("type") if isinstance(body, dict) else None
                representation = prefer.get("return") == "representation"
                if kind == "transaction":
                    if access is not None:
                        access.check_transaction(body, svc.repo)
                    return transaction.transaction(svc, base, body, representation)
                if access is not None:
                    return access.run_batch(svc, base, body, representation)
                return batch.batch(svc, base, body, representation)
            if method in ("GET", "HEAD"):
                return search.search(svc, base, None, pairs, strict)
        elif parts[0] == "metadata" and n == 1 and method in ("GET", "HEAD"):
            formats = (JSON, "application/json", XML)
            statement = capabilities.capability_statement(svc.searchable(force=True), base, formats)
            return Result(200, resource=_mark_custom(svc, statement))
        elif parts[0] == "$reindex" and n == 1 and method == "POST":
            body = await self._body(request) if int(h.get("content-length") or 0) else None
            return reindex.reindex_operation(svc, base, _urls(pairs, body))
        elif parts[0] == "$reindex-status" and n == 1 and method in ("GET", "HEAD"):
            return reindex.status(svc, dict(pairs).get("job"))
        elif n == 3 and parts[0] == "SearchParameter" and parts[2] == "$reindex" and method == "POST":
            return reindex.reindex_search_parameter(svc, base, parts[1])
        elif parts[0] == "_history" and n == 1 and method in ("GET", "HEAD"):
            return history.history(svc, base, None, None, pairs)
        elif n == 1:
            type_ = parts[0]
            if method in ("GET", "HEAD"):
                return search.search(svc, base, type_, pairs, strict)
            if method == "POST":
                return create.create(svc, type_, await self._body(request), h.get("if-none-exist"))
            if method == "PUT":
                return update.conditional_update(svc, type_, query, await self._body(request), h.get("if-match"))
            if method == "DELETE":
                return delete.conditional_delete(svc, type_, query)
            if method == "PATCH":
                return patch.patch(svc, type_, None, await self._body(request, True), h.get("if-match"), query)
        elif n == 2 and parts[1] == "_search" and method == "POST":
            raw = await read_body(request, svc.settings.max_body_bytes)
            ctype = h.get("content-type", "").split(";")[0].strip()
            if raw and ctype != "application/x-www-form-urlencoded":
                raise FhirError.of(Category.UNSUPPORTED_MEDIA, "POST _search takes application/x-www-form-urlencoded")
            form = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
            if access is not None:
                access.check_search(form)
            return search.search(svc, base, parts[0], [*pairs, *form], strict)
        elif n == 2 and parts[1] == "_history" and method in ("GET", "HEAD"):
            return history.history(svc, base, parts[0], None, pairs)
        elif n == 2 and parts[1] == "$validate" and method == "POST":
            return validate.validate_operation(svc, parts[0], None, await self._body(request))
        elif n == 2 and not parts[1].startswith(("$", "_")):
            type_, id_ = parts
            if method in ("GET", "HEAD"):
                return read.read(svc, type_, id_, h.get("if-none-match"), h.get("if-modified-since"))
            if method == "PUT":
                return update.update(svc, type_, id_, await self._body(request), h.get("if-match"))
            if method == "DELETE":
                return delete.delete(svc, type_, id_, h.get("if-match"))
            if method == "PATCH":
                return patch.patch(svc, type_, id_, await self._body(request, True), h.get("if-match"))
        elif n == 3 and parts[2] == "_history" and method in ("GET", "HEAD"):
            return history.history(svc, base, parts[0], parts[1], pairs)
        elif n == 3 and parts[2] == "$validate" and method == "POST":
            return validate.validate_operation(svc, parts[0], parts[1], await self._body(request))
        elif n == 3 and not parts[2].startswith(("$", "_")) and method in ("GET", "HEAD"):
            return search.search(svc, base, parts[2], pairs, strict, compartment=(parts[0], parts[1]))
        elif n == 4 and parts[2] == "_history" and method in ("GET", "HEAD"):
            return read.vread(svc, parts[0], parts[1], parts[3])
        if n >= 1 and parts[-1].startswith("$"):
            raise FhirError.of(Category.UNSUPPORTED, f"operation {parts[-1]} is not supported", code="not-supported")
        if method not in _METHODS:
            raise FhirError.of(Category.METHOD_NOT_ALLOWED, f"{method} is not allowed here")
        raise invalid(f"{method} /fhir/{'/'.join(parts)} is not a FHIR interaction this server knows", None,
                      "not-supported")


def _urls(pairs: list[tuple[str, str]], body: Any) -> list[str]:
    """`url` from the query string or from a Parameters body: which SearchParameters to reindex."""
    urls = [v for k, v in pairs if k == "url"]
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        urls += [p["valueUri"] for p in body.get("parameter", []) if p.get("name") == "url" and "valueUri" in p]
    elif body is not None:
        raise invalid("$reindex takes a Parameters resource (url: the SearchParameters to reindex)", None)
    return urls


def _mark_custom(svc: Services, statement: dict[str, Any]) -> dict[str, Any]:
    """Say which searchParams are custom, and which of those cannot be used until their reindex ends."""
    registry = svc.registry
    custom = {p.url for p in getattr(registry, "custom", list)()}
    pending = getattr(registry, "pending", {})
    if not custom and not pending:
        return statement
    for res in statement["rest"][0]["resource"]:
        for sp in res.get("searchParam", []):
            url = sp.get("definition")
            if url in pending:
                sp["documentation"] = "Not usable yet: existing resources are being reindexed (see $reindex-status)."
            elif url in custom:
                sp["documentation"] = "Custom search parameter (a SearchParameter resource on this server)."
    return statement


async def _health(request: Request) -> Response:
    return Response(b'{"status":"ok"}', 200, media_type="application/json")


def create_app(services: Services) -> Starlette:
    auth = AuthServer(services.repo, services.settings) if services.settings.auth else None
    api = FhirApi(services, auth)
    routes = [
        Route("/healthz", _health, methods=["GET"]),
        *(auth.routes() if auth is not None else []),
        Route("/fhir", api.handle, methods=_METHODS),
        Route("/fhir/{path:path}", api.handle, methods=_METHODS),
    ]
    app = Starlette(routes=routes)
    app.state.services = services
    return app
