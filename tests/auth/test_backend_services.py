"""SMART backend services against a live server: discovery, registration, client_credentials with
private_key_jwt (the IG's RS384 and ES384 example keys) and every refusal the profile requires.

https://hl7.org/fhir/smart-app-launch/backend-services.html
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from authkit import ASSERTION_TYPE, AuthServer, assertion, fresh_key, ig_key
from joserfc import jwt
from joserfc.jwk import KeySet


def test_smart_configuration_is_public_and_complete(auth_server: AuthServer) -> None:
    """The well-known document names every endpoint, private_key_jwt with RS384/ES384, and S256 only."""
    r = httpx.get(f"{auth_server.srv.base}/.well-known/smart-configuration", timeout=30)
    assert r.status_code == 200
    conf = r.json()
    o = auth_server.origin
    assert conf["token_endpoint"] == f"{o}/auth/token"
    assert conf["introspection_endpoint"] == f"{o}/auth/introspect"
    assert conf["revocation_endpoint"] == f"{o}/auth/revoke"
    assert conf["registration_endpoint"] == f"{o}/auth/register"
    assert conf["jwks_uri"] == f"{o}/auth/jwks"
    assert conf["issuer"] == f"{o}/auth"
    assert conf["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert conf["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert "client_credentials" in conf["grant_types_supported"]
    assert conf["code_challenge_methods_supported"] == ["S256"]
    assert {"client-confidential-asymmetric", "permission-v1", "permission-v2"} <= set(conf["capabilities"])
    assert "system/*.rs" in conf["scopes_supported"]


def test_jwks_serves_public_keys_only(auth_server: AuthServer) -> None:
    keys = httpx.get(f"{auth_server.origin}/auth/jwks", timeout=30).json()["keys"]
    assert keys and all("d" not in k and k["kid"] for k in keys)


def test_fhir_needs_a_token_but_metadata_is_public(auth_server: AuthServer) -> None:
    c = auth_server.srv.client
    assert c.get("/metadata").status_code == 200
    r = c.get("/Patient")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["resourceType"] == "OperationOutcome"
    r = c.get("/Patient", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_ig_example_keys_get_an_access_token(auth_server: AuthServer, alg: str) -> None:
    """The IG example key signs the assertion; the granted scope is requested ∩ registered."""
    key = ig_key(alg)
    client_id = auth_server.register("system/Patient.rs system/Observation.rs", key)
    r = auth_server.token_response(client_id, key, "system/Patient.rs system/Observation.cruds system/Encounter.rs")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"].lower() == "bearer"
    assert 0 < body["expires_in"] <= 300
    assert body["scope"].split() == ["system/Patient.rs", "system/Observation.rs"]
    assert r.headers["cache-control"] == "no-store"
    # the token is a JWT the server's published keys verify, with the claims a resource server needs
    jwks = KeySet.import_key_set(httpx.get(f"{auth_server.origin}/auth/jwks", timeout=30).json())
    claims = jwt.decode(body["access_token"], jwks, algorithms=["ES256", "RS256"]).claims
    assert claims["client_id"] == client_id and claims["scope"] == body["scope"]
    assert claims["aud"] == auth_server.srv.base and claims["exp"] - claims["iat"] <= 300 and claims["jti"]
    with auth_server.fhir(body["access_token"]) as fhir:
        assert fhir.get("/Patient", params={"_count": "1"}).status_code == 200


def _refused(r: httpx.Response, error: str = "invalid_client") -> None:
    assert r.status_code in (400, 401), r.text
    assert r.json()["error"] == error, r.text


@pytest.fixture(scope="module")
def es_client(auth_server: AuthServer) -> str:
    return auth_server.register("system/*.rs", ig_key("ES384"))


def test_expired_assertion_is_refused(auth_server: AuthServer, es_client: str) -> None:
    now = int(time.time())
    _refused(auth_server.token_response(es_client, ig_key("ES384"), "system/*.rs", exp=now - 5, iat=now - 65))


def test_wrong_audience_is_refused(auth_server: AuthServer, es_client: str) -> None:
    _refused(auth_server.token_response(es_client, ig_key("ES384"), "system/*.rs",
                                        aud=f"{auth_server.srv.base}/token"))


def test_lifetime_over_five_minutes_is_refused(auth_server: AuthServer, es_client: str) -> None:
    now = int(time.time())
    _refused(auth_server.token_response(es_client, ig_key("ES384"), "system/*.rs", exp=now + 400))
    _refused(auth_server.token_response(es_client, ig_key("ES384"), "system/*.rs", exp=now + 200, iat=now - 200))


def test_replayed_jti_is_refused(auth_server: AuthServer, es_client: str) -> None:
    key = ig_key("ES384")
    signed = assertion(key, es_client, auth_server.token_url)
    form = {"grant_type": "client_credentials", "scope": "system/*.rs", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": signed}
    assert httpx.post(auth_server.token_url, data=form, timeout=30).status_code == 200
    _refused(httpx.post(auth_server.token_url, data=form, timeout=30))


def test_unknown_client_and_bad_signature_are_refused(auth_server: AuthServer, es_client: str) -> None:
    _refused(auth_server.token_response("no-such-client", ig_key("ES384"), "system/*.rs"))
    wrong = fresh_key("ES384")
    wrong.kid = ig_key("ES384").kid  # same kid, other key: the signature cannot verify
    _refused(auth_server.token_response(es_client, wrong, "system/*.rs"))
    _refused(auth_server.token_response(es_client, ig_key("ES384"), "system/*.rs", sub="someone-else"))


def test_missing_jti_wrong_grant_and_unregistered_scope(auth_server: AuthServer, es_client: str) -> None:
    _refused(auth_server.token_response(es_client, ig_key("ES384"), "system/*.rs", jti=None))
    form = {"grant_type": "password", "scope": "system/*.rs", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(ig_key("ES384"), es_client, auth_server.token_url)}
    _refused(httpx.post(auth_server.token_url, data=form, timeout=30), "unsupported_grant_type")
    _refused(auth_server.token_response(es_client, ig_key("ES384"), "system/Patient.cud"), "invalid_scope")


def test_revoked_client_is_refused_and_its_tokens_stop(auth_server: AuthServer) -> None:
    """Revoked through the admin API: no new tokens, and the ones issued stop working at once."""
    key = fresh_key("RS384")
    client_id = auth_server.register("system/Patient.rs", key)
    token = auth_server.token(client_id, key, "system/Patient.rs")
    with auth_server.fhir(token) as fhir:
        assert fhir.get("/Patient", params={"_count": "1"}).status_code == 200
        admin = {"Authorization": f"Bearer {auth_server.admin_token()}"}
        assert httpx.delete(f"{auth_server.origin}/auth/clients/{client_id}", headers=admin).status_code == 204
        assert fhir.get("/Patient", params={"_count": "1"}).status_code == 401
    _refused(auth_server.token_response(client_id, key, "system/Patient.rs"))
    listed = httpx.get(f"{auth_server.origin}/auth/clients", headers=admin).json()
    assert any(c["client_id"] == client_id and c["revoked"] for c in listed)


def test_registration_needs_an_admin_token_and_valid_metadata(auth_server: AuthServer) -> None:
    url = f"{auth_server.origin}/auth/register"
    body = {"client_name": "x", "scope": "system/*.rs", "jwks": ig_key("ES384").public_jwks}
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    key = ig_key("ES384")
    client_id = auth_server.register("system/*.rs", key)
    module_token = auth_server.token(client_id, key, "system/*.rs")
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {module_token}"}).status_code == 401
    admin = {"Authorization": f"Bearer {auth_server.admin_token()}"}
    private = ig_key("ES384").private.as_dict(private=True)
    bad = [
        {**body, "jwks": {"keys": [private]}},  # a private key
        {**body, "jwks": None, "jwks_uri": "https://example.org/jwks"},  # not loopback
        {**body, "scope": "admin"},
        {**body, "scope": "system/Patient.xyz"},
        {**body, "token_endpoint_auth_method": "client_secret_basic"},
        {k: v for k, v in body.items() if k != "jwks"},  # no keys at all
    ]
    for meta in bad:
        meta = {k: v for k, v in meta.items() if v is not None}
        r = httpx.post(url, json=meta, headers=admin, timeout=30)
        assert r.status_code == 400 and r.json()["error"] == "invalid_client_metadata", (meta, r.text)
    public = httpx.post(url, json={"client_name": "app", "scope": "patient/*.rs launch/patient openid fhirUser",
                                   "token_endpoint_auth_method": "none", "redirect_uris": ["http://127.0.0.1/cb"]},
                        headers=admin, timeout=30)
    assert public.status_code == 201 and public.json()["grant_types"] == ["authorization_code"]


@pytest.fixture
def jwks_host() -> Iterator[tuple[str, dict[str, object]]]:
    """A loopback HTTP server publishing a client's JWKS (what a module would host itself)."""
    published: dict[str, object] = {"keys": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            raw = json.dumps(published).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json", published
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_client_keys_by_loopback_jwks_uri(auth_server: AuthServer, jwks_host: tuple[str, dict[str, object]]) -> None:
    """A client registered by jwks_uri; a key added there later (rotation) is fetched by its kid."""
    uri, published = jwks_host
    first = ig_key("RS384")
    published["keys"] = first.public_jwks["keys"]
    client_id = auth_server.register("system/Patient.rs", None, jwks_uri=uri)
    assert auth_server.token_response(client_id, first, "system/Patient.rs").status_code == 200
    second = fresh_key("ES384")
    published["keys"] = [*first.public_jwks["keys"], *second.public_jwks["keys"]]
    assert auth_server.token_response(client_id, second, "system/Patient.rs").status_code == 200
    _refused(auth_server.token_response(client_id, fresh_key("ES384"), "system/Patient.rs"))


def test_cli_register_list_revoke(auth_server: AuthServer, tmp_path: object) -> None:
    """`samverka client register|list|revoke` work straight against the store the server uses."""
    from pathlib import Path

    key = fresh_key("ES384")
    jwks_file = Path(str(tmp_path)) / "jwks.json"
    jwks_file.write_text(json.dumps(key.public_jwks))
    r = auth_server.cli("client", "register", "--name", "lab module", "--scope", "system/Observation.rs",
                        "--jwks", str(jwks_file))
    assert r.returncode == 0, r.stderr
    client_id = r.stdout.strip()
    token = auth_server.token(client_id, key, "system/Observation.rs")
    r = auth_server.cli("client", "list")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and any(line.startswith(f"{client_id}\tactive\tlab module") for line in lines)
    assert auth_server.cli("client", "revoke", client_id).returncode == 0
    with auth_server.fhir(token) as fhir:
        assert fhir.get("/Observation", params={"_count": "1"}).status_code == 401
    assert f"{client_id}\trevoked" in auth_server.cli("client", "list").stdout
    assert auth_server.cli("client", "revoke", "no-such-client").returncode == 1


def test_capability_statement_declares_smart_on_fhir(auth_server: AuthServer) -> None:
    """With auth on, metadata names the SMART-on-FHIR security service and the OAuth endpoints."""
    rest = httpx.get(f"{auth_server.srv.base}/metadata", timeout=30).json()["rest"][0]
    security = rest["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris["token"] == f"{auth_server.origin}/auth/token"
