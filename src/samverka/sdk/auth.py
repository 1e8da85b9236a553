"""SMART backend-services authorization for a module: https://hl7.org/fhir/smart-app-launch/backend-services.html

The module signs a short-lived client assertion (RFC 7523, `private_key_jwt`, RS384 or ES384) with its
private key and trades it at the token endpoint for an access token (client_credentials). There is no
refresh token in this flow: `BackendAuth` asks for a new access token `refresh_margin` seconds before
the current one expires, and again once when the server answers 401 (a revoked or rotated token).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGS = ("RS384", "ES384")


class AuthError(Exception):
    """The token endpoint refused: `error` is the OAuth error code, the message its description."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error


@dataclass
class Token:
    access_token: str
    scope: str
    expires_at: float


def load_key(jwk: dict[str, Any]) -> ECKey | RSAKey:
    """A private JWK (dict) as a joserfc key; `kty` picks RSA or EC."""
    if jwk.get("kty") == "RSA":
        return RSAKey.import_key(jwk)
    if jwk.get("kty") == "EC":
        return ECKey.import_key(jwk)
    raise ValueError("the private key must be an RSA or EC JWK")


class BackendAuth:
    """Access tokens for one backend-services client, minted from its private key and kept fresh.
    `clock` decides when a token is due for renewal (tests move it)."""

    def __init__(self, client_id: str, private_jwk: dict[str, Any], scope: str, token_url: str | None = None,
                 alg: str | None = None, kid: str | None = None, refresh_margin: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.client_id = client_id
        self.key = load_key(private_jwk)
        self.alg = alg or private_jwk.get("alg") or ("RS384" if private_jwk.get("kty") == "RSA" else "ES384")
        if self.alg not in ALGS:
            raise ValueError(f"alg must be one of {', '.join(ALGS)}")
        self.kid = kid or private_jwk.get("kid")
        self.scope = scope
        self.token_url = token_url
        self.refresh_margin = refresh_margin
        self.clock = clock
        self.token: Token | None = None
        self.fetched = 0  # access tokens obtained so far
        self._lock = threading.Lock()

    def assertion(self) -> str:
        """A signed client assertion for the token endpoint (valid four minutes, unique jti)."""
        if self.token_url is None:
            raise ValueError("the token endpoint is not known yet (discover it or pass token_url)")
        now = int(time.time())  # the server checks iat/exp against real time
        header = {"alg": self.alg, "typ": "JWT", **({"kid": self.kid} if self.kid else {})}
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url, "iat": now,
                  "exp": now + 240, "jti": uuid.uuid4().hex}
        return jwt.encode(header, claims, self.key, algorithms=[self.alg])

    def form(self) -> dict[str, str]:
        return {"grant_type": "client_credentials", "scope": self.scope, "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion()}

    def fresh(self) -> str | None:
        """The current access token while it has more than `refresh_margin` seconds left, else None."""
        t = self.token
        if t is not None and t.expires_at - self.refresh_margin > self.clock():
            return t.access_token
        return None

    def accept(self, response: httpx.Response) -> str:
        """Take a token endpoint answer; AuthError when it is a refusal."""
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            raise AuthError(response.status_code, str(body.get("error", "invalid_response")),
                            str(body.get("error_description", response.text[:200])))
        self.token = Token(str(body["access_token"]), str(body.get("scope", "")),
                           self.clock() + float(body.get("expires_in", 300)))
        self.fetched += 1
        return self.token.access_token

    def get(self, http: httpx.Client, force: bool = False) -> str:
        """A valid access token (sync), fetched when missing, near expiry, or `force`d."""
        with self._lock:
            token = None if force else self.fresh()
            if token is None:
                assert self.token_url is not None
                token = self.accept(http.post(self.token_url, data=self.form()))
            return token

    async def aget(self, http: httpx.AsyncClient, force: bool = False) -> str:
        """A valid access token (async)."""
        token = None if force else self.fresh()
        if token is None:
            if self.token_url is None:
                raise ValueError("the token endpoint is not known yet (discover it or pass token_url)")
            token = self.accept(await http.post(self.token_url, data=self.form()))
        return token
