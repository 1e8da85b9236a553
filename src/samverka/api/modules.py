"""The module registry's admin API (the operations of `samverka module ...`, samverka.modules.registry).

- `GET  /admin/modules`                        the registered modules
- `POST /admin/modules`                        register: the manifest as the body (JSON, or YAML with a
                                               YAML content type); 201 with the module view
- `GET  /admin/modules/{id}`                   the module view: role, state, scopes, subscriptions and
                                               their delivery figures
- `POST /admin/modules/{id}/disable|enable`    disable / enable
- `POST /admin/modules/{old}/replace/{new}`    hand OLD's role to NEW

All need an admin token (`samverka admin token`, as /auth/register and /auth/clients) when auth is on.
Errors are OperationOutcomes; a manifest error has one issue per key at fault, its expression the key.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import tokens
from ..auth.endpoints import AuthServer
from ..errors import Category, FhirError
from ..interactions.context import Services
from ..modules import registry
from ..modules.manifest import ManifestError, parse_text
from ..modules.records import administrator
from .formats import read_body
from .outcome import error_response

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json", headers={"Cache-Control": "no-store"})


class ModuleAdmin:
    def __init__(self, svc: Services, auth: AuthServer | None) -> None:
        self.svc = svc
        self.auth = auth

    def routes(self) -> list[Route]:
        return [
            Route("/admin/modules", self.collection, methods=["GET", "POST"]),
            Route("/admin/modules/{id}", self.show, methods=["GET"]),
            Route("/admin/modules/{id}/disable", self.disable, methods=["POST"]),
            Route("/admin/modules/{id}/enable", self.enable, methods=["POST"]),
            Route("/admin/modules/{old}/replace/{new}", self.replace, methods=["POST"]),
        ]

    def _admin(self, request: Request) -> None:
        if self.auth is None:
            return  # auth off: loopback development only
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise FhirError.of(Category.UNAUTHORIZED, "the module admin API needs an admin bearer token "
                               "(samverka admin token)", **{"WWW-Authenticate": "Bearer"})
        try:
            claims = self.auth.verifier.verify(token.strip(), tokens.ADMIN_ISSUER, tokens.ADMIN_AUDIENCE)
        except tokens.TokenError as exc:
            raise FhirError.of(Category.UNAUTHORIZED, f"not an admin token: {exc}",
                               **{"WWW-Authenticate": 'Bearer error="invalid_token"'}) from exc
        if "admin" not in str(claims.get("scope", "")).split():
            raise FhirError.of(Category.FORBIDDEN, "the module admin API needs the admin scope")

    def _who(self, request: Request) -> Any:
        return administrator(request.client.host if request.client else None, "admin API")

    async def collection(self, request: Request) -> Response:
        try:
            self._admin(request)
            if request.method == "GET":
                return _json(registry.list_modules(self.svc))
            raw = await read_body(request, 1024 * 1024)
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            try:
                doc = parse_text(raw) if ctype in YAML_TYPES else orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise FhirError.of(Category.INVALID, f"the manifest is not valid JSON ({exc}); send YAML as "
                                   "application/yaml") from exc
            except ManifestError as exc:
                raise registry.manifest_error(exc) from exc
            return _json(registry.register(self.svc, doc, self._who(request)), 201)
        except Exception as exc:
            return error_response(exc)

    async def show(self, request: Request) -> Response:
        try:
            self._admin(request)
            return _json(registry.view(self.svc, request.path_params["id"]))
        except Exception as exc:
            return error_response(exc)

    async def disable(self, request: Request) -> Response:
        try:
            self._admin(request)
            return _json(registry.disable(self.svc, request.path_params["id"], self._who(request)))
        except Exception as exc:
            return error_response(exc)

    async def enable(self, request: Request) -> Response:
        try:
            self._admin(request)
            # an enable in the second of the disable waits for the next (token iats are whole seconds)
            await asyncio.sleep(registry.enable_delay(self.svc, request.path_params["id"]))
            return _json(registry.enable(self.svc, request.path_params["id"], self._who(request)))
        except Exception as exc:
            return error_response(exc)

    async def replace(self, request: Request) -> Response:
        try:
            self._admin(request)
            p = request.path_params
            return _json(registry.replace(self.svc, p["old"], p["new"], self._who(request)))
        except Exception as exc:
            return error_response(exc)
