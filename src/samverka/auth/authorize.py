"""The authorization endpoint, the embedded login page and EHR launch contexts.

https://hl7.org/fhir/smart-app-launch/app-launch.html#obtain-authorization-code. `/auth/authorize`
(GET or POST) checks the client and its exactly-registered redirect_uri (errors before that are shown,
never redirected), then PKCE S256 (plain is refused), `aud`, the scopes and the launch context, and
shows a login form. `/auth/login` walks the user through password, assignment (when the user holds
several PractitionerRoles) and, for `launch/patient`, a patient; then it redirects to the app with a
single-use code and the `state`. No consent page: apps are registered by an administrator.
`POST /auth/launch` (admin) stores an EHR launch context and returns its opaque `launch` id.
"""

from __future__ import annotations

import html
import re
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..sweden.identifiers import PERSONNUMMER
from . import grants, handles, store, users
from .clients import OAuthError

if TYPE_CHECKING:
    from .endpoints import AuthServer

REQUEST_LIFETIME = 600  # seconds to log in
LAUNCH_LIFETIME = 3600
MAX_LOGIN_FAILURES = 5
COOKIE = "samverka_login"
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256, unpadded
_PAGE_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache", "X-Frame-Options": "DENY",
                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                 "Referrer-Policy": "no-referrer"}
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#222}"
          "label{display:block;margin:.8rem 0 .2rem}input[type=text],input[type=password]{width:100%;padding:.4rem}"
          "button{margin-top:1rem;padding:.5rem 1.2rem}.error{color:#a00}.app{color:#555}fieldset{border:0;padding:0}")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str, status: int = 200, cookie: str | None = None, secure: bool = False) -> Response:
    """An HTML page of the login flow: no caching, no framing, no scripts."""
    doc = (f'<!doctype html><html lang="sv"><head><meta charset="utf-8"><title>{_e(title)} – Samverka</title>'
           f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style></head>'
           f"<body><h1>{_e(title)}</h1>{body}</body></html>")
    response = Response(doc, status, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)
    if cookie is not None:
        response.set_cookie(COOKIE, cookie, max_age=REQUEST_LIFETIME, path="/auth", httponly=True, samesite="lax",
                            secure=secure)
    return response


def _error_page(message: str, status: int = 400) -> Response:
    return page("Inloggningen kan inte fortsätta", f'<p class="error">{_e(message)}</p>', status)


def _with_query(uri: str, params: dict[str, str]) -> str:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def _redirect(uri: str, params: dict[str, str | None]) -> Response:
    kept = {k: v for k, v in params.items() if v is not None}
    return RedirectResponse(_with_query(uri, kept), 303, headers={"Cache-Control": "no-store"})


class _Refused(Exception):
    """An authorization request refused after its redirect_uri is known: the app learns why by redirect."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error


def _hidden(handle: str) -> str:
    return f'<input type="hidden" name="request" value="{_e(handle)}">'


def _login_form(handle: str, client_name: str, error: str | None = None, username: str = "") -> str:
    err = f'<p class="error">{_e(error)}</p>' if error else ""
    return (f'<p class="app">{_e(client_name)} vill komma åt Samverka för din räkning.</p>{err}'
            f'<form method="post" action="/auth/login">{_hidden(handle)}'
            f'<label for="username">HSA-id</label><input type="text" id="username" name="username" '
            f'value="{_e(username)}" autocomplete="username" required autofocus>'
            '<label for="password">Lösenord</label><input type="password" id="password" name="password" '
            'autocomplete="current-password" required><button type="submit">Logga in</button></form>')


def _assignment_form(handle: str, user: users.User) -> str:
    options = "".join(
        f'<label><input type="radio" name="assignment" value="{_e(a.practitioner_role)}"{" checked" if i == 0 else ""}>'
        f" {_e(a.care_unit_name)} ({_e(a.care_unit)}){' – ' + _e(a.role) if a.role else ''}"
        f"{' – ' + _e(a.purpose) if a.purpose else ''}</label>"
        for i, a in enumerate(user.assignments))
    return (f"<p>Inloggad som {_e(user.name)} ({_e(user.hsa_id)}). Välj medarbetaruppdrag:</p>"
            f'<form method="post" action="/auth/login">{_hidden(handle)}<fieldset>{options}</fieldset>'
            '<button type="submit">Fortsätt</button></form>')


def _patient_form(handle: str, error: str | None = None) -> str:
    err = f'<p class="error">{_e(error)}</p>' if error else ""
    return (f"<p>Appen behöver en patient.</p>{err}"
            f'<form method="post" action="/auth/login">{_hidden(handle)}'
            '<label for="patient">Patient (id eller personnummer, 12 siffror)</label>'
            '<input type="text" id="patient" name="patient" required autofocus>'
            '<button type="submit">Välj patient</button></form>')


class AppLaunch:
    """The authorization-code flow's browser side, for one `AuthServer`."""

    def __init__(self, server: AuthServer) -> None:
        self.server = server
        self.repo = server.repo

    async def authorize(self, request: Request) -> Response:
        """https://hl7.org/fhir/smart-app-launch/app-launch.html#request-4"""
        from .endpoints import _form  # the endpoints' size-limited, duplicate-refusing form parser

        try:
            if request.method == "POST":
                params = await _form(request)
            else:
                params = {}
                for k, v in parse_qsl(request.url.query, keep_blank_values=True):
                    if k in params:
                        raise OAuthError("invalid_request", f"parameter {k} appears more than once")
                    params[k] = v
        except OAuthError as exc:
            return _error_page(str(exc))
        client = store.get_client(self.repo, params.get("client_id", "")) if params.get("client_id") else None
        if client is None or client.revoked is not None:
            return _error_page("Okänd klient (client_id): appen är inte registrerad här.")
        if "authorization_code" not in client.grant_types:
            return _error_page("Appen är inte registrerad för authorization_code.")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.metadata.get("redirect_uris", []):
            return _error_page("redirect_uri stämmer inte med någon som appen har registrerat.")
        state = params.get("state")
        try:
            data = self._check(request, client, params)
        except _Refused as exc:
            return _redirect(redirect_uri, {"error": exc.error, "error_description": str(exc), "state": state})
        cookie = secrets.token_urlsafe(24)
        data.update(client_id=client.client_id, redirect_uri=redirect_uri, state=state,
                    cookie=handles.digest(cookie), failures=0)
        handle = handles.create(self.repo, handles.REQUEST, data, REQUEST_LIFETIME, client.client_id)
        return page("Logga in", _login_form(handle, client.name), cookie=cookie,
                    secure=self.server.origin(request).startswith("https:"))

    def _check(self, request: Request, client: store.Client, params: dict[str, str]) -> dict[str, Any]:
        if params.get("response_type") != "code":
            raise _Refused("unsupported_response_type", "response_type must be code")
        if not params.get("state"):
            raise _Refused("invalid_request", "state is required")
        if params.get("code_challenge_method") != "S256":
            raise _Refused("invalid_request", "code_challenge_method must be S256 (plain PKCE is not supported)")
        challenge = params.get("code_challenge", "")
        if not _CHALLENGE.fullmatch(challenge):
            raise _Refused("invalid_request", "code_challenge must be the base64url SHA-256 of the code_verifier")
        aud = params.get("aud") or params.get("resource")
        if not aud:
            raise _Refused("invalid_request", "aud (this server's FHIR base URL) is required")
        if aud.rstrip("/") != self.server.fhir_base(request):
            raise _Refused("invalid_request", "aud is not this server's FHIR base URL")
        requested = params.get("scope", "")
        if not requested.strip():
            raise _Refused("invalid_scope", "scope is required")
        try:
            scope = grants.user_scope(requested, client.scope)
        except OAuthError as exc:
            raise _Refused("invalid_scope", str(exc)) from exc
        if not scope:
            raise _Refused("invalid_scope", "none of the requested scopes is registered for this client")
        granted = scope.split()
        patient = encounter = None
        launch = params.get("launch")
        if launch is not None:
            if "launch" not in granted:
                raise _Refused("invalid_scope", "an EHR launch needs the launch scope (registered for the client)")
            ctx = handles.get(self.repo, handles.LAUNCH, launch)
            if ctx is None or (ctx.client_id is not None and ctx.client_id != client.client_id):
                raise _Refused("invalid_request", "the launch parameter is unknown or has expired")
            patient, encounter = ctx.data.get("patient"), ctx.data.get("encounter")
        elif "launch" in granted:
            raise _Refused("invalid_request", "the launch scope needs the launch parameter from the EHR")
        return {"scope": scope, "code_challenge": challenge, "nonce": params.get("nonce"), "patient": patient,
                "encounter": encounter, "needs_patient": "launch/patient" in granted and patient is None}

    async def login(self, request: Request) -> Response:
        """The login form's steps: password, assignment, patient; then the code goes to the app."""
        from .endpoints import _form

        try:
            form = await _form(request)
        except OAuthError as exc:
            return _error_page(str(exc))
        handle = form.get("request", "")
        pending = handles.get(self.repo, handles.REQUEST, handle) if handle else None
        if pending is None:
            return _error_page("Inloggningen har gått ut. Börja om från appen.")
        data = pending.data
        if handles.digest(request.cookies.get(COOKIE, "")) != data["cookie"]:
            return _error_page("Inloggningen måste fortsätta i samma webbläsare.", 403)
        client = store.get_client(self.repo, data["client_id"])
        if client is None or client.revoked is not None:
            return _error_page("Appen är inte längre registrerad.")
        if not data.get("user"):
            hsa_id, password = form.get("username", "").strip(), form.get("password", "")
            if not users.check_password(self.repo, hsa_id, password):
                data["failures"] = int(data.get("failures", 0)) + 1
                if data["failures"] >= MAX_LOGIN_FAILURES:
                    handles.consume(self.repo, handles.REQUEST, handle)
                    return _error_page("För många misslyckade försök. Börja om från appen.", 403)
                handles.update(self.repo, handles.REQUEST, handle, data)
                return page("Logga in", _login_form(handle, client.name, "Fel HSA-id eller lösenord.", hsa_id))
            data["user"], data["auth_time"] = hsa_id, store.now()
        user = users.lookup(self.repo, data["user"])
        if user is None or not user.assignments:
            handles.consume(self.repo, handles.REQUEST, handle)
            return _error_page("Användaren har inget aktivt medarbetaruppdrag.", 403)
        if not data.get("assignment"):
            picked = user.assignment(form.get("assignment", "")) if form.get("assignment") else None
            if len(user.assignments) == 1:
                data["assignment"] = user.assignments[0].practitioner_role
            elif picked is not None:
                data["assignment"] = picked.practitioner_role
            else:
                handles.update(self.repo, handles.REQUEST, handle, data)
                return page("Välj uppdrag", _assignment_form(handle, user))
        assignment = user.assignment(data["assignment"])
        if assignment is None:
            handles.consume(self.repo, handles.REQUEST, handle)
            return _error_page("Uppdraget är inte längre aktivt.", 403)
        if data.get("needs_patient") and not data.get("patient"):
            wanted = form.get("patient", "").strip()
            found = self._patient(wanted) if wanted else None
            if found is None:
                handles.update(self.repo, handles.REQUEST, handle, data)
                return page("Välj patient", _patient_form(handle, "Ingen sådan patient." if wanted else None))
            data["patient"] = found
        done, _ = handles.consume(self.repo, handles.REQUEST, handle)
        if done is None:
            return _error_page("Inloggningen har redan slutförts eller gått ut. Börja om från appen.")
        grant = {"client_id": data["client_id"], "redirect_uri": data["redirect_uri"], "scope": data["scope"],
                 "code_challenge": data["code_challenge"], "user": user.claims(assignment),
                 "patient": data.get("patient"), "encounter": data.get("encounter"), "nonce": data.get("nonce"),
                 "auth_time": data.get("auth_time")}
        code = handles.create(self.repo, handles.CODE, grant, grants.CODE_LIFETIME, data["client_id"],
                              grants.new_family())
        response = _redirect(data["redirect_uri"], {"code": code, "state": data.get("state")})
        response.delete_cookie(COOKIE, path="/auth")
        return response

    def _patient(self, wanted: str) -> str | None:
        """A Patient id, by id or by personnummer (12 digits)."""
        if re.fullmatch(r"\d{12}", wanted):
            ids = users.search_ids(self.repo, "Patient", [("identifier", f"{PERSONNUMMER}|{wanted}")], 2)
            return ids[0] if len(ids) == 1 else None
        if not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", wanted):
            return None
        v = self.repo.read("Patient", wanted)
        return wanted if v is not None and not v.deleted else None

    async def create_launch(self, request: Request) -> Response:
        """Admin: store an EHR launch context; the EHR passes the returned `launch` to the app."""
        from .endpoints import _json, _oauth_error

        try:
            self.server._admin(request)
            raw = await request.body()
            try:
                body = orjson.loads(raw) if len(raw) <= 64 * 1024 else None
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                raise OAuthError("invalid_request", "the body must be a JSON object: patient, encounter, client_id")
            ctx: dict[str, str] = {}
            for name, type_ in (("patient", "Patient"), ("encounter", "Encounter")):
                value = body.get(name)
                if value is None:
                    continue
                v = self.repo.read(type_, value) if isinstance(value, str) and value else None
                if v is None or v.deleted:
                    raise OAuthError("invalid_request", f"{name} must be the id of an existing {type_}")
                ctx[name] = value
            if "patient" not in ctx:
                raise OAuthError("invalid_request", "patient is required")
            client_id = body.get("client_id")
            if client_id is not None and (not isinstance(client_id, str) or store.get_client(self.repo, client_id)
                                          is None):
                raise OAuthError("invalid_request", "client_id is not a registered client")
        except OAuthError as exc:
            return _oauth_error(exc)
        launch = handles.create(self.repo, handles.LAUNCH, ctx, LAUNCH_LIFETIME, client_id)
        return _json({"launch": launch, "expires_in": LAUNCH_LIFETIME, **ctx}, 201)
