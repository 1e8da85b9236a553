"""SMART App Launch against a live server: authorization code with PKCE through the embedded login page,
the id_token, refresh-token rotation and revocation, EHR and standalone patient launch, and the user
and assignment claims that reach the per-request access context.

https://hl7.org/fhir/smart-app-launch/app-launch.html
"""

from __future__ import annotations

import uuid

import httpx
from authkit import ASSERTION_TYPE, assertion, fresh_key
from joserfc import jwt
from joserfc.jwk import KeySet
from loginkit import AKUT, DOCTOR, PASSWORD, REDIRECT, TWO_UNITS, LaunchServer, hidden, launch_server, pkce

__all__ = ["launch_server"]


def test_smart_configuration_advertises_app_launch(launch_server: LaunchServer) -> None:
    conf = httpx.get(f"{launch_server.fhir_base}/.well-known/smart-configuration", timeout=30).json()
    assert conf["authorization_endpoint"] == f"{launch_server.origin}/auth/authorize"
    assert {"authorization_code", "refresh_token"} <= set(conf["grant_types_supported"])
    assert {"launch-ehr", "launch-standalone", "context-ehr-patient", "context-standalone-patient",
            "sso-openid-connect", "permission-offline", "client-public"} <= set(conf["capabilities"])
    assert conf["code_challenge_methods_supported"] == ["S256"]
    oidc = httpx.get(f"{launch_server.origin}/auth/.well-known/openid-configuration", timeout=30).json()
    assert oidc["issuer"] == conf["issuer"] and oidc["jwks_uri"] == conf["jwks_uri"]


def test_public_client_full_pkce_flow(launch_server: LaunchServer) -> None:
    """Login form, code with state, code + verifier → access token that works on the FHIR API."""
    app = launch_server.register_app()
    query, verifier, params = launch_server.login(app)
    assert query["state"] == [params["state"]]
    r = launch_server.exchange(app, query["code"][0], verifier)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 3600
    assert set(body["scope"].split()) == {"openid", "fhirUser", "user/*.rs", "offline_access"}
    with launch_server.auth.fhir(body["access_token"]) as fhir:
        assert fhir.get(f"/Practitioner/{DOCTOR.id}").status_code == 200
        assert fhir.post("/Patient", json={"resourceType": "Patient"}).status_code == 403  # rs only


def test_confidential_client_authenticates_at_the_token_endpoint(launch_server: LaunchServer) -> None:
    key = fresh_key("ES384")
    app = launch_server.register_app(public=False, key=key)
    query, verifier, _ = launch_server.login(app)
    code = query["code"][0]
    r = launch_server.exchange(app, code, verifier)  # no client_assertion: a confidential client must authenticate
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    query, verifier, _ = launch_server.login(app)
    r = launch_server.exchange(app, query["code"][0], verifier, client_assertion_type=ASSERTION_TYPE,
                               client_assertion=assertion(key, app, launch_server.auth.token_url))
    assert r.status_code == 200, r.text


def test_plain_pkce_and_missing_challenge_are_refused(launch_server: LaunchServer) -> None:
    app = launch_server.register_app()
    verifier, challenge = pkce()
    for over in ({"code_challenge_method": "plain", "code_challenge": verifier},
                 {"code_challenge_method": None}, {"code_challenge": None}):
        params = launch_server.authorize_params(app, challenge, **over)
        r = httpx.get(f"{launch_server.origin}/auth/authorize", params=params, timeout=30)
        assert r.status_code == 303, r.text
        loc = r.headers["location"]
        assert loc.startswith(REDIRECT) and "error=invalid_request" in loc and f"state={params['state']}" in loc


def test_wrong_or_missing_verifier_is_refused(launch_server: LaunchServer) -> None:
    app = launch_server.register_app()
    query, verifier, _ = launch_server.login(app)
    other, _ = pkce()
    r = launch_server.exchange(app, query["code"][0], other)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # the code was consumed by the failed attempt: the right verifier no longer helps
    assert launch_server.exchange(app, query["code"][0], verifier).status_code == 400
    query, _, _ = launch_server.login(app)
    r = launch_server.exchange(app, query["code"][0], "")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_redirect_uri_must_match_exactly(launch_server: LaunchServer) -> None:
    """A mismatch is shown to the user, never redirected (no open redirector)."""
    app = launch_server.register_app()
    _, challenge = pkce()
    for uri in (REDIRECT + "/", REDIRECT + "?x=1", "http://127.0.0.1:9/other", "https://evil.example/callback"):
        r = httpx.get(f"{launch_server.origin}/auth/authorize", timeout=30,
                      params=launch_server.authorize_params(app, challenge, redirect_uri=uri))
        assert r.status_code == 400 and "location" not in r.headers and "text/html" in r.headers["content-type"]
    # and at the token endpoint the redirect_uri must be the one of the authorization request
    query, verifier, _ = launch_server.login(app)
    r = launch_server.exchange(app, query["code"][0], verifier, redirect_uri=REDIRECT + "/")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_registration_requires_redirect_uris_for_the_code_flow(launch_server: LaunchServer) -> None:
    for uris in (None, [], ["http://example.com/cb"], ["https://app.example/cb#frag"], ["/relative"]):
        body = {"client_name": "app", "scope": "user/*.rs", "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code"]}
        if uris is not None:
            body["redirect_uris"] = uris
        r = launch_server.admin("POST", "/auth/register", json=body)
        assert r.status_code == 400 and r.json()["error"] == "invalid_redirect_uri", (uris, r.text)


def test_code_reuse_is_refused_and_revokes_its_tokens(launch_server: LaunchServer) -> None:
    app = launch_server.register_app()
    query, verifier, _ = launch_server.login(app)
    first = launch_server.exchange(app, query["code"][0], verifier)
    assert first.status_code == 200
    again = launch_server.exchange(app, query["code"][0], verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    tokens = first.json()
    assert launch_server.introspect(tokens["access_token"]) == {"active": False}
    r = httpx.post(launch_server.auth.token_url, timeout=30, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": app})
    assert r.status_code == 400


def test_code_is_bound_to_its_client(launch_server: LaunchServer) -> None:
    app, other = launch_server.register_app(), launch_server.register_app()
    query, verifier, _ = launch_server.login(app)
    r = launch_server.exchange(other, query["code"][0], verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_wrong_password_stays_on_the_login_page(launch_server: LaunchServer) -> None:
    app = launch_server.register_app()
    _, challenge = pkce()
    with httpx.Client(timeout=30) as browser:
        r = browser.get(f"{launch_server.origin}/auth/authorize",
                        params=launch_server.authorize_params(app, challenge))
        handle = hidden(r.text, "request")
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        r = browser.post(f"{launch_server.origin}/auth/login",
                         data={"request": handle, "username": DOCTOR.id, "password": "wrong"})
        assert r.status_code == 200 and "Fel HSA-id eller lösenord" in r.text and "location" not in r.headers
        assert PASSWORD not in r.text
    # the login must continue in the browser that started it (the cookie set by /auth/authorize)
    r = httpx.post(f"{launch_server.origin}/auth/login", timeout=30,
                   data={"request": handle, "username": DOCTOR.id, "password": PASSWORD})
    assert r.status_code == 403 and "location" not in r.headers


def test_id_token_verifies_against_jwks_with_fhir_user(launch_server: LaunchServer) -> None:
    app = launch_server.register_app()
    nonce = uuid.uuid4().hex
    tokens = launch_server.user_tokens(app, nonce=nonce)
    jwks = KeySet.import_key_set(httpx.get(f"{launch_server.origin}/auth/jwks", timeout=30).json())
    decoded = jwt.decode(tokens["id_token"], jwks, algorithms=["ES256", "RS256"])
    claims = decoded.claims
    assert claims["iss"] == f"{launch_server.origin}/auth" and claims["aud"] == app
    assert claims["sub"] == DOCTOR.id and claims["fhirUser"] == f"Practitioner/{DOCTOR.id}"
    assert claims["nonce"] == nonce and claims["exp"] > claims["iat"]
    # the fhirUser resolves on the FHIR server with the access token
    with launch_server.auth.fhir(tokens["access_token"]) as fhir:
        assert fhir.get(f"/{claims['fhirUser']}").json()["id"] == DOCTOR.id
    # an id_token is not an access token
    with launch_server.auth.fhir(tokens["id_token"]) as fhir:
        assert fhir.get(f"/Practitioner/{DOCTOR.id}").status_code == 401


def test_refresh_token_rotates_and_reuse_revokes_the_grant(launch_server: LaunchServer) -> None:
    app = launch_server.register_app()
    tokens = launch_server.user_tokens(app)
    first = tokens["refresh_token"]

    def refresh(token: str, **extra: str) -> httpx.Response:
        return httpx.post(launch_server.auth.token_url, timeout=30,
                          data={"grant_type": "refresh_token", "refresh_token": token, "client_id": app, **extra})

    r = refresh(first)
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first and second["scope"] == tokens["scope"]
    assert launch_server.introspect(second["access_token"])["user_hsa_id"] == DOCTOR.id
    narrowed = refresh(second["refresh_token"], scope="user/*.rs offline_access")
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "user/*.rs offline_access"
    third = narrowed.json()
    assert refresh(third["refresh_token"], scope="user/*.cruds").json()["error"] == "invalid_scope"
    # replaying an already rotated refresh token revokes everything of the grant
    replay = refresh(first)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert refresh(third["refresh_token"]).status_code == 400
    assert launch_server.introspect(third["access_token"]) == {"active": False}


def test_refresh_token_revocation(launch_server: LaunchServer) -> None:
    app = launch_server.register_app()
    tokens = launch_server.user_tokens(app)
    other = launch_server.register_app()
    # another client cannot revoke it (RFC 7009 §2.1: the answer is still 200)
    assert httpx.post(f"{launch_server.origin}/auth/revoke", timeout=30,
                      data={"token": tokens["refresh_token"], "client_id": other}).status_code == 200
    r = httpx.post(launch_server.auth.token_url, timeout=30, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": app})
    assert r.status_code == 200, r.text
    fresh = r.json()
    r = httpx.post(f"{launch_server.origin}/auth/revoke", timeout=30,
                   data={"token": fresh["refresh_token"], "client_id": app})
    assert r.status_code == 200
    r = httpx.post(launch_server.auth.token_url, timeout=30, data={
        "grant_type": "refresh_token", "refresh_token": fresh["refresh_token"], "client_id": app})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert launch_server.introspect(fresh["access_token"]) == {"active": False}


def test_no_refresh_token_without_offline_access(launch_server: LaunchServer) -> None:
    app = launch_server.register_app()
    tokens = launch_server.user_tokens(app, scope="openid fhirUser user/*.rs")
    assert "refresh_token" not in tokens


def test_standalone_patient_launch(launch_server: LaunchServer) -> None:
    """launch/patient: the login asks for a patient (id or personnummer); the token carries it."""
    app = launch_server.register_app()
    tokens = launch_server.user_tokens(app, scope="launch/patient patient/*.rs", patient="191212121212")
    assert tokens["patient"] == launch_server.patient
    with launch_server.auth.fhir(tokens["access_token"]) as fhir:
        assert fhir.get(f"/Patient/{launch_server.patient}").status_code == 200
        found = fhir.get("/Encounter").json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == [launch_server.encounter]
    tokens = launch_server.user_tokens(app, scope="launch/patient patient/*.rs", patient=launch_server.patient)
    assert tokens["patient"] == launch_server.patient


def test_ehr_launch_context(launch_server: LaunchServer) -> None:
    app = launch_server.register_app()
    r = launch_server.admin("POST", "/auth/launch", json={"patient": launch_server.patient,
                                                           "encounter": launch_server.encounter})
    assert r.status_code == 201, r.text
    launch = r.json()["launch"]
    tokens = launch_server.user_tokens(app, scope="launch patient/*.rs openid fhirUser", launch=launch)
    assert tokens["patient"] == launch_server.patient and tokens["encounter"] == launch_server.encounter
    seen = launch_server.introspect(tokens["access_token"])
    assert seen["patient"] == launch_server.patient and seen["encounter"] == launch_server.encounter
    # the launch scope needs a launch id, and an unknown id is refused by redirect
    _, challenge = pkce()
    for over in ({"scope": "launch patient/*.rs"}, {"scope": "launch patient/*.rs", "launch": "nope"}):
        r = httpx.get(f"{launch_server.origin}/auth/authorize", timeout=30,
                      params=launch_server.authorize_params(app, challenge, **over))
        assert r.status_code == 303 and "error=invalid_request" in r.headers["location"]
    # only an admin creates launch contexts, for patients that exist
    assert httpx.post(f"{launch_server.origin}/auth/launch", json={"patient": "x"}, timeout=30).status_code == 401
    assert launch_server.admin("POST", "/auth/launch", json={"patient": "no-such"}).status_code == 400


def test_user_picks_one_of_several_assignments(launch_server: LaunchServer) -> None:
    """The assignment chosen on the login page is carried in the token and its introspection."""
    app = launch_server.register_app()
    role = f"{TWO_UNITS.id}.uppdrag-2"
    tokens = launch_server.user_tokens(app, user=TWO_UNITS.id, assignment=role)
    seen = launch_server.introspect(tokens["access_token"])
    assert seen["active"] is True and seen["client_id"] == app
    assert seen["user_hsa_id"] == TWO_UNITS.id and seen["sub"] == TWO_UNITS.id
    assert seen["fhirUser"] == f"Practitioner/{TWO_UNITS.id}" and seen["user_name"]
    assert seen["care_unit"] == AKUT.id and seen["practitioner_role"] == f"PractitionerRole/{role}"
    assert seen["care_provider"].endswith("-E000000000001") and seen["role"] == "Läkare"
    # a single assignment is taken without asking, with its purpose
    seen = launch_server.introspect(launch_server.user_tokens(app)["access_token"])
    assert seen["care_unit"] == DOCTOR.unit_id and seen["assignment_purpose"] == "vard-och-behandling"


def test_system_scopes_are_never_given_to_a_user(launch_server: LaunchServer) -> None:
    app = launch_server.register_app(scope="system/*.rs user/Patient.rs")
    tokens = launch_server.user_tokens(app, scope="system/*.rs user/Patient.rs")
    assert tokens["scope"] == "user/Patient.rs"


def test_aud_must_be_this_server(launch_server: LaunchServer) -> None:
    app = launch_server.register_app()
    _, challenge = pkce()
    for aud in ("https://other.example/fhir", None):
        r = httpx.get(f"{launch_server.origin}/auth/authorize", timeout=30,
                      params=launch_server.authorize_params(app, challenge, aud=aud))
        assert r.status_code == 303 and "error=invalid_request" in r.headers["location"]
