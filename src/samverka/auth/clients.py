"""Client registration (RFC 7591) and client authentication with `private_key_jwt`.

https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html and
https://hl7.org/fhir/smart-app-launch/backend-services.html. A client's public keys are registered
inline (`jwks`) or by a loopback `jwks_uri`, fetched when needed and kept for `JWKS_CACHE_SECONDS`.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..store import Repository
from . import scopes, store

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_ALGS = ["RS384", "ES384"]
MAX_ASSERTION_LIFETIME = 300  # seconds: exp - now (and exp - iat) at most five minutes
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"  # RFC 7523 §2.1, from a trusted identity provider
GRANT_TYPES = frozenset({"client_credentials", "authorization_code", "refresh_token", JWT_BEARER})
JWKS_CACHE_SECONDS = 300.0
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k", "oth")


class OAuthError(Exception):
    """An RFC 6749 §5.2 / RFC 7591 §3.2.2 error: `code` is the `error` value, the message its description."""

    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.code = code
        self.status = status


def is_loopback_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def _public_jwks(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise OAuthError("invalid_client_metadata", "jwks must be a JWK Set with at least one key")
    for k in value["keys"]:
        if not isinstance(k, dict) or k.get("kty") not in ("RSA", "EC"):
            raise OAuthError("invalid_client_metadata", "every key in jwks must be an RSA or EC key")
        if any(m in k for m in _PRIVATE_MEMBERS):
            raise OAuthError("invalid_client_metadata", "jwks must hold public keys only")
        if "alg" in k and k["alg"] not in CLIENT_ALGS:
            raise OAuthError("invalid_client_metadata", f"key alg must be one of {', '.join(CLIENT_ALGS)}")
    try:
        KeySet.import_key_set(cast(Any, value))
    except (JoseError, ValueError, TypeError) as exc:
        raise OAuthError("invalid_client_metadata", "jwks holds a key that cannot be read") from exc
    return value


def register(repo: Repository, meta: Any) -> store.Client:
    """Validate RFC 7591 client metadata and store the client: https://www.rfc-editor.org/rfc/rfc7591#section-2"""
    if not isinstance(meta, dict):
        raise OAuthError("invalid_client_metadata", "the body must be a JSON object of client metadata")
    method = meta.get("token_endpoint_auth_method", "private_key_jwt")
    if method not in ("private_key_jwt", "none"):
        raise OAuthError("invalid_client_metadata", "token_endpoint_auth_method must be private_key_jwt or none")
    default_grants = ["client_credentials"] if method == "private_key_jwt" else ["authorization_code"]
    grants = meta.get("grant_types", default_grants)
    if not isinstance(grants, list) or not grants or any(g not in GRANT_TYPES for g in grants):
        raise OAuthError("invalid_client_metadata", f"grant_types must be some of {', '.join(sorted(GRANT_TYPES))}")
    if method == "none" and "client_credentials" in grants:
        raise OAuthError("invalid_client_metadata", "client_credentials needs private_key_jwt authentication")
    name = meta.get("client_name")
    if not isinstance(name, str) or not name.strip():
        raise OAuthError("invalid_client_metadata", "client_name is required")
    scope = meta.get("scope", "")
    if not isinstance(scope, str) or not scope.split():
        raise OAuthError("invalid_client_metadata", "scope is required: the scopes the client may be granted")
    try:
        scopes.check(scope)
    except scopes.ScopeError as exc:
        raise OAuthError("invalid_client_metadata", str(exc)) from exc
    redirect_uris = _redirect_uris(meta.get("redirect_uris"), "authorization_code" in grants)
    jwks, jwks_uri = meta.get("jwks"), meta.get("jwks_uri")
    if method == "private_key_jwt":
        if (jwks is None) == (jwks_uri is None):
            raise OAuthError("invalid_client_metadata", "private_key_jwt needs exactly one of jwks and jwks_uri")
        if jwks is not None:
            jwks = _public_jwks(jwks)
        elif not isinstance(jwks_uri, str) or not is_loopback_url(jwks_uri):
            raise OAuthError("invalid_client_metadata", "jwks_uri must be an http(s) URL on a loopback address")
    elif jwks is not None or jwks_uri is not None:
        raise OAuthError("invalid_client_metadata", "a public client (none) has no keys")
    accepted = {k: v for k, v in meta.items() if k in ("client_name", "redirect_uris", "software_id",
                                                         "software_version", "contacts", "jwks_uri")}
    accepted.update(token_endpoint_auth_method=method, grant_types=grants, scope=" ".join(scope.split()))
    if redirect_uris:
        accepted["redirect_uris"] = redirect_uris
    if jwks is not None:
        accepted["jwks"] = jwks
    client = store.Client(new_client_id(), name.strip(), method, accepted["scope"], tuple(grants),
                          jwks, jwks_uri, accepted, store.now(), None)
    store.add_client(repo, client)
    return client


def _redirect_uris(value: Any, required: bool) -> list[str]:
    """Registered redirect URIs (RFC 6749 §3.1.2): absolute, no fragment, https or http on loopback."""
    if value is None:
        if required:
            raise OAuthError("invalid_redirect_uri", "authorization_code needs redirect_uris")
        return []
    if not isinstance(value, list) or not value or not all(isinstance(u, str) for u in value):
        raise OAuthError("invalid_redirect_uri", "redirect_uris must be a non-empty list of URLs")
    for uri in value:
        parts = urlsplit(uri)
        if parts.fragment or "#" in uri or not parts.netloc or len(uri) > 2000:
            raise OAuthError("invalid_redirect_uri", f"redirect URI {uri!r} must be absolute, without a fragment")
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_url(uri)):
            raise OAuthError("invalid_redirect_uri", f"redirect URI {uri!r} must use https (http only on loopback)")
    return list(value)


def public_client(repo: Repository, client_id: str | None) -> store.Client:
    """A public client (token_endpoint_auth_method none), identified by client_id alone."""
    client = store.get_client(repo, client_id) if client_id else None
    if client is None or client.revoked is not None or store.client_disabled(repo, client.client_id):
        raise _bad("unknown, revoked or disabled client")
    if client.auth_method != "none":
        raise _bad("this client must authenticate (private_key_jwt client_assertion)")
    return client


async def token_client(repo: Repository, keys: ClientKeys, form: dict[str, str], token_url: str,
                       grant_type: str) -> store.Client:
    """The client calling the token endpoint: confidential ones by assertion, public ones by client_id."""
    if "client_assertion" in form or "client_assertion_type" in form:
        client = await authenticate(repo, keys, form, token_url)
    else:
        client = public_client(repo, form.get("client_id"))
    if grant_type not in client.grant_types:
        raise OAuthError("unauthorized_client", f"this client is not registered for {grant_type}")
    return client


@dataclass
class _Fetched:
    keys: KeySet
    at: float


class ClientKeys:
    """The public keys of clients registered by `jwks_uri`, fetched over loopback HTTP and cached."""

    def __init__(self) -> None:
        self._cache: dict[str, _Fetched] = {}

    async def keyset(self, client: store.Client, kid: str | None) -> KeySet:
        if client.jwks is not None:
            return KeySet.import_key_set(cast(Any, client.jwks))
        uri = client.jwks_uri
        if uri is None or not is_loopback_url(uri):
            raise OAuthError("invalid_client", "the client has no usable keys", 401)
        hit = self._cache.get(uri)
        fresh = hit is not None and time.monotonic() - hit.at < JWKS_CACHE_SECONDS
        if hit is not None and fresh and (kid is None or any(k.kid == kid for k in hit.keys.keys)):
            return hit.keys
        try:
            async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as http:
                r = await http.get(uri, headers={"Accept": "application/json"})
            r.raise_for_status()
            keys = KeySet.import_key_set(cast(Any, _public_jwks(r.json())))
        except (httpx.HTTPError, ValueError, OAuthError, JoseError) as exc:
            raise OAuthError("invalid_client", "the client's jwks_uri did not give a usable JWK Set", 401) from exc
        self._cache[uri] = _Fetched(keys, time.monotonic())
        return keys


def _bad(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, 401)


async def authenticate(repo: Repository, keys: ClientKeys, form: dict[str, str], token_url: str) -> store.Client:
    """Authenticate a client by its signed assertion (RFC 7523 §3, SMART asymmetric client auth)."""
    if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
        raise _bad(f"client authentication needs client_assertion_type={ASSERTION_TYPE} and client_assertion")
    assertion = form["client_assertion"]
    try:
        unverified = jws.extract_compact(assertion.encode())
        header = dict(unverified.protected)
        claimed = json.loads(unverified.payload)
    except (JoseError, ValueError) as exc:
        raise _bad("client_assertion is not a compact JWT") from exc
    client_id = claimed.get("iss") if isinstance(claimed, dict) else None
    if not isinstance(client_id, str):
        raise _bad("client_assertion has no iss")
    if form.get("client_id") not in (None, client_id):
        raise _bad("client_id does not match the assertion's iss")
    client = store.get_client(repo, client_id)
    if client is None or client.revoked is not None:
        raise _bad("unknown or revoked client")
    if store.client_disabled(repo, client_id):
        raise _bad("this client is disabled")
    if client.auth_method != "private_key_jwt":
        raise _bad("this client does not authenticate with private_key_jwt")
    if header.get("alg") not in CLIENT_ALGS:
        raise _bad(f"client_assertion must be signed with {' or '.join(CLIENT_ALGS)}")
    keyset = await keys.keyset(client, header.get("kid"))
    try:
        claims = jwt.decode(assertion, keyset, algorithms=CLIENT_ALGS).claims
    except (JoseError, ValueError) as exc:
        raise _bad("client_assertion signature does not verify with the client's registered keys") from exc
    _check_claims(claims, client_id, token_url)
    if not store.use_assertion(repo, client_id, claims["jti"], int(claims["exp"])):
        raise _bad("client_assertion jti was used before (replay)")
    return client


def _check_claims(claims: dict[str, Any], client_id: str, token_url: str) -> None:
    t = store.now()
    if claims.get("sub") != client_id or claims.get("iss") != client_id:
        raise _bad("client_assertion iss and sub must both be the client_id")
    aud = claims.get("aud")
    if aud != token_url and not (isinstance(aud, list) and token_url in aud):
        raise _bad(f"client_assertion aud must be the token endpoint {token_url}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise _bad("client_assertion needs an integer exp")
    if exp <= t:
        raise _bad("client_assertion has expired")
    if exp - t > MAX_ASSERTION_LIFETIME:
        raise _bad("client_assertion exp is more than five minutes away")
    iat = claims.get("iat")
    if iat is not None and (not isinstance(iat, int) or iat > t + 60 or exp - iat > MAX_ASSERTION_LIFETIME):
        raise _bad("client_assertion iat is in the future or more than five minutes before exp")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise _bad("client_assertion needs a jti (at most 255 characters)")


def new_client_id() -> str:
    """A random client_id that never starts with '-', so it can be passed to `samverka client revoke ID`
    without being read as an option."""
    while (cid := secrets.token_urlsafe(18)).startswith("-"):
        pass
    return cid
