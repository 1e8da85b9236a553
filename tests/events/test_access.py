"""Notifications respect the subscriber's scopes: full-resource carries only what its client may read."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "auth"))

from authkit import AuthServer, fresh_key
from eventkit import QUICK, Receiver, lab_result, subscription

from support.server import BACKENDS, launch


@pytest.fixture(scope="module", params=BACKENDS)
def auth_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    backend = str(request.param)
    srv = launch(request, backend, tmp_path_factory.mktemp(f"events-auth-{backend}"), [*QUICK, "--auth", "on"])
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


def _client(server: AuthServer, scope: str) -> str:
    key = fresh_key("ES384")
    return server.token(server.register(scope, key), key, scope)


def test_full_resource_only_for_what_the_subscriber_may_read(auth_server: AuthServer, receiver: Receiver) -> None:
    """Two modules subscribe to lab results with full-resource payloads: the one that may read
    Observations gets the resource; the one that may not gets the id only, in notifications and $events."""
    reader = auth_server.fhir(_client(auth_server, "system/Subscription.cruds system/Observation.rs"))
    blind = auth_server.fhir(_client(auth_server, "system/Subscription.cruds system/Encounter.rs"))
    writer = auth_server.fhir(_client(auth_server, "system/*.cruds"))
    subs = {}
    for name, client in (("reader", reader), ("blind", blind)):
        r = client.post(
            "/Subscription",
            json=subscription(
                "lab-result", receiver.url, payload="full-resource", filter_="Observation?patient=Patient/p-acl"
            ),
        )
        assert r.status_code == 201, r.text
        subs[name] = r.json()["id"]
    obs = writer.post("/Observation", json=lab_result("p-acl"))
    assert obs.status_code == 201, obs.text
    [seen] = receiver.events(subs["reader"], 1)
    [hidden] = receiver.events(subs["blind"], 1)
    assert seen.body["entry"][1]["resource"]["id"] == obs.json()["id"]
    assert "resource" not in hidden.body["entry"][1]
    assert hidden.body["entry"][1]["fullUrl"].endswith(obs.json()["id"])
    replay = blind.get(f"/Subscription/{subs['blind']}/$events").json()
    assert len(replay["entry"]) == 2 and "resource" not in replay["entry"][1]
    replay = reader.get(f"/Subscription/{subs['reader']}/$events").json()
    assert replay["entry"][1]["resource"]["id"] == obs.json()["id"]
    nobody = auth_server.fhir(_client(auth_server, "system/Encounter.rs"))
    assert nobody.get(f"/Subscription/{subs['reader']}/$status").status_code == 403
