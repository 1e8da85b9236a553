"""Signing keys with rotation, and the server's access tokens (JWT, RFC 9068): https://www.rfc-editor.org/rfc/rfc9068

Keys live in the database, so every worker process and `samverka admin token` share them. The
newest unretired key signs (ES256). Rotation (`samverka admin rotate-keys`, or automatically once a
key is `ROTATE_AFTER` old) retires it; a retired key stays in `/auth/jwks` and verifies for
`RETIRED_KEPT` seconds, longer than any token it signed can live.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from ..store import Repository
from . import store

ALG = "ES256"
ACCESS_LIFETIME = 300  # seconds; SMART backend services: SHOULD NOT exceed 300
ADMIN_LIFETIME = 900
ADMIN_AUDIENCE = "urn:samverka:admin"
ADMIN_ISSUER = "urn:samverka:local-admin"
ROTATE_AFTER = 30 * 86400
RETIRED_KEPT = 2 * 3600  # > the longest token lifetime (the demo token: 1 h) plus every key cache's age
DEMO_LIFETIME = 3600
CACHE_SECONDS = 30.0


class TokenError(Exception):
    """An access token that must not be accepted; the message says why (never the token itself)."""


def new_key() -> store.KeyRow:
    key = ECKey.generate_key("P-256", parameters={"alg": ALG, "use": "sig"}, auto_kid=True)
    return store.KeyRow(str(key.kid), ALG, key.as_dict(private=True), key.as_dict(private=False),
                        store.now(), None)


def rotate(repo: Repository) -> str:
    """Install a new signing key now; the old one keeps verifying until its tokens expire. Returns the kid."""
    key = new_key()
    store.install_key(repo, key, None, store.now() - RETIRED_KEPT)
    return key.kid


class KeyRing:
    """This process's view of the signing keys: re-read every `CACHE_SECONDS`, or when a token names
    a kid not yet seen (at most once a second per kid)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._lock = threading.Lock()
        self._rows: list[store.KeyRow] = []
        self._set: KeySet | None = None
        self._loaded = 0.0
        self._tried: dict[str, float] = {}  # unknown kids and when the keys were last re-read for them

    def _load(self) -> None:
        rows = store.published_keys(self.repo, store.now() - RETIRED_KEPT)
        active = [r for r in rows if r.retired is None]
        if not active or active[0].created < store.now() - ROTATE_AFTER:
            cutoff = store.now() - ROTATE_AFTER if active else None
            store.install_key(self.repo, new_key(), cutoff, store.now() - RETIRED_KEPT)
            rows = store.published_keys(self.repo, store.now() - RETIRED_KEPT)
        self._rows = rows
        self._set = KeySet.import_key_set({"keys": [r.public_jwk for r in rows]})
        self._loaded = time.monotonic()

    def _fresh(self, max_age: float = CACHE_SECONDS) -> None:
        with self._lock:
            if self._set is None or time.monotonic() - self._loaded > max_age:
                self._load()

    def signing(self) -> store.KeyRow:
        self._fresh()
        return next(r for r in self._rows if r.retired is None)

    def public_jwks(self) -> dict[str, Any]:
        """The JWKS served at /auth/jwks: public halves only, read afresh (a rotation shows at once)."""
        self._fresh(max_age=0.0)
        return {"keys": [r.public_jwk for r in self._rows]}

    def verification_set(self, kid: str | None) -> KeySet:
        self._fresh()
        if kid is not None and all(r.kid != kid for r in self._rows):
            # another process may have installed it a moment ago (two workers' first mints each install a
            # key; a rotation): read the keys again, once per unknown kid and second, so a token naming a
            # new key verifies on every worker at once and made-up kids cost one indexed read each
            with self._lock:
                t = time.monotonic()
                if t - self._tried.get(kid, -2.0) > 1.0:
                    if len(self._tried) > 1024:
                        self._tried.clear()
                    self._tried[kid] = t
                    self._load()
        assert self._set is not None
        return self._set


def mint(keys: KeyRing, claims: dict[str, Any], lifetime: int, typ: str = "at+jwt") -> tuple[str, dict[str, Any]]:
    """Sign an access token (or, with typ JWT, an id_token); returns (token, its claims). Adds iat, exp and jti."""
    key = keys.signing()
    t = store.now()
    full = {**claims, "iat": t, "exp": t + lifetime, "jti": uuid.uuid4().hex}
    jwk = ECKey.import_key(key.private_jwk)
    token = jwt.encode({"alg": key.alg, "kid": key.kid, "typ": typ}, full, jwk, algorithms=[ALG])
    return token, full


def admin_token(repo: Repository) -> str:
    """A short-lived token for the admin API (client registration and management)."""
    token, _ = mint(KeyRing(repo), {"iss": ADMIN_ISSUER, "aud": ADMIN_AUDIENCE, "sub": "samverka-admin",
                                    "client_id": "samverka-admin", "scope": "admin"}, ADMIN_LIFETIME)
    return token


def demo_token(repo: Repository, origin: str, scope: str = "system/*.cruds") -> str:
    """A one-hour access token for trying the demo with curl (`serve --demo` prints it)."""
    token, _ = mint(KeyRing(repo), {"iss": f"{origin}/auth", "aud": f"{origin}/fhir", "sub": "samverka-demo",
                                    "client_id": "samverka-demo", "scope": scope}, DEMO_LIFETIME)
    return token


class Verifier:
    """Checks signature, typ, exp, issuer and audience; signatures are checked once per token and
    remembered, while expiry and revocation are checked on every use."""

    def __init__(self, keys: KeyRing, cache_size: int = 4096) -> None:
        self.keys = keys
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._size = cache_size
        self._lock = threading.Lock()

    def verify(self, token: str, issuer: str, audience: str) -> dict[str, Any]:
        return self.verify_with_marker(token, issuer, audience)[0]

    def verify_with_marker(self, token: str, issuer: str, audience: str) -> tuple[dict[str, Any], tuple[int, int]]:
        """The claims, and (the PDL change marker, the store's write mark) read with the revocation check
        (`store.token_state`)."""
        with self._lock:
            claims = self._cache.get(token)
            if claims is not None:
                self._cache.move_to_end(token)
        if claims is None:
            claims = self.signed_claims(token)
            with self._lock:
                self._cache[token] = claims
                if len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= store.now():
            raise TokenError("the access token has expired")
        if claims.get("iss") != issuer:
            raise TokenError("the access token was not issued for this server")
        aud = claims.get("aud")
        if aud != audience and not (isinstance(aud, list) and audience in aud):
            raise TokenError("the access token is for another audience")
        if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("client_id"), str):
            raise TokenError("the access token lacks jti or client_id")
        withdrawn, marker, mark = store.token_state(self.keys.repo, claims["jti"], claims["client_id"],
                                                    int(claims.get("iat") or 0))
        if withdrawn:
            raise TokenError("the access token was revoked")
        return claims, (marker, mark)

    def signed_claims(self, token: str) -> dict[str, Any]:
        """The claims of a token this server signed (expired or not); TokenError otherwise."""
        with self._lock:
            known = self._cache.get(token)
        if known is not None:
            return known
        try:
            header = _header(token)
            keyset = self.keys.verification_set(header.get("kid"))
            decoded = jwt.decode(token, keyset, algorithms=[ALG])
        except (JoseError, ValueError) as exc:
            raise TokenError("the access token is malformed or its signature does not verify") from exc
        if decoded.header.get("typ") != "at+jwt":
            raise TokenError("not an access token")
        return dict(decoded.claims)


def _header(token: str) -> dict[str, Any]:
    """The protected header, read before the signature is checked (to pick the key by kid)."""
    return dict(jws.extract_compact(token.encode()).protected)
