"""The authorization server's HTTP endpoints and the bearer-token guard of the FHIR API.

SMART App Launch 2.x discovery (https://hl7.org/fhir/smart-app-launch/conformance.html), the token
endpoint for backend services (https://hl7.org/fhir/smart-app-launch/backend-services.html) and for
users (authorization code with PKCE, refresh tokens and the JWT-bearer grant: `auth.grants`; the
authorization endpoint and login page: `auth.authorize`),
introspection (RFC 7662), revocation (RFC 7009), the JWKS, and client registration (RFC 7591) with
its admin API. Errors follow RFC 6749 §5.2: `{"error", "error_description"}`, never echoing a secret.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import Settings
from ..store import Repository
from . import clients, grants, handles, idp, scopes, store, tokens
from .access import Access, unauthorized
from .authorize import AppLaunch

MAX_FORM_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
CAPABILITIES = ["launch-ehr", "launch-standalone", "client-public", "client-confidential-asymmetric",
                "context-ehr-patient", "context-ehr-encounter", "context-standalone-patient", "sso-openid-connect",
                "permission-offline", "permission-v1", "permission-v2", "permission-patient", "permission-user"]
SCOPES_SUPPORTED = ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write", "user/*.cruds",
                    "user/*.rs", "patient/*.rs", "openid", "fhirUser", "launch", "launch/patient",
                    "offline_access"]
GRANT_TYPES = ["authorization_code", "refresh_token", "client_credentials", clients.JWT_BEARER]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers={**_NO_STORE, **(headers or {})},
                    media_type="application/json")


def _oauth_error(exc: clients.OAuthError) -> Response:
    return _json({"error": exc.code, "error_description": str(exc)}, exc.status)


async def _form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise clients.OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise clients.OAuthError("invalid_request", "the request body is too large")
    form: dict[str, str] = {}
    for k, v in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
        if k in form:
            raise clients.OAuthError("invalid_request", f"parameter {k} appears more than once")
        form[k] = v
    return form


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


# the user and assignment claims of a user's access token (users.User.claims), shown by introspection
USER_CLAIMS = ("user_hsa_id", "user_name", "practitioner_role", "care_unit", "care_unit_name", "care_provider",
               "role", "assignment_purpose")


class AuthServer:
    """The built-in authorization server of one process: keys, token verification and endpoints."""

    def __init__(self, repo: Repository, settings: Settings) -> None:
        self.repo = repo
        self.settings = settings
        self.keys = tokens.KeyRing(repo)
        self.verifier = tokens.Verifier(self.keys)
        self.client_keys = clients.ClientKeys()
        self.issuers = idp.TrustedIssuers(settings.trusted_issuers)
        self.app_launch = AppLaunch(self)

    def origin(self, request: Request) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        return f"{request.url.scheme}://{request.url.netloc}"

    def issuer(self, request: Request) -> str:
        return f"{self.origin(request)}/auth"

    def fhir_base(self, request: Request) -> str:
        return f"{self.origin(request)}/fhir"

    def routes(self) -> list[Route]:
        return [
            Route("/fhir/.well-known/smart-configuration", self.smart_configuration, methods=["GET"]),
            Route("/auth/.well-known/openid-configuration", self.openid_configuration, methods=["GET"]),
            Route("/auth/authorize", self.app_launch.authorize, methods=["GET", "POST"]),
            Route("/auth/login", self.app_launch.login, methods=["POST"]),
            Route("/auth/launch", self.app_launch.create_launch, methods=["POST"]),
            Route("/auth/token", self.token, methods=["POST"]),
            Route("/auth/introspect", self.introspect, methods=["POST"]),
            Route("/auth/revoke", self.revoke, methods=["POST"]),
            Route("/auth/jwks", self.jwks, methods=["GET"]),
            Route("/auth/register", self.register, methods=["POST"]),
            Route("/auth/clients", self.list_clients, methods=["GET"]),
            Route("/auth/clients/{client_id}", self.delete_client, methods=["DELETE"]),
        ]

    def access(self, request: Request) -> Access:
        """The request's access context from its bearer token; 401 when there is none or it is not valid."""
        if "authorization" not in request.headers:
            raise unauthorized("this request needs a bearer access token (see /fhir/.well-known/smart-configuration)",
                               None)
        token = _bearer(request)
        if token is None:
            raise unauthorized("the Authorization header must be 'Bearer <access token>'", "invalid_request")
        try:
            claims, (marker, mark) = self.verifier.verify_with_marker(token, self.issuer(request),
                                                                      self.fhir_base(request))
        except tokens.TokenError as exc:
            raise unauthorized(str(exc)) from exc
        access = Access.from_claims(claims)
        access.pdl_marker, access.write_mark = marker, mark
        return access

    async def smart_configuration(self, request: Request) -> Response:
        """https://hl7.org/fhir/smart-app-launch/conformance.html#metadata"""
        origin = self.origin(request)
        body = {
            "issuer": f"{origin}/auth",
            "jwks_uri": f"{origin}/auth/jwks",
            "authorization_endpoint": f"{origin}/auth/authorize",
            "token_endpoint": f"{origin}/auth/token",
            "introspection_endpoint": f"{origin}/auth/introspect",
            "revocation_endpoint": f"{origin}/auth/revoke",
            "registration_endpoint": f"{origin}/auth/register",
            "grant_types_supported": GRANT_TYPES,
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": clients.CLIENT_ALGS,
            "scopes_supported": SCOPES_SUPPORTED,
            "response_types_supported": ["code"],
            "capabilities": CAPABILITIES,
            "code_challenge_methods_supported": ["S256"],
        }
        return Response(orjson.dumps(body), 200, media_type="application/json")

    async def openid_configuration(self, request: Request) -> Response:
        """OpenID Connect Discovery 1.0 §3 for the id_token issuer: https://openid.net/specs/openid-connect-discovery-1_0.html"""
        origin = self.origin(request)
        body = {
            "issuer": f"{origin}/auth",
            "jwks_uri": f"{origin}/auth/jwks",
            "authorization_endpoint": f"{origin}/auth/authorize",
            "token_endpoint": f"{origin}/auth/token",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [tokens.ALG],
            "scopes_supported": ["openid", "fhirUser"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "auth_time", "name", "fhirUser"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
        }
        return Response(orjson.dumps(body), 200, media_type="application/json")

    async def token(self, request: Request) -> Response:
        """The token endpoint: https://hl7.org/fhir/smart-app-launch/app-launch.html#obtain-access-token"""
        try:
            form = await _form(request)
            grant_type = form.get("grant_type", "")
            if grant_type in ("authorization_code", "refresh_token", clients.JWT_BEARER):
                return await self._user_token(request, form, grant_type)
            if grant_type != "client_credentials":
                raise clients.OAuthError("unsupported_grant_type",
                                         f"grant_type must be one of {', '.join(GRANT_TYPES)}")
            origin = self.origin(request)
            client = await clients.authenticate(self.repo, self.client_keys, form, f"{origin}/auth/token")
            if "client_credentials" not in client.grant_types:
                raise clients.OAuthError("unauthorized_client", "this client may not use client_credentials")
            requested = form.get("scope", "")
            if not requested.strip():
                raise clients.OAuthError("invalid_scope", "scope is required")
            try:
                scopes.check(requested)
            except scopes.ScopeError as exc:
                raise clients.OAuthError("invalid_scope", str(exc)) from exc
            granted = scopes.intersect(requested, client.scope)
            if not granted:
                raise clients.OAuthError("invalid_scope", "none of the requested scopes is registered for this client")
        except clients.OAuthError as exc:
            return _oauth_error(exc)
        token, claims = tokens.mint(self.keys, {"iss": f"{origin}/auth", "aud": f"{origin}/fhir",
                                                "sub": client.client_id, "client_id": client.client_id,
                                                "scope": granted}, tokens.ACCESS_LIFETIME)
        return _json({"access_token": token, "token_type": "bearer", "expires_in": tokens.ACCESS_LIFETIME,
                      "scope": claims["scope"]})

    async def _user_token(self, request: Request, form: dict[str, str], grant_type: str) -> Response:
        """authorization_code, refresh_token and the JWT-bearer grant (auth.grants): tokens for a user."""
        where = grants.Where(self.issuer(request), self.fhir_base(request), f"{self.origin(request)}/auth/token")
        try:
            client = await clients.token_client(self.repo, self.client_keys, form, where.token_url, grant_type)
            if grant_type == "authorization_code":
                body = grants.authorization_code(self.repo, self.keys, where, client.client_id, form)
            elif grant_type == "refresh_token":
                body = grants.refresh(self.repo, self.keys, where, client.client_id, form)
            else:
                body = await grants.jwt_bearer(self.repo, self.keys, where, client, self.issuers, form)
        except clients.OAuthError as exc:
            return _oauth_error(exc)
        return _json(body)

    def _caller(self, request: Request) -> tuple[bool, str | None]:
        """(is admin, client_id) of the bearer token calling introspect or revoke; 401 without one."""
        token = _bearer(request)
        if token is None:
            raise clients.OAuthError("invalid_token", "this endpoint needs a bearer token", 401)
        try:
            claims = self.verifier.verify(token, tokens.ADMIN_ISSUER, tokens.ADMIN_AUDIENCE)
            if "admin" in str(claims.get("scope", "")).split():
                return True, None
        except tokens.TokenError:
            pass
        try:
            claims = self.verifier.verify(token, self.issuer(request), self.fhir_base(request))
        except tokens.TokenError as exc:
            raise clients.OAuthError("invalid_token", str(exc), 401) from exc
        return False, str(claims["client_id"])

    async def introspect(self, request: Request) -> Response:
        """RFC 7662, with the SMART fields: https://hl7.org/fhir/smart-app-launch/token-introspection.html"""
        try:
            admin, caller = self._caller(request)
            form = await _form(request)
        except clients.OAuthError as exc:
            return _oauth_error(exc)
        inactive = _json({"active": False})
        token = form.get("token", "")
        try:
            claims = self.verifier.verify(token, self.issuer(request), self.fhir_base(request))
        except tokens.TokenError:
            return inactive
        if not admin and claims["client_id"] != caller:
            return inactive
        keep = ("scope", "client_id", "exp", "iat", "sub", "iss", "aud", "jti", "patient", "encounter", "fhirUser",
                *USER_CLAIMS)
        return _json({"active": True, "token_type": "Bearer", **{k: claims[k] for k in keep if k in claims}})

    async def revoke(self, request: Request) -> Response:
        """RFC 7009: the token stops working at once; an unknown or invalid token is not an error."""
        caller: str | None
        try:
            form = await _form(request)
            if "client_assertion" in form:
                client = await clients.authenticate(self.repo, self.client_keys, form,
                                                    f"{self.origin(request)}/auth/token")
                admin, caller = False, client.client_id
            elif "client_id" in form and "authorization" not in request.headers:
                admin, caller = False, clients.public_client(self.repo, form["client_id"]).client_id
            else:
                admin, caller = self._caller(request)
        except clients.OAuthError as exc:
            return _oauth_error(exc)
        try:
            claims = self.verifier.signed_claims(form.get("token", ""))
        except tokens.TokenError:
            refresh = handles.find(self.repo, handles.REFRESH, form.get("token", "")) if form.get("token") else None
            if refresh is not None and refresh.family and (admin or refresh.client_id == caller):
                grants.withdraw(self.repo, refresh)
            return _json({})
        if isinstance(claims.get("jti"), str) and (admin or claims.get("client_id") == caller):
            store.revoke_token(self.repo, claims["jti"], int(claims.get("exp", store.now())))
        return _json({})

    async def jwks(self, request: Request) -> Response:
        return Response(orjson.dumps(self.keys.public_jwks()), 200, media_type="application/json",
                        headers={"Cache-Control": "max-age=60"})

    def _admin(self, request: Request) -> None:
        token = _bearer(request)
        if token is None:
            raise clients.OAuthError("invalid_token", "the admin API needs an admin bearer token "
                                     "(samverka admin token)", 401)
        try:
            claims = self.verifier.verify(token, tokens.ADMIN_ISSUER, tokens.ADMIN_AUDIENCE)
        except tokens.TokenError as exc:
            raise clients.OAuthError("invalid_token", str(exc), 401) from exc
        if "admin" not in str(claims.get("scope", "")).split():
            raise clients.OAuthError("insufficient_scope", "the admin API needs the admin scope", 403)

    async def register(self, request: Request) -> Response:
        """RFC 7591 §3: https://www.rfc-editor.org/rfc/rfc7591#section-3"""
        try:
            self._admin(request)
            raw = await request.body()
            if len(raw) > MAX_FORM_BYTES:
                raise clients.OAuthError("invalid_client_metadata", "the client metadata is too large")
            try:
                meta = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise clients.OAuthError("invalid_client_metadata", "the body must be JSON") from exc
            client = clients.register(self.repo, meta)
        except clients.OAuthError as exc:
            return _oauth_error(exc)
        return _json(client.public(), 201)

    async def list_clients(self, request: Request) -> Response:
        try:
            self._admin(request)
        except clients.OAuthError as exc:
            return _oauth_error(exc)
        return _json([c.public() for c in store.list_clients(self.repo)])

    async def delete_client(self, request: Request) -> Response:
        try:
            self._admin(request)
        except clients.OAuthError as exc:
            return _oauth_error(exc)
        if not store.revoke_client(self.repo, request.path_params["client_id"]):
            return _json({"error": "not_found", "error_description": "no such client"}, 404)
        return Response(status_code=204, headers=_NO_STORE)
