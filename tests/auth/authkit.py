"""Auth test helpers: real JWT client code (joserfc) and a handle on a live `samverka serve --auth on`.

Client assertions are minted with joserfc from the SMART IG example keys, as a module would; admin
tokens come from `samverka admin token` against the server's own store.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from support.server import RunningServer, samverka_command

KEYS = Path("/work/shared/conformance/smart-app-launch/ig-example-keys")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class ClientKey:
    """A client's signing key (private, for assertions) and its public JWKS (for registration)."""

    alg: str
    kid: str
    private: ECKey | RSAKey
    public_jwks: dict[str, Any]


def ig_key(alg: str) -> ClientKey:
    """The SMART IG example key pair for RS384 or ES384."""
    private = next(k for k in json.loads((KEYS / f"{alg}.private.json").read_text())["keys"] if "d" in k)
    public = json.loads((KEYS / f"{alg}.public.json").read_text())
    key = RSAKey.import_key(private) if alg == "RS384" else ECKey.import_key(private)
    return ClientKey(alg, private["kid"], key, public)


def fresh_key(alg: str = "ES384") -> ClientKey:
    """A newly generated key pair (a different client, or a wrong key)."""
    key: ECKey | RSAKey
    if alg == "ES384":
        key = ECKey.generate_key("P-384", parameters={"alg": alg}, auto_kid=True)
    else:
        key = RSAKey.generate_key(2048, parameters={"alg": alg}, auto_kid=True)
    return ClientKey(alg, str(key.kid), key, {"keys": [key.as_dict(private=False)]})


def assertion(key: ClientKey, client_id: str, aud: str, **claims: Any) -> str:
    """A client assertion JWT (SMART backend services), with claim overrides (None removes a claim)."""
    now = int(time.time())
    body: dict[str, Any] = {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + 240,
                            "jti": uuid.uuid4().hex}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode({"alg": key.alg, "kid": key.kid, "typ": "JWT"}, body, key.private, algorithms=[key.alg])


@dataclass
class AuthServer:
    """A running server with auth on: `.srv.client` (no token), the origin and the store's CLI arguments."""

    srv: RunningServer
    store_args: list[str]

    @property
    def origin(self) -> str:
        return self.srv.base.removesuffix("/fhir")

    @property
    def token_url(self) -> str:
        return f"{self.origin}/auth/token"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*samverka_command(), *args, *self.store_args], capture_output=True, text=True,
                              timeout=120, check=False)

    def admin_token(self) -> str:
        r = self.cli("admin", "token")
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def register(self, scope: str, key: ClientKey | None = None, **meta: Any) -> str:
        body: dict[str, Any] = {"client_name": f"module-{uuid.uuid4().hex[:6]}", "scope": scope,
                                "token_endpoint_auth_method": "private_key_jwt"}
        if key is not None:
            body["jwks"] = key.public_jwks
        body.update(meta)
        r = httpx.post(f"{self.origin}/auth/register", json=body,
                       headers={"Authorization": f"Bearer {self.admin_token()}"}, timeout=30)
        assert r.status_code == 201, r.text
        return str(r.json()["client_id"])

    def token_response(self, client_id: str, key: ClientKey, scope: str, **claims: Any) -> httpx.Response:
        aud = claims.pop("aud", self.token_url)
        form = {"grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion(key, client_id, aud, **claims)}
        return httpx.post(self.token_url, data=form, timeout=30)

    def token(self, client_id: str, key: ClientKey, scope: str) -> str:
        r = self.token_response(client_id, key, scope)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def fhir(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.srv.base, timeout=60,
                            headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"})
