"""Access tokens on a live server: expiry, audience, signature, introspection (RFC 7662), revocation
(RFC 7009) and signing-key rotation. https://hl7.org/fhir/smart-app-launch/token-introspection.html
"""

from __future__ import annotations

import httpx
from authkit import AuthServer, fresh_key

from samverka.auth import tokens
from samverka.store import open_repository


def _client_token(auth_server: AuthServer, scope: str = "system/Patient.rs") -> tuple[str, str]:
    key = fresh_key("ES384")
    client_id = auth_server.register(scope, key)
    return client_id, auth_server.token(client_id, key, scope)


def _open(auth_server: AuthServer):  # type: ignore[no-untyped-def]
    flag, where = auth_server.store_args
    return open_repository(where, None) if flag == "--data-dir" else open_repository(None, where)


def _get(auth_server: AuthServer, token: str) -> httpx.Response:
    with auth_server.fhir(token) as fhir:
        return fhir.get("/Patient", params={"_count": "1"})


def _unauthorized(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["resourceType"] == "OperationOutcome"


def test_expired_wrong_audience_and_bad_signature_tokens_are_401(auth_server: AuthServer) -> None:
    """Tokens signed with the server's own key but expired or for another audience; a tampered one."""
    client_id, token = _client_token(auth_server)
    assert _get(auth_server, token).status_code == 200
    repo = _open(auth_server)
    try:
        ring = tokens.KeyRing(repo)
        base = {"iss": f"{auth_server.origin}/auth", "sub": client_id, "client_id": client_id,
                "scope": "system/Patient.rs"}
        expired, _ = tokens.mint(ring, {**base, "aud": auth_server.srv.base}, -5)
        other, _ = tokens.mint(ring, {**base, "aud": "http://127.0.0.1:1/fhir"}, 300)
        foreign_issuer, _ = tokens.mint(ring, {**base, "aud": auth_server.srv.base, "iss": "http://x/auth"}, 300)
    finally:
        repo.close()
    _unauthorized(_get(auth_server, expired))
    _unauthorized(_get(auth_server, other))
    _unauthorized(_get(auth_server, foreign_issuer))
    head, body, sig = token.split(".")
    _unauthorized(_get(auth_server, f"{head}.{body}.{sig[:-4]}AAAA"))
    _unauthorized(_get(auth_server, auth_server.admin_token()))  # an admin token is not a FHIR token


def test_introspection(auth_server: AuthServer) -> None:
    client_id, token = _client_token(auth_server)
    url = f"{auth_server.origin}/auth/introspect"
    assert httpx.post(url, data={"token": token}, timeout=30).status_code == 401
    r = httpx.post(url, data={"token": token}, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    body = r.json()
    assert r.status_code == 200 and body["active"] is True
    assert body["client_id"] == client_id and body["scope"] == "system/Patient.rs" and isinstance(body["exp"], int)
    admin = {"Authorization": f"Bearer {auth_server.admin_token()}"}
    assert httpx.post(url, data={"token": token}, headers=admin, timeout=30).json()["active"] is True
    _other, other_token = _client_token(auth_server)
    other = {"Authorization": f"Bearer {other_token}"}
    assert httpx.post(url, data={"token": token}, headers=other, timeout=30).json() == {"active": False}
    assert httpx.post(url, data={"token": "garbage"}, headers=admin, timeout=30).json() == {"active": False}


def test_revocation(auth_server: AuthServer) -> None:
    """A client revokes its own token; the admin revokes anyone's; either stops working at once."""
    url = f"{auth_server.origin}/auth/revoke"
    _cid, token = _client_token(auth_server)
    _cid2, token2 = _client_token(auth_server)
    other = {"Authorization": f"Bearer {token2}"}
    assert httpx.post(url, data={"token": token}, headers=other, timeout=30).status_code == 200
    assert _get(auth_server, token).status_code == 200  # another client cannot revoke it
    r = httpx.post(url, data={"token": token}, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200
    _unauthorized(_get(auth_server, token))
    admin = {"Authorization": f"Bearer {auth_server.admin_token()}"}
    assert httpx.post(url, data={"token": token2}, headers=admin, timeout=30).status_code == 200
    _unauthorized(_get(auth_server, token2))
    introspected = httpx.post(f"{auth_server.origin}/auth/introspect", data={"token": token}, headers=admin)
    assert introspected.json() == {"active": False}
    assert httpx.post(url, data={"token": "not-a-token"}, headers=admin, timeout=30).status_code == 200


def test_key_rotation_keeps_old_tokens_valid(auth_server: AuthServer) -> None:
    """After `samverka admin rotate-keys` both keys are published; tokens of either verify."""
    _cid, before = _client_token(auth_server)
    old_kids = {k["kid"] for k in httpx.get(f"{auth_server.origin}/auth/jwks").json()["keys"]}
    r = auth_server.cli("admin", "rotate-keys")
    assert r.returncode == 0, r.stderr
    keys = httpx.get(f"{auth_server.origin}/auth/jwks").json()["keys"]
    new_kids = {k["kid"] for k in keys} - old_kids
    assert len(new_kids) == 1 and old_kids <= {k["kid"] for k in keys}
    assert all("d" not in k for k in keys)
    assert _get(auth_server, before).status_code == 200
    admin = auth_server.admin_token()  # minted by a fresh process: signed with the new key
    assert tokens.jws.extract_compact(admin.encode()).protected["kid"] in new_kids
    r = httpx.get(f"{auth_server.origin}/auth/clients", headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200


def test_a_key_installed_by_another_process_verifies_at_once(tmp_path: object) -> None:
    """Two workers' key rings on one store: a token signed with a key the other process installed a moment
    ago (both workers' first mints each install one; a rotation) verifies at once, not a second later."""
    from pathlib import Path

    from samverka.auth import store as auth_store

    repo = open_repository(Path(str(tmp_path)))
    try:
        here = tokens.KeyRing(repo)
        here.verification_set(None)  # loaded just now: installs the first key
        assert auth_store.install_key(repo, tokens.new_key(), None, 0)  # another process, a moment later
        token, _ = tokens.mint(tokens.KeyRing(repo), {"iss": "i", "aud": "a", "client_id": "c"}, 300)
        claims = tokens.Verifier(here).signed_claims(token)
        assert claims["client_id"] == "c"
    finally:
        repo.close()
