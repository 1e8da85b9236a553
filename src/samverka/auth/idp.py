"""Trusted external identity providers: the JWT-bearer grant (RFC 7523 §2.1) https://www.rfc-editor.org/rfc/rfc7523

`samverka serve --trust-issuer ISSUER=JWKS` (repeatable) trusts an issuer whose public keys are in a
JWK Set file or at a loopback URL. A region's login service (for example one built on SITHS) signs
an assertion with `iss` = ISSUER, `sub` = the user's HSA-id, `assignment` = the HSA-id of the care
unit the user acts for, `aud` = this server's token endpoint and `exp` at most five minutes ahead;
`iat`, `nbf` and `jti` are checked when present (a repeated `jti` is a replay).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..store import Repository
from . import store
from .clients import OAuthError, is_loopback_url

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "ES256", "ES384"]
MAX_LIFETIME = 300  # seconds: exp at most five minutes ahead (and after iat)
CLOCK_SKEW = 60
REFRESH_EVERY = 300.0  # seconds between re-reads of an issuer's JWKS; sooner (at most every 10 s) for a new kid
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k", "oth")


def _grant_error(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


def parse_trust(spec: str) -> tuple[str, str]:
    """'ISSUER=JWKS' → (issuer, JWKS file path or loopback URL); ValueError when malformed."""
    issuer, sep, source = spec.partition("=")
    issuer, source = issuer.strip(), source.strip()
    if not sep or not issuer or not source:
        raise ValueError(f"--trust-issuer takes ISSUER=JWKS (a file or a loopback URL), not {spec!r}")
    if source.startswith(("http://", "https://")):
        if not is_loopback_url(source):
            raise ValueError(f"the JWKS URL of {issuer} must be on a loopback address: {source}")
    elif not Path(source).is_file():
        raise ValueError(f"the JWKS file of {issuer} does not exist: {source}")
    return issuer, source


def _public_keys(value: Any) -> KeySet:
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise ValueError("not a JWK Set with at least one key")
    for k in value["keys"]:
        if not isinstance(k, dict) or k.get("kty") not in ("RSA", "EC") or any(m in k for m in _PRIVATE_MEMBERS):
            raise ValueError("a trusted issuer's JWKS must hold public RSA or EC keys only")
    return KeySet.import_key_set(cast(Any, value))


@dataclass
class _Issuer:
    name: str
    source: str
    keys: KeySet | None = None
    loaded: float = 0.0
    mtime: float = -1.0


class TrustedIssuers:
    """The issuers this server trusts, each with its keys (re-read from the file or URL when stale)."""

    def __init__(self, specs: tuple[str, ...] | list[str]) -> None:
        self._issuers: dict[str, _Issuer] = {}
        for spec in specs:
            name, source = parse_trust(spec)
            self._issuers[name] = _Issuer(name, source)

    def __bool__(self) -> bool:
        return bool(self._issuers)

    async def _keys(self, issuer: _Issuer, kid: str | None) -> KeySet:
        is_url = issuer.source.startswith(("http://", "https://"))
        age = time.monotonic() - issuer.loaded
        if issuer.keys is not None and age < REFRESH_EVERY:
            known = kid is None or any(k.kid == kid for k in issuer.keys.keys)
            unchanged = is_url or _mtime(issuer.source) == issuer.mtime
            if unchanged and (known or age < 10.0):
                return issuer.keys
        try:
            if is_url:
                async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as http:
                    r = await http.get(issuer.source, headers={"Accept": "application/json"})
                r.raise_for_status()
                issuer.keys = _public_keys(r.json())
            else:
                path = Path(issuer.source)
                issuer.mtime = path.stat().st_mtime
                issuer.keys = _public_keys(json.loads(path.read_text()))
            issuer.loaded = time.monotonic()
        except (OSError, httpx.HTTPError, ValueError, JoseError) as exc:
            issuer.loaded = time.monotonic()  # keep the keys we have; try again later, not on every request
            if issuer.keys is None:
                raise OAuthError("invalid_grant", f"the keys of trusted issuer {issuer.name} cannot be read",
                                 400) from exc
        assert issuer.keys is not None
        return issuer.keys

    async def verify(self, repo: Repository, assertion: str, token_url: str) -> dict[str, Any]:
        """The claims of a valid assertion from a trusted issuer; OAuthError(invalid_grant) otherwise."""
        try:
            unverified = jws.extract_compact(assertion.encode())
            header = dict(unverified.protected)
            claimed = json.loads(unverified.payload)
        except (JoseError, ValueError) as exc:
            raise _grant_error("the assertion is not a compact JWT") from exc
        name = claimed.get("iss") if isinstance(claimed, dict) else None
        issuer = self._issuers.get(name) if isinstance(name, str) else None
        if issuer is None:
            raise _grant_error("the assertion's issuer is not trusted by this server")
        if header.get("alg") not in ALGS:
            raise _grant_error(f"the assertion must be signed with one of {', '.join(ALGS)}")
        keys = await self._keys(issuer, header.get("kid"))
        try:
            claims = dict(jwt.decode(assertion, keys, algorithms=ALGS).claims)
        except (JoseError, ValueError) as exc:
            raise _grant_error("the assertion's signature does not verify with the trusted issuer's keys") from exc
        _check(claims, token_url)
        jti = claims.get("jti")
        if jti is not None:
            if not isinstance(jti, str) or not jti or len(jti) > 255:
                raise _grant_error("the assertion's jti must be a string of at most 255 characters")
            if not store.use_assertion(repo, f"issuer:{issuer.name}", jti, int(claims["exp"])):
                raise _grant_error("the assertion's jti was used before (replay)")
        return claims


def _mtime(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return -1.0


def _check(claims: dict[str, Any], token_url: str) -> None:
    t = store.now()
    aud = claims.get("aud")
    if aud != token_url and not (isinstance(aud, list) and token_url in aud):
        raise _grant_error(f"the assertion's aud must be the token endpoint {token_url}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise _grant_error("the assertion needs an integer exp")
    if exp <= t:
        raise _grant_error("the assertion has expired")
    if exp - t > MAX_LIFETIME:
        raise _grant_error("the assertion's exp is more than five minutes away")
    iat = claims.get("iat")
    if iat is not None and (not isinstance(iat, int) or iat > t + CLOCK_SKEW or exp - iat > MAX_LIFETIME):
        raise _grant_error("the assertion's iat is in the future or more than five minutes before exp")
    nbf = claims.get("nbf")
    if nbf is not None and (not isinstance(nbf, int) or nbf > t + CLOCK_SKEW):
        raise _grant_error("the assertion is not valid yet (nbf)")
    for name in ("sub", "assignment"):
        value = claims.get(name)
        if not isinstance(value, str) or not value or len(value) > 64:
            raise _grant_error(f"the assertion needs {name} (an HSA-id)")
