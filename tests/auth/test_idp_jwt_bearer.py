"""A trusted external identity provider (`serve --trust-issuer ISSUER=JWKS`) and the JWT-bearer grant
against a live server: the success case and every refusal.

https://www.rfc-editor.org/rfc/rfc7523#section-2.1 and issue 4, "Trusted identity provider".
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from authkit import ASSERTION_TYPE, ClientKey, assertion, fresh_key
from loginkit import (
    AKUT,
    DOCTOR,
    JWT_BEARER,
    TWO_UNITS,
    URL_ISSUER,
    LaunchServer,
    issuer_assertion,
    launch_server,
)

__all__ = ["launch_server"]


@pytest.fixture(scope="module")
def module_client(launch_server: LaunchServer) -> tuple[str, ClientKey]:
    """A confidential client (private_key_jwt) registered for the JWT-bearer grant."""
    key = fresh_key("ES384")
    client_id = launch_server.register_app(scope="user/*.rs patient/*.rs", public=False, key=key,
                                           grant_types=[JWT_BEARER])
    return client_id, key


def _grant(srv: LaunchServer, client: tuple[str, ClientKey], user_assertion: str,
           scope: str = "user/*.rs") -> httpx.Response:
    client_id, key = client
    form = {"grant_type": JWT_BEARER, "assertion": user_assertion, "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(key, client_id, srv.auth.token_url)}
    return httpx.post(srv.auth.token_url, data=form, timeout=30)


def test_trusted_issuer_assertion_gives_a_user_token(launch_server: LaunchServer,
                                                     module_client: tuple[str, ClientKey]) -> None:
    srv = launch_server
    r = _grant(srv, module_client, issuer_assertion(srv.idp_key, srv.auth.token_url), "user/*.rs system/*.rs")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == "user/*.rs" and "refresh_token" not in body
    seen = srv.introspect(body["access_token"])
    assert seen["user_hsa_id"] == DOCTOR.id and seen["care_unit"] == DOCTOR.unit_id
    assert seen["client_id"] == module_client[0] and seen["fhirUser"] == f"Practitioner/{DOCTOR.id}"
    assert seen["assignment_purpose"] == "vard-och-behandling" and seen["care_provider"]
    with srv.auth.fhir(body["access_token"]) as fhir:
        assert fhir.get(f"/Patient/{srv.patient}").status_code == 200


def test_assignment_selects_among_the_users_roles(launch_server: LaunchServer,
                                                  module_client: tuple[str, ClientKey]) -> None:
    srv = launch_server
    user_assertion = issuer_assertion(srv.idp_key, srv.auth.token_url, sub=TWO_UNITS.id, assignment=AKUT.id)
    r = _grant(srv, module_client, user_assertion)
    assert r.status_code == 200, r.text
    seen = srv.introspect(r.json()["access_token"])
    assert seen["care_unit"] == AKUT.id and seen["practitioner_role"] == f"PractitionerRole/{TWO_UNITS.id}.uppdrag-2"


def test_issuer_with_loopback_jwks_url(launch_server: LaunchServer, module_client: tuple[str, ClientKey]) -> None:
    srv = launch_server
    r = _grant(srv, module_client, issuer_assertion(srv.url_idp_key, srv.auth.token_url, issuer=URL_ISSUER))
    assert r.status_code == 200, r.text


def test_public_client_may_use_the_grant(launch_server: LaunchServer) -> None:
    """A public client (token_endpoint_auth_method none) identifies itself by client_id alone."""
    srv = launch_server
    client_id = srv.register_app(scope="user/*.rs", grant_types=[JWT_BEARER])
    form = {"grant_type": JWT_BEARER, "assertion": issuer_assertion(srv.idp_key, srv.auth.token_url),
            "scope": "user/*.rs", "client_id": client_id}
    r = httpx.post(srv.auth.token_url, data=form, timeout=30)
    assert r.status_code == 200, r.text
    # a client not registered for the grant is refused
    other = srv.register_app(scope="user/*.rs")
    r = httpx.post(srv.auth.token_url, data={**form, "client_id": other,
                                             "assertion": issuer_assertion(srv.idp_key, srv.auth.token_url)},
                   timeout=30)
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"


def _refusals(srv: LaunchServer) -> dict[str, str]:
    aud, now = srv.auth.token_url, int(time.time())
    stranger = fresh_key("RS384")
    cases: dict[str, Any] = {
        "unknown issuer": issuer_assertion(srv.idp_key, aud, issuer="https://evil.example"),
        "bad signature": issuer_assertion(stranger, aud),
        "trusted issuer, other issuer's key": issuer_assertion(srv.url_idp_key, aud),
        "expired": issuer_assertion(srv.idp_key, aud, iat=now - 200, exp=now - 5),
        "exp too far ahead": issuer_assertion(srv.idp_key, aud, iat=None, exp=now + 600),
        "iat too long before exp": issuer_assertion(srv.idp_key, aud, iat=now - 280, exp=now + 60),
        "wrong aud": issuer_assertion(srv.idp_key, srv.fhir_base),
        "no exp": issuer_assertion(srv.idp_key, aud, exp=None),
        "no sub": issuer_assertion(srv.idp_key, aud, sub=None),
        "no assignment": issuer_assertion(srv.idp_key, aud, assignment=None),
        "assignment the user does not hold": issuer_assertion(srv.idp_key, aud, assignment=AKUT.id),
        "unknown user": issuer_assertion(srv.idp_key, aud, sub="SE2321000999-P999999999999"),
        "not a JWT": "not-a-jwt",
    }
    return cases


@pytest.mark.parametrize("case", ["unknown issuer", "bad signature", "trusted issuer, other issuer's key", "expired",
                                  "exp too far ahead", "iat too long before exp", "wrong aud", "no exp", "no sub",
                                  "no assignment", "assignment the user does not hold", "unknown user", "not a JWT"])
def test_refused_assertions(launch_server: LaunchServer, module_client: tuple[str, ClientKey], case: str) -> None:
    r = _grant(launch_server, module_client, _refusals(launch_server)[case])
    assert r.status_code == 400, (case, r.text)
    assert r.json()["error"] == "invalid_grant", (case, r.text)
    assert "access_token" not in r.json()


def test_replayed_assertion_is_refused(launch_server: LaunchServer, module_client: tuple[str, ClientKey]) -> None:
    srv = launch_server
    user_assertion = issuer_assertion(srv.idp_key, srv.auth.token_url)
    assert _grant(srv, module_client, user_assertion).status_code == 200
    r = _grant(srv, module_client, user_assertion)
    assert r.status_code == 400 and "replay" in r.json()["error_description"]


def test_the_client_must_authenticate(launch_server: LaunchServer, module_client: tuple[str, ClientKey]) -> None:
    srv = launch_server
    client_id, _ = module_client
    form = {"grant_type": JWT_BEARER, "assertion": issuer_assertion(srv.idp_key, srv.auth.token_url),
            "scope": "user/*.rs", "client_id": client_id}
    r = httpx.post(srv.auth.token_url, data=form, timeout=30)  # a confidential client without its assertion
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = _grant(srv, (client_id, fresh_key("ES384")), issuer_assertion(srv.idp_key, srv.auth.token_url))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_scope_is_required_and_narrowed(launch_server: LaunchServer, module_client: tuple[str, ClientKey]) -> None:
    srv = launch_server
    r = _grant(srv, module_client, issuer_assertion(srv.idp_key, srv.auth.token_url), "")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = _grant(srv, module_client, issuer_assertion(srv.idp_key, srv.auth.token_url), "user/*.cruds")
    assert r.status_code == 200 and r.json()["scope"] == "user/*.rs"
