"""App-launch test helpers: a live server with the demo region's staff, logins, a trusted issuer, and a
browser-like httpx client that follows /auth/authorize, posts the login form and exchanges the code.

https://hl7.org/fhir/smart-app-launch/app-launch.html. Nothing here is faked: the server is a real
`samverka serve --auth on` subprocess, PKCE verifiers and issuer assertions are made with joserfc.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.server
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authkit import AuthServer, ClientKey, fresh_key

from samverka.generate.region import build_region
from support.server import BACKENDS, RunningServer, launch

ISSUER = "https://idp.region.example/realms/siths"
URL_ISSUER = "https://login.region.example"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REDIRECT = "http://127.0.0.1:9/callback"
APP_SCOPE = "launch launch/patient openid fhirUser offline_access patient/*.rs user/*.rs"

_REGION = build_region()
DOCTOR = _REGION.unit("vardcentral").doctors[0]  # one assignment
TWO_UNITS = _REGION.unit("medicin").doctors[0]  # gets a second assignment at the emergency unit
AKUT = _REGION.unit("akut")
PASSWORD = "correct horse battery staple"


def pkce() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge): RFC 7636 §4.1-4.2."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def hidden(page: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert m, page
    return html.unescape(m.group(1))


@dataclass
class LaunchServer:
    """A live server with the region loaded, logins for two practitioners and trusted issuers."""

    auth: AuthServer
    system_token: str
    idp_key: ClientKey
    url_idp_key: ClientKey
    patient: str
    encounter: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return self.auth.origin

    @property
    def fhir_base(self) -> str:
        return self.auth.srv.base

    def admin_token(self) -> str:
        """One admin token per module (they live 15 minutes; `samverka admin token` is a subprocess)."""
        if "admin" not in self.extra:
            self.extra["admin"] = self.auth.admin_token()
        return str(self.extra["admin"])

    def register_app(self, scope: str = APP_SCOPE, public: bool = True, key: ClientKey | None = None,
                     grant_types: list[str] | None = None, redirect_uris: list[str] | None = None) -> str:
        meta: dict[str, Any] = {"redirect_uris": redirect_uris or [REDIRECT],
                                "grant_types": grant_types or ["authorization_code", "refresh_token"]}
        body: dict[str, Any] = {"client_name": f"app-{uuid.uuid4().hex[:6]}", "scope": scope, **meta,
                                "token_endpoint_auth_method": "none" if public else "private_key_jwt"}
        if key is not None:
            body["jwks"] = key.public_jwks
        r = self.admin("POST", "/auth/register", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["client_id"])

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.origin}{path}", timeout=30,
                             headers={"Authorization": f"Bearer {self.admin_token()}"}, **kw)

    def authorize_params(self, client_id: str, challenge: str, **over: Any) -> dict[str, str]:
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
                  "scope": "openid fhirUser user/*.rs offline_access", "state": uuid.uuid4().hex,
                  "aud": self.fhir_base, "code_challenge": challenge, "code_challenge_method": "S256"}
        params.update(over)
        return {k: v for k, v in params.items() if v is not None}

    def login(self, client_id: str, user: str = DOCTOR.id, password: str = PASSWORD, assignment: str | None = None,
              patient: str | None = None, **over: Any) -> tuple[dict[str, list[str]], str, dict[str, str]]:
        """Browse through authorize and the login form; returns (redirect query, verifier, authorize params)."""
        verifier, challenge = pkce()
        params = self.authorize_params(client_id, challenge, **over)
        with httpx.Client(timeout=30, follow_redirects=False) as browser:
            r = browser.get(f"{self.origin}/auth/authorize", params=params)
            assert r.status_code == 200, r.text
            form = {"request": hidden(r.text, "request"), "username": user, "password": password}
            r = browser.post(f"{self.origin}/auth/login", data=form)
            if "name=\"assignment\"" in r.text:
                assert assignment is not None, "the user has several assignments: pick one"
                r = browser.post(f"{self.origin}/auth/login",
                                 data={"request": hidden(r.text, "request"), "assignment": assignment})
            if "name=\"patient\"" in r.text:
                assert patient is not None, "the app asked for launch/patient: pick one"
                r = browser.post(f"{self.origin}/auth/login",
                                 data={"request": hidden(r.text, "request"), "patient": patient})
            assert r.status_code == 303, r.text
            location = r.headers["location"]
        assert location.startswith(REDIRECT + "?"), location
        return parse_qs(urlsplit(location).query), verifier, params

    def exchange(self, client_id: str, code: str, verifier: str, redirect_uri: str = REDIRECT,
                 **extra: str) -> httpx.Response:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": verifier, "client_id": client_id, **extra}
        return httpx.post(self.auth.token_url, data=form, timeout=30)

    def user_tokens(self, client_id: str, **over: Any) -> dict[str, Any]:
        query, verifier, _ = self.login(client_id, **over)
        r = self.exchange(client_id, query["code"][0], verifier)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def introspect(self, token: str) -> dict[str, Any]:
        r = self.admin("POST", "/auth/introspect", data={"token": token})
        assert r.status_code == 200, r.text
        return dict(r.json())


def issuer_assertion(key: ClientKey, aud: str, issuer: str = ISSUER, **claims: Any) -> str:
    """An assertion from the region's login service (RFC 7523 §3), with overrides (None drops a claim)."""
    from joserfc import jwt

    now = int(time.time())
    body: dict[str, Any] = {"iss": issuer, "sub": DOCTOR.id, "assignment": DOCTOR.unit_id, "aud": aud,
                            "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode({"alg": key.alg, "kid": key.kid, "typ": "JWT"}, body, key.private, algorithms=[key.alg])


class _Jwks(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module", params=BACKENDS)
def launch_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchServer]:
    """`serve --auth on --trust-issuer` (a file JWKS and a loopback-URL JWKS), region and logins loaded."""
    backend = str(request.param)
    tmp = tmp_path_factory.mktemp(f"launch-{backend}")
    idp_key, url_key = fresh_key("RS384"), fresh_key("ES384")
    jwks_file = tmp / "idp-jwks.json"
    jwks_file.write_text(json.dumps(idp_key.public_jwks))
    handler = type("Jwks", (_Jwks,), {"body": json.dumps(url_key.public_jwks).encode()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    jwks_url = f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"
    srv: RunningServer = launch(request, backend, tmp / "data", [
        "--auth", "on", "--trust-issuer", f"{ISSUER}={jwks_file}", "--trust-issuer", f"{URL_ISSUER}={jwks_url}"])
    try:
        args = srv.args
        store_args = (["--database", args[args.index("--database") + 1]] if "--database" in args
                      else ["--data-dir", args[args.index("--data-dir") + 1]])
        auth = AuthServer(srv, store_args)
        key = fresh_key("ES384")
        loader = auth.register("system/*.cruds", key)
        token = auth.token(loader, key, "system/*.cruds")
        with auth.fhir(token) as fhir:
            r = fhir.post("", json=_REGION.bundle)
            assert r.status_code == 200, r.text
            second = {"resourceType": "PractitionerRole", "id": f"{TWO_UNITS.id}.uppdrag-2", "active": True,
                      "practitioner": {"reference": f"Practitioner/{TWO_UNITS.id}"},
                      "organization": {"reference": f"Organization/{AKUT.id}"},
                      "code": [{"text": "Läkare"}]}
            assert fhir.put(f"/PractitionerRole/{second['id']}", json=second).status_code in (200, 201)
            patient = {"resourceType": "Patient", "id": "pat-1", "identifier": [
                {"system": "http://electronichealth.se/identifier/personnummer", "value": "191212121212"}],
                "name": [{"family": "Tolvansson", "given": ["Tolvan"]}]}
            assert fhir.put("/Patient/pat-1", json=patient).status_code in (200, 201)
            encounter = {"resourceType": "Encounter", "id": "enc-1", "status": "in-progress",
                         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                         "subject": {"reference": "Patient/pat-1"},
                         # a care relationship with DOCTOR's unit (Patientdatalagen, auth.pdl)
                         "serviceProvider": {"reference": f"Organization/{DOCTOR.unit_id}"}}
            assert fhir.put("/Encounter/enc-1", json=encounter).status_code in (200, 201)
        for hsa in (DOCTOR.id, TWO_UNITS.id):
            r = _cli_stdin(auth, PASSWORD + "\n", "user", "add", "--hsa-id", hsa, "--password-stdin")
            assert r.returncode == 0, r.stderr
        yield LaunchServer(auth, token, idp_key, url_key, "pat-1", "enc-1", {"jwks_file": jwks_file})
    finally:
        srv.stop()
        httpd.shutdown()


def _cli_stdin(auth: AuthServer, stdin: str, *args: str) -> Any:
    import subprocess

    from support.server import samverka_command

    return subprocess.run([*samverka_command(), *args, *auth.store_args], input=stdin, capture_output=True,
                          text=True, timeout=120, check=False)

