"""The ASGI application: routes FHIR REST requests to interaction handlers. https://hl7.org/fhir/R4/http.html

Handlers run inline on the event loop: reads against the embedded store take microseconds, and a
thread-pool hop would cost more than the read itself (see docs/architecture.md). Throughput across
cores comes from `--workers`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from .. import audit, events
from ..audit import query as audit_query
from ..auth import emergency_access, lift_block, pdl_identity
from ..auth.access import PUBLIC, Access, Need, required
from ..auth.endpoints import AuthServer
from ..errors import Category, FhirError, invalid
from ..events import websocket as ws_channel
from ..interactions import (
    batch,
    capabilities,
    create,
    delete,
    export,
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
from .modules import ModuleAdmin
from .outcome import error_response
from .websocket import endpoint as ws_endpoint

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
        self.audit = audit.Auditor(services.repo, services.settings)
        repo = services.repo
        self.events = events.Events(services, repo.on_commit if isinstance(repo, events.Outboxing) else None)
        self.ws = ws_channel.Channel(services)  # the websocket channel: binding tokens, bound sockets
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
        request.state.access = access  # known even when refused below, for the audit record
        access.attach_pdl(self.svc)  # a user's token: Patientdatalagen (auth.pdl)
        if need is not None:
            access.require(need, self.svc.repo)
            if need.perm == "s":
                access.check_search(pairs)
        return access

    async def dispatch(self, request: Request, prefer: dict[str, str]) -> Result:
        """Check access, run the interaction, and audit it (samverka.audit) before anything is answered."""
        parts = [p for p in request.path_params.get("path", "").split("/") if p]
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        address = request.client.host if request.client else None
        subtype = audit.classify(request.method, parts)
        who = audit.Who(address=address)
        try:
            if parts and parts[0] == "AuditEvent":
                return self._audit_events(request, parts, pairs, who)
            access = self._enter(request, parts, pairs)
            who = audit.who_from_access(access, address)
            svc = access.services(self.svc) if access is not None else self.svc
            svc = self.events.services(svc, access)  # Subscriptions it creates belong to the token's client
            result = await self._route(request, prefer, self.audit.services(svc, who), access, parts, pairs)
            if access is not None and access.is_user:
                result = pdl_identity.redact(result, self.svc.repo, access.practitioner_role)
                who = audit.who_from_access(access, address)  # an emergency access just granted: ETREAT
        except Exception as exc:
            refused = getattr(request.state, "access", None)
            if refused is not None and who.client_id is None:
                who = audit.who_from_access(refused, address)
            await self.audit.failure(parts, subtype, who, exc)
            raise
        await self.audit.success(parts, subtype, who, result, request.url.query)
        return result

    def _audit_events(self, request: Request, parts: list[str], pairs: list[tuple[str, str]],
                      who: audit.Who) -> Result:
        """GET /fhir/AuditEvent[/id]: the audit log for auditors (AuditEvent scopes); no API changes it."""
        if request.method not in ("GET", "HEAD"):
            raise audit_query.refuse_change(request.method)
        own: str | None = None
        if self.auth is not None:
            access = self.auth.access(request)
            reach = audit.reach(access, "s" if len(parts) == 1 else "r")
            if reach is None:
                raise FhirError.of(Category.FORBIDDEN, "reading the audit log needs an AuditEvent scope "
                                   "(system/AuditEvent.rs, user/AuditEvent.rs or patient/AuditEvent.rs)",
                                   code="forbidden")
            own = access.patient if reach == "patient" else None
        repo = self.svc.repo
        if len(parts) == 1:
            settings = self.svc.settings
            return Result(200, resource=audit_query.search(repo, self.base(request), pairs, own,
                                                           settings.default_page_size, settings.max_page_size))
        if len(parts) == 2:
            return Result(200, resource=orjson.loads(audit_query.read(repo, parts[1], own)))
        raise invalid(f"{request.method} /fhir/{'/'.join(parts)} is not supported on AuditEvent", None,
                      "not-supported")

    def _auditor(self, request: Request) -> None:
        """The admin API's audit reports need an admin token or an auditor's system/user AuditEvent scope."""
        if self.auth is None:
            return
        from ..auth import tokens

        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        if token:
            try:
                claims = self.auth.verifier.verify(token, tokens.ADMIN_ISSUER, tokens.ADMIN_AUDIENCE)
                if "admin" in str(claims.get("scope", "")).split():
                    return
            except tokens.TokenError:
                pass
        if audit.reach(self.auth.access(request), "s") != "all":
            raise FhirError.of(Category.FORBIDDEN, "audit reports need an admin token or an auditor scope "
                               "(system/AuditEvent.rs or user/AuditEvent.rs)")

    async def audit_report(self, request: Request) -> Response:
        """GET /audit/report: the `samverka audit report` queries (same parameter names), NDJSON or CSV."""
        try:
            self._auditor(request)
            params = dict(request.query_params)
            fmt = params.get("format", "ndjson")
            if fmt not in ("ndjson", "csv"):
                raise invalid("format must be ndjson or csv", "format")
            events = audit_query.report(self.svc.repo, audit_query.report_from_params(params))
            body = audit_query.export(events, fmt)
        except Exception as exc:
            return error_response(exc)
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/fhir+ndjson"
        return Response(body.encode(), 200, media_type=media)

    async def _route(self, request: Request, prefer: dict[str, str], svc: Services, access: Access | None,
                     parts: list[str], pairs: list[tuple[str, str]]) -> Result:
        method = request.method
        query = request.url.query
        base = self.base(request)
        strict = prefer.get("handling") == "strict"
        h = request.headers
        n = len(parts)
        if n and (parts[-1] == "$export" or parts[0] in (export.STATUS, export.FILE)):
            return await self._export(request, prefer, svc, access, parts, pairs)
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
            statement = capabilities.capability_statement(svc.searchable(force=True), base, formats,
                                                          svc.settings.auth, self.events.topic_urls())
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
        elif n == 2 and parts[0] == "Subscription" and parts[1] == "$status" and method in ("GET", "HEAD"):
            return self.events.status(base, None, pairs, access)
        elif n == 2 and parts[0] == "Subscription" and parts[1] == "$get-ws-binding-token":
            raise ws_channel.refuse_type_level()
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
        elif n == 3 and parts[0] == "Patient" and parts[2] == "$emergency-access" and method == "POST":
            return emergency_access.emergency_access(svc, access, parts[1], await self._body(request))
        elif n == 3 and parts[0] == "Patient" and parts[2] == "$lift-block" and method == "POST":
            return lift_block.lift_block(svc, access, parts[1], await self._body(request))
        elif n == 3 and parts[0] == "Subscription" and parts[2] == "$status" and method in ("GET", "HEAD"):
            return self.events.status(base, parts[1], pairs, access)
        elif n == 3 and parts[0] == "Subscription" and parts[2] == "$events" and method in ("GET", "HEAD"):
            return self.events.events(base, parts[1], dict(pairs), access)
        elif n == 3 and parts[0] == "Subscription" and parts[2] == "$get-ws-binding-token" and method in (
                "GET", "POST"):
            return self.ws.binding_token(base, parts[1], access)
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


    async def _export(self, request: Request, prefer: dict[str, str], svc: Services, access: Access | None,
                      parts: list[str], pairs: list[tuple[str, str]]) -> Result:
        """Bulk Data export (interactions.export): kick-off, status, cancel and file download."""
        method, n, base = request.method, len(parts), self.base(request)
        owner = (access.client_id, access.user_hsa_id) if access is not None else (None, None)
        if parts[-1] == "$export" and method in ("GET", "POST") and (
                n == 1 or (n == 2 and parts[0] == "Patient") or (n == 3 and parts[0] == "Group")):

            def allowed(type_: str, named: bool) -> bool:
                if access is None:
                    return True
                try:
                    access.require(Need("s", type_), expression="_type")
                except FhirError:
                    if named:
                        raise
                    return False
                return True

            raw = await read_body(request, svc.settings.max_body_bytes) if method == "POST" else b""
            body = parse_body(raw, request.headers.get("content-type", JSON)) if raw else None
            redact = access is not None and access.is_user and not pdl_identity.may_see(self.svc.repo,
                                                                                       access.practitioner_role)
            if access is not None:  # the job stores its filters: nothing that lives only in this process
                svc = dataclasses.replace(svc, access_filters=access.search_filters(portable=True))
            return export.kick_off(svc, base, str(request.url), parts[1] if n == 3 else None, n == 2, pairs, body,
                                   prefer, owner, allowed, redact)
        if parts[0] == export.STATUS and n == 2 and method in ("GET", "HEAD"):
            return export.status(svc, base, parts[1], owner)
        if parts[0] == export.STATUS and n == 2 and method == "DELETE":
            return export.cancel(svc, parts[1], owner)
        if parts[0] == export.FILE and n == 3 and method in ("GET", "HEAD"):
            return export.file(svc, parts[1], parts[2], owner)
        if parts[-1] == "$export":
            raise invalid(f"$export is not defined on {'/'.join(parts[:-1])}; use [base]/$export, "
                          "Patient/$export or Group/[id]/$export", None, "not-supported")
        raise FhirError.of(Category.METHOD_NOT_ALLOWED, f"{method} is not allowed on /fhir/{'/'.join(parts)}")


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


def create_app(services: Services, deliver: bool = False) -> Starlette:
    """The ASGI app; `deliver` also runs this process's subscription delivery worker (samverka.events)."""
    auth = AuthServer(services.repo, services.settings) if services.settings.auth else None
    api = FhirApi(services, auth)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if deliver and services.settings.events:
            api.events.start()
        api.audit.reads.start()  # the audit log's patient and entity index follows the chain (audit.side)
        try:
            yield
        finally:
            api.audit.reads.stop()
            await api.events.stop()
            await api.ws.stop()

    routes = [
        Route("/healthz", _health, methods=["GET"]),
        Route("/audit/report", api.audit_report, methods=["GET"]),
        *(auth.routes() if auth is not None else []),
        *ModuleAdmin(services, auth).routes(),
        WebSocketRoute(ws_channel.PATH, ws_endpoint(api.ws)),
        Route("/fhir", api.handle, methods=_METHODS),
        Route("/fhir/{path:path}", api.handle, methods=_METHODS),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.services = services
    return app
