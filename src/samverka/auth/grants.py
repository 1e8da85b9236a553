"""Token-endpoint grants for users: authorization_code with PKCE, refresh_token and the JWT-bearer grant.

https://hl7.org/fhir/smart-app-launch/app-launch.html#obtain-access-token (PKCE: RFC 7636 §4.6;
refresh-token rotation: RFC 9700 §4.14.2; JWT bearer: RFC 7523 §2.1). A user's access token carries
who the user is and the assignment they act under (`users.User.claims`), and the launch context.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from ..store import Repository
from . import handles, scopes, store, tokens, users
from .clients import OAuthError
from .idp import TrustedIssuers

USER_ACCESS_LIFETIME = 900  # seconds; SMART: SHOULD be at most one hour
CODE_LIFETIME = 60
REFRESH_LIFETIME = 30 * 86400  # offline_access: each rotation starts a new period
ID_TOKEN_LIFETIME = 900
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
# what a user-facing token may carry; system/ scopes are for backend services only
_USER_CONTEXTS = ("patient", "user")


@dataclass(frozen=True)
class Where:
    """This server's addresses as the request sees them."""

    issuer: str
    fhir_base: str
    token_url: str


def user_scope(requested: str, allowed: str) -> str:
    """Requested ∩ registered, without system/ scopes (a user's token acts for that user only)."""
    try:
        scopes.check(requested)
    except scopes.ScopeError as exc:
        raise OAuthError("invalid_scope", str(exc)) from exc
    out = []
    for s in scopes.intersect(requested, allowed).split():
        grant = scopes.parse_one(s)
        if grant is None or grant.context in _USER_CONTEXTS:
            out.append(s)
    return " ".join(out)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


def _grant_error(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


def issue(repo: Repository, keys: tokens.KeyRing, where: Where, grant: dict[str, Any], family: str | None,
          ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(token response, access-token claims) for a user grant: access token, context, id_token and, with
    offline_access and a `family`, a refresh token."""
    scope: str = grant["scope"]
    granted = set(scope.split())
    claims: dict[str, Any] = {"iss": where.issuer, "aud": where.fhir_base, "client_id": grant["client_id"],
                              "scope": scope, **grant["user"]}
    for name in ("patient", "encounter"):
        if grant.get(name):
            claims[name] = grant[name]
    access, full = tokens.mint(keys, claims, USER_ACCESS_LIFETIME)
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": USER_ACCESS_LIFETIME,
                            "scope": scope}
    for name in ("patient", "encounter"):
        if grant.get(name):
            body[name] = grant[name]
    if "openid" in granted:
        id_claims: dict[str, Any] = {"iss": where.issuer, "aud": grant["client_id"], "sub": grant["user"]["sub"],
                                     "azp": grant["client_id"]}
        if grant["user"].get("user_name"):
            id_claims["name"] = grant["user"]["user_name"]
        if "fhirUser" in granted:
            id_claims["fhirUser"] = grant["user"]["fhirUser"]
        if grant.get("nonce"):
            id_claims["nonce"] = grant["nonce"]
        if grant.get("auth_time"):
            id_claims["auth_time"] = grant["auth_time"]
        body["id_token"], _ = tokens.mint(keys, id_claims, ID_TOKEN_LIFETIME, typ="JWT")
    if family is not None and "offline_access" in granted:
        data = {**grant, "access_jti": full["jti"], "access_exp": full["exp"]}
        body["refresh_token"] = handles.create(repo, handles.REFRESH, data, REFRESH_LIFETIME, grant["client_id"],
                                               family)
    return body, full


def withdraw(repo: Repository, stolen: handles.Handle) -> None:
    """A code or refresh token was used twice: revoke its whole grant and the access tokens it gave."""
    revoked = [stolen]
    if stolen.family:
        revoked += handles.revoke_family(repo, stolen.family)
    for h in revoked:
        jti, exp = h.data.get("access_jti"), h.data.get("access_exp")
        if isinstance(jti, str) and isinstance(exp, int):
            store.revoke_token(repo, jti, exp)


def authorization_code(repo: Repository, keys: tokens.KeyRing, where: Where, client_id: str,
                       form: dict[str, str]) -> dict[str, Any]:
    """RFC 6749 §4.1.3 with PKCE (RFC 7636 §4.6): the code once, for its client, redirect_uri and verifier."""
    code = form.get("code", "")
    if not code:
        raise OAuthError("invalid_request", "code is required")
    found, replayed = handles.consume(repo, handles.CODE, code)
    if replayed is not None:
        withdraw(repo, replayed)
        raise _grant_error("the authorization code was already used; the tokens issued for it are revoked")
    if found is None:
        raise _grant_error("the authorization code is unknown or has expired")
    grant = found.data
    if found.client_id != client_id:
        raise _grant_error("the authorization code was issued to another client")
    if form.get("redirect_uri") != grant["redirect_uri"]:
        raise _grant_error("redirect_uri does not match the authorization request")
    verifier = form.get("code_verifier", "")
    if not _VERIFIER.fullmatch(verifier):
        raise _grant_error("code_verifier is required: 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636)")
    if not hmac.compare_digest(s256(verifier), grant["code_challenge"]):
        raise _grant_error("code_verifier does not match the code_challenge (PKCE S256)")
    kept = ("client_id", "scope", "user", "patient", "encounter", "nonce", "auth_time")
    token_grant: dict[str, Any] = {k: grant[k] for k in kept if k in grant}
    body, access = issue(repo, keys, where, token_grant, found.family)
    handles.set_data(repo, handles.CODE, code, {**grant, "access_jti": access["jti"], "access_exp": access["exp"]})
    return body


def refresh(repo: Repository, keys: tokens.KeyRing, where: Where, client_id: str,
            form: dict[str, str]) -> dict[str, Any]:
    """RFC 6749 §6 with rotation: each refresh token works once; a reused one revokes its whole grant."""
    token = form.get("refresh_token", "")
    if not token:
        raise OAuthError("invalid_request", "refresh_token is required")
    found, replayed = handles.consume(repo, handles.REFRESH, token)
    if replayed is not None:
        if replayed.client_id == client_id:
            withdraw(repo, replayed)
        raise _grant_error("the refresh token was already used; its grant is revoked")
    if found is None:
        raise _grant_error("the refresh token is unknown, expired or revoked")
    if found.client_id != client_id:
        raise _grant_error("the refresh token was issued to another client")
    grant = {k: v for k, v in found.data.items() if k not in ("access_jti", "access_exp")}
    requested = form.get("scope")
    if requested is not None and requested.strip():
        held = set(grant["scope"].split())
        wanted = requested.split()
        if not set(wanted) <= held:
            raise OAuthError("invalid_scope", "a refresh may only narrow the scopes of the original grant")
        grant["scope"] = " ".join(s for s in grant["scope"].split() if s in wanted)
    _still_holds(repo, grant)
    return issue(repo, keys, where, grant, found.family)[0]


def _still_holds(repo: Repository, grant: dict[str, Any]) -> None:
    """A refresh re-checks that the user still has the login and the assignment the grant was made under."""
    claims = grant["user"]
    user = users.lookup(repo, claims["sub"])
    role = claims["practitioner_role"].removeprefix("PractitionerRole/")
    if user is None or not users.login_enabled(repo, user.hsa_id):
        raise _grant_error("the user no longer has a login")
    assignment = user.assignment(role)
    if assignment is None:
        raise _grant_error("the user no longer holds the assignment this grant was made under")
    grant["user"] = user.claims(assignment)


async def jwt_bearer(repo: Repository, keys: tokens.KeyRing, where: Where, client: store.Client,
                     issuers: TrustedIssuers, form: dict[str, str]) -> dict[str, Any]:
    """RFC 7523 §2.1: a trusted issuer's assertion names the user (sub) and the assignment (care unit)."""
    if not issuers:
        raise OAuthError("unsupported_grant_type", "this server trusts no external identity provider "
                         "(samverka serve --trust-issuer ISSUER=JWKS)")
    assertion = form.get("assertion", "")
    if not assertion:
        raise OAuthError("invalid_request", "assertion is required")
    claims = await issuers.verify(repo, assertion, where.token_url)
    user = users.lookup(repo, claims["sub"])
    if user is None:
        raise _grant_error("no active Practitioner has the HSA-id in the assertion's sub")
    assignment = user.assignment(claims["assignment"])
    if assignment is None or assignment.care_unit != claims["assignment"]:
        raise _grant_error("the user holds no active assignment (PractitionerRole) at the care unit in 'assignment'")
    requested = form.get("scope", "")
    if not requested.strip():
        raise OAuthError("invalid_scope", "scope is required")
    scope = user_scope(requested, client.scope)
    if not scope:
        raise OAuthError("invalid_scope", "none of the requested scopes is registered for this client")
    grant = {"client_id": client.client_id, "scope": scope, "user": user.claims(assignment),
             "issuer": claims["iss"]}
    return issue(repo, keys, where, grant, None)[0]


def new_family() -> str:
    return secrets.token_hex(16)
