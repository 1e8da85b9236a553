"""The NATS JetStream bridge (`samverka serve --nats`) against a real `nats-server -js` and a real server
subprocess: every committed event once, in outbox order, through NATS outages, kill -9 and --workers 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from eventkit import QUICK, create, encounter, lab_result
from test_outbox import _store

from samverka.events.nats import ALL
from samverka.events.topics import BASE
from support.nats_server import NatsServer, Received, consume, find_nats_server
from support.server import BACKENDS, RunningServer, expect_outcome, launch, start_server


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A throwaway `nats-server -js`; CI must run these tests, so there a missing binary fails."""
    binary = find_nats_server()
    if binary is None:
        reason = "nats-server is not installed (apt-get install nats-server)"
        if os.environ.get("CI"):
            pytest.fail(f"NATS bridge tests cannot run in CI: {reason}", pytrace=False)
        pytest.skip(f"NATS bridge tests skipped: {reason}")
    server = NatsServer(binary).start()
    try:
        yield server
    finally:
        server.remove()


def _outbox(srv: RunningServer) -> list[tuple[int, str, str, int, str]]:
    store = _store(srv)
    try:
        return [
            (int(s), t, i, int(v), k)
            for s, t, i, v, k in store.fetch(
                "SELECT seq, type, id, version, interaction FROM event_outbox ORDER BY seq", ()
            )
        ]
    finally:
        store.close()


def _bridge(srv: RunningServer) -> list[tuple[str, int, str | None]]:
    store = _store(srv)
    try:
        return [
            (str(n), int(p), h)
            for n, p, h in store.fetch("SELECT name, published, lease_holder FROM event_bridge ORDER BY name", ())
        ]
    finally:
        store.close()


def _as_outbox(got: list[Received]) -> list[tuple[int, str, str, int, str]]:
    return [
        (m.body["sequence"], m.body["resourceType"], m.body["id"], int(m.body["versionId"]), m.body["interaction"])
        for m in got
    ]


def _wait_published(srv: RunningServer, seq: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(p >= seq for _n, p, _h in _bridge(srv)):
        assert time.monotonic() < deadline, f"the bridge cursor never reached {seq}: {_bridge(srv)}\n{srv.log()}"
        time.sleep(0.1)


def _database(srv: RunningServer) -> str | None:
    return srv.args[srv.args.index("--database") + 1] if "--database" in srv.args else None


def _kill(srv: RunningServer) -> None:
    os.killpg(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(timeout=10)
    srv.client.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_committed_event_is_published_once_in_outbox_order(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, nats_server: NatsServer
) -> None:
    """create, update, delete and a lab result each reach `samverka.events.all` once, in outbox order,
    with Nats-Msg-Id = the outbox sequence; a rolled-back transaction publishes nothing; the topic
    subjects carry the events that trigger their topic."""
    srv = launch(request, backend, tmp_path, [*QUICK, "--nats", nats_server.url, "--nats-stream", "REGION"])
    try:
        enc = create(srv, encounter("p-nats", "planned"))
        r = srv.client.put(f"/Encounter/{enc['id']}", json={**enc, "status": "in-progress"})
        assert r.status_code == 200, r.text
        lab = create(srv, lab_result("p-nats"))
        patient = create(srv, {"resourceType": "Patient", "name": [{"family": "Nats"}]})
        assert srv.client.delete(f"/Patient/{patient['id']}").status_code in (200, 204)
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": encounter("p-rolled-back", "in-progress"),
                    "request": {"method": "POST", "url": "Encounter"},
                },
                {
                    "resource": {**encounter("p-rolled-back", "finished"), "id": "no-such-version"},
                    "request": {"method": "PUT", "url": "Encounter/no-such-version", "ifMatch": 'W/"7"'},
                },
            ],
        }
        expect_outcome(srv.client.post("", json=bundle), 409, 412)
        last = create(srv, encounter("p-nats", "planned"))
        outbox = _outbox(srv)
        assert [row[0] for row in outbox] == list(range(1, len(outbox) + 1))
        assert {(t, i) for _s, t, i, _v, _k in outbox} == {
            ("Encounter", enc["id"]),
            ("Observation", lab["id"]),
            ("Patient", patient["id"]),
            ("Encounter", last["id"]),
        }

        got = consume(nats_server.url, "REGION", ALL, len(outbox))
        assert _as_outbox(got) == outbox  # each committed event once, in outbox order, nothing else
        assert [m.msg_id for m in got] == [str(row[0]) for row in outbox]
        assert [m.stream_seq for m in got] == sorted(m.stream_seq for m in got)
        assert all(m.body["timestamp"].endswith("Z") for m in got)
        deleted = next(m for m in got if m.body["interaction"] == "delete")
        assert (deleted.body["resourceType"], deleted.body["id"], deleted.body["versionId"]) == (
            "Patient",
            patient["id"],
            "2",
        )

        [lab_msg] = consume(nats_server.url, "REGION", "samverka.events.lab-result", 1)
        lab_seq = next(s for s, t, i, _v, _k in outbox if (t, i) == ("Observation", lab["id"]))
        assert lab_msg.body["id"] == lab["id"] and lab_msg.body["topics"] == [f"{BASE}/lab-result"]
        assert lab_msg.msg_id == f"{lab_seq}:lab-result"
        [started] = consume(nats_server.url, "REGION", "samverka.events.encounter-start-end", 1)
        assert (started.body["id"], started.body["versionId"], started.body["interaction"]) == (
            enc["id"],
            "2",
            "update",
        )
        assert next(m for m in got if m.body["sequence"] == started.body["sequence"]).body["topics"] == [
            f"{BASE}/encounter-start-end"
        ]
        assert next(m for m in got if m.body["id"] == last["id"]).body["topics"] == []  # planned: no topic

        _wait_published(srv, outbox[-1][0])
        assert [(n, p) for n, p, _h in _bridge(srv)] == [("nats:REGION", outbox[-1][0])]
    finally:
        srv.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_events_committed_while_nats_is_down_are_published_when_it_is_back(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, nats_server: NatsServer
) -> None:
    """NATS stops: writes go on (the outbox holds the events) and the cursor stays; NATS comes back:
    every event arrives, once, in order."""
    srv = launch(request, backend, tmp_path, [*QUICK, "--nats", nats_server.url])
    try:
        for _ in range(2):
            create(srv, lab_result("p-outage"))
        assert len(consume(nats_server.url, "SAMVERKA", ALL, 2)) == 2
        _wait_published(srv, 2)
        nats_server.stop()
        for _ in range(5):
            create(srv, lab_result("p-outage"))
        time.sleep(1.5)
        assert [p for _n, p, _h in _bridge(srv)] == [2]  # nothing acknowledged, nothing passed
        nats_server.start()
        outbox = _outbox(srv)
        assert len(outbox) == 7
        assert _as_outbox(consume(nats_server.url, "SAMVERKA", ALL, 7)) == outbox
        assert len(consume(nats_server.url, "SAMVERKA", "samverka.events.lab-result", 7)) == 7
        assert "NATS bridge: cannot publish" in srv.log()
    finally:
        srv.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_before_the_publish_and_after_the_ack(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, nats_server: NatsServer
) -> None:
    """kill -9 with committed events not yet published: the restarted server publishes them. Then a crash
    between JetStream's ack and the cursor update (the cursor set back by hand): the republished
    messages carry the same Nats-Msg-Id and JetStream drops them, so the stream still holds each once."""
    args = [*QUICK, "--nats", nats_server.url]
    srv = launch(request, backend, tmp_path, args)
    database = _database(srv)
    create(srv, lab_result("p-kill"))
    assert len(consume(nats_server.url, "SAMVERKA", ALL, 1)) == 1
    nats_server.stop()
    for _ in range(3):
        create(srv, lab_result("p-kill"))
    _kill(srv)
    nats_server.start()
    assert len(consume(nats_server.url, "SAMVERKA", ALL, 4, timeout=2)) == 1  # the kill beat the publish
    srv = start_server(tmp_path, database, args, backend=backend)
    try:
        outbox = _outbox(srv)
        assert len(outbox) == 4
        assert _as_outbox(consume(nats_server.url, "SAMVERKA", ALL, 4)) == outbox
        _wait_published(srv, 4)
    finally:
        srv.stop()

    store = _store(srv)
    try:
        with store.transaction() as uow:
            uow.execute("UPDATE event_bridge SET published = 1", ())
    finally:
        store.close()
    srv = start_server(tmp_path, database, args, backend=backend)
    try:
        create(srv, lab_result("p-kill"))
        _wait_published(srv, 5)
        outbox = _outbox(srv)
        got = consume(nats_server.url, "SAMVERKA", ALL, 5)
        assert _as_outbox(got) == outbox  # 2..4 were published twice; the stream kept them once
        assert [m.stream_seq for m in got] == [1, 3, 5, 7, 9]  # each event: .all, then .lab-result
        assert len(consume(nats_server.url, "SAMVERKA", "samverka.events.lab-result", 5)) == 5
    finally:
        srv.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_several_workers_publish_one_ordered_stream(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, nats_server: NatsServer
) -> None:
    """--workers 2 and writers in parallel: one process holds the bridge lease, and the stream holds
    each of the 40 events once, in outbox (commit) order."""
    srv = launch(request, backend, tmp_path, [*QUICK, "--nats", nats_server.url, "--workers", "2"])
    try:

        def write(n: int) -> None:
            with httpx.Client(base_url=srv.base, timeout=60.0) as client:
                for _ in range(n):
                    r = client.post("/Observation", json=lab_result("p-workers"))
                    assert r.status_code == 201, r.text

        with ThreadPoolExecutor(4) as pool:
            for f in [pool.submit(write, 10) for _ in range(4)]:
                f.result()
        outbox = _outbox(srv)
        assert len(outbox) == 40
        got = consume(nats_server.url, "SAMVERKA", ALL, 40)
        assert _as_outbox(got) == outbox
        assert [m.msg_id for m in got] == [str(s) for s in range(1, 41)]
        _wait_published(srv, 40)
        [(_name, _published, holder)] = _bridge(srv)
        assert holder is not None
        assert srv.log().count("NATS bridge: publishing the outbox") == 1, srv.log()
    finally:
        srv.stop()


def test_serve_refuses_a_stream_name_nats_cannot_use(tmp_path: Path) -> None:
    """--nats-stream must be a JetStream stream name (no dots, spaces or wildcards): exit 2 with a reason."""
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from samverka.cli import main; main()",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--port",
            "18998",
            "--auth",
            "off",
            "--nats",
            "nats://127.0.0.1:4222",
            "--nats-stream",
            "samverka.events",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "--nats-stream 'samverka.events': a stream name is letters, digits" in r.stderr
