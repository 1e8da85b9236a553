"""The SDK's FHIR client against a live server with auth on: backend-services tokens from the IG example
keys (ES384 and RS384), renewal before expiry and after a 401, CRUD, and search paging by `next` links."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from authkit import AuthServer, ig_key
from modkit import private_jwk

from samverka.sdk import AsyncFhirClient, AuthError, BackendAuth, FhirClient, FhirClientError
from samverka.sdk.auth import Token


def _client(server: AuthServer, alg: str, scope: str) -> BackendAuth:
    client_id = server.register(scope, ig_key(alg))
    return BackendAuth(client_id, private_jwk(alg), scope)  # the token endpoint is discovered


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_crud_and_paging(sdk_server: AuthServer, alg: str) -> None:
    auth = _client(sdk_server, alg, "system/Patient.cruds")
    family = f"Sdk{uuid.uuid4().hex[:8]}"
    with FhirClient(sdk_server.srv.base, auth) as fhir:
        made = [fhir.create({"resourceType": "Patient", "name": [{"family": family, "given": [f"n{i}"]}]})
                for i in range(7)]
        assert auth.token_url == f"{sdk_server.origin}/auth/token"
        assert all(p["id"] and p["meta"]["versionId"] == "1" for p in made)
        pages = list(fhir.pages("Patient", {"family": family, "_count": "3"}))
        assert [len(p.get("entry", [])) for p in pages] == [3, 3, 1]
        found = list(fhir.search_all("Patient", [("family", family), ("_count", "3")]))
        assert sorted(p["id"] for p in found) == sorted(p["id"] for p in made)
        one = fhir.read("Patient", made[0]["id"])
        one["gender"] = "female"
        assert fhir.update(one)["meta"]["versionId"] == "2"
        fhir.delete("Patient", made[1]["id"])
        with pytest.raises(FhirClientError) as gone:
            fhir.read("Patient", made[1]["id"])
        assert gone.value.status == 410
        with pytest.raises(FhirClientError) as refused:
            fhir.search("Observation")
        assert refused.value.status == 403
    assert auth.fetched == 1  # one token served every call


def test_token_renewal(sdk_server: AuthServer) -> None:
    auth = _client(sdk_server, "ES384", "system/Patient.rs")
    offset = 0.0
    auth.clock = lambda: time.time() + offset
    with FhirClient(sdk_server.srv.base, auth) as fhir:
        fhir.search("Patient", {"_count": "1"})
        first = auth.token
        assert auth.fetched == 1 and first is not None
        offset = 250.0  # 50 s left of a 300 s token: not yet within the 30 s margin
        fhir.search("Patient", {"_count": "1"})
        assert auth.fetched == 1
        offset = 275.0  # 25 s left: renewed before it expires
        fhir.search("Patient", {"_count": "1"})
        assert auth.fetched == 2 and auth.token is not first
        offset = 0.0
        auth.token = Token("not-a-token", "", time.time() + 3600)  # e.g. revoked: the server answers 401
        fhir.search("Patient", {"_count": "1"})
        assert auth.fetched == 3


def test_a_refused_client_raises_auth_error(sdk_server: AuthServer) -> None:
    auth = BackendAuth("no-such-client", private_jwk("ES384"), "system/Patient.rs")
    with FhirClient(sdk_server.srv.base, auth) as fhir, pytest.raises(AuthError) as info:
        fhir.search("Patient")
    assert info.value.status == 401 and info.value.error == "invalid_client"


def test_async_client_pages(sdk_server: AuthServer) -> None:
    auth = _client(sdk_server, "RS384", "system/Patient.cruds")
    family = f"Async{uuid.uuid4().hex[:8]}"

    async def run() -> list[str]:
        async with AsyncFhirClient(sdk_server.srv.base, auth) as fhir:
            for i in range(5):
                await fhir.create({"resourceType": "Patient", "name": [{"family": family, "given": [str(i)]}]})
            return [p["name"][0]["given"][0] async for p in fhir.search_all("Patient", {"family": family,
                                                                                         "_count": "2"})]

    assert sorted(asyncio.run(run())) == ["0", "1", "2", "3", "4"]
