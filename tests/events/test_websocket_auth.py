"""The websocket channel with auth on: a binding token needs read access to the Subscription, and a
revoked client's token no longer binds (real server, real SMART backend-services clients, real socket).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_websocket import params, ws_subscription
from websockets.sync.client import connect

from support.server import BACKENDS, expect_outcome, launch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "auth"))

from authkit import AuthServer, fresh_key


@pytest.fixture(scope="module", params=BACKENDS)
def auth_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    backend = str(request.param)
    srv = launch(request, backend, tmp_path_factory.mktemp(f"ws-auth-{backend}"), ["--auth", "on"])
    args = srv.args
    store = (
        ["--database", args[args.index("--database") + 1]]
        if "--database" in args
        else ["--data-dir", args[args.index("--data-dir") + 1]]
    )
    try:
        yield AuthServer(srv, store)
    finally:
        srv.stop()


def _client(server: AuthServer, scope: str) -> tuple[str, httpx.Client]:
    key = fresh_key()
    client_id = server.register(scope, key)
    return client_id, server.fhir(server.token(client_id, key, scope))


def test_binding_token_needs_subscription_read_access(auth_server: AuthServer) -> None:
    owner_id, owner = _client(auth_server, "system/Subscription.crs system/Observation.rs")
    _other_id, other = _client(auth_server, "system/Observation.rs")
    with owner, other:
        r = owner.post("/Subscription", json=ws_subscription())
        assert r.status_code == 201, r.text
        sub_id = r.json()["id"]
        expect_outcome(other.get(f"/Subscription/{sub_id}/$get-ws-binding-token"), 403)
        expect_outcome(auth_server.srv.client.get(f"/Subscription/{sub_id}/$get-ws-binding-token"), 401)
        token = params(owner.post(f"/Subscription/{sub_id}/$get-ws-binding-token").json())
        with connect(token["websocket-url"], open_timeout=10) as ws:
            ws.send(f"bind-with-token {token['token']}")
            hs = json.loads(ws.recv(timeout=20))
            assert hs["resourceType"] == "Bundle" and hs["type"] == "history"
        # the client is revoked: a token it was given before no longer binds
        again = params(owner.get(f"/Subscription/{sub_id}/$get-ws-binding-token").json())
        r = httpx.delete(
            f"{auth_server.origin}/auth/clients/{owner_id}",
            headers={"Authorization": f"Bearer {auth_server.admin_token()}"},
            timeout=30,
        )
        assert r.status_code in (200, 204), r.text
        with connect(again["websocket-url"], open_timeout=10) as ws:
            ws.send(f"bind-with-token {again['token']}")
            refused = json.loads(ws.recv(timeout=20))
            assert refused["resourceType"] == "OperationOutcome"
            assert "revoked" in refused["issue"][0]["diagnostics"]
