"""Crash drills: `kill -9` of the whole server (every uvicorn process) around a transaction, then restart.

A 1,000-entry transaction killed at any moment must leave all of its resources or none, and
`samverka check` must find the store consistent; a transaction whose 200 the client has seen must
survive the kill. Runs on SQLite and PostgreSQL (the throwaway cluster keeps fsync on).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

if TYPE_CHECKING:
    from conftest import Server, Store, WriteProbe

pytestmark = pytest.mark.slow

TAG_SYSTEM = "urn:samverka:drill:round"
ENTRIES = 1000
PATIENTS = 100  # the rest are Observations referring to them through urn:uuid fullUrls
SEND_TIMEOUT = 60.0
WRITE_PHASE_TRIES = 3  # rounds aimed at the write phase, until one lands inside it


def transaction_bundle(tag: str, entries: int = ENTRIES, patients: int = PATIENTS) -> dict[str, Any]:
    """Patients and Observations (subject: urn:uuid of a Patient in the bundle), all tagged `tag`."""
    meta = {"tag": [{"system": TAG_SYSTEM, "code": tag}]}
    out: list[dict[str, Any]] = []
    patient_urls = [f"urn:uuid:{uuid.uuid4()}" for _ in range(patients)]
    for i, url in enumerate(patient_urls):
        out.append({"fullUrl": url, "request": {"method": "POST", "url": "Patient"}, "resource": {
            "resourceType": "Patient", "meta": meta, "identifier": [{"system": f"urn:drill:{tag}", "value": f"p{i}"}],
            "name": [{"family": "Drill", "given": [f"P{i}"]}], "gender": "female", "birthDate": "1970-01-01"}})
    for i in range(entries - patients):
        out.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "request": {"method": "POST", "url": "Observation"},
                    "resource": {
                        "resourceType": "Observation", "meta": meta, "status": "final",
                        "identifier": [{"system": f"urn:drill:{tag}", "value": f"o{i}"}],
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
                        "subject": {"reference": patient_urls[i % patients]},
                        "effectiveDateTime": "2024-01-01T10:00:00Z",
                        "valueQuantity": {"value": 60 + i % 40, "unit": "/min", "system": "http://unitsofmeasure.org",
                                          "code": "/min"}}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": out}


def count(client: httpx.Client, query: str) -> int:
    r = client.get(f"{query}&_summary=count")
    assert r.status_code == 200, r.text
    total = r.json().get("total")
    assert isinstance(total, int), r.text
    return total


def visible(server: Server, tag: str) -> tuple[int, int]:
    """(Patients, Observations) carrying the round's tag."""
    with server.client() as c:
        return (count(c, f"Patient?_tag={TAG_SYSTEM}|{tag}"), count(c, f"Observation?_tag={TAG_SYSTEM}|{tag}"))


class Send:
    """POST a transaction in a thread; `started` is set just before the request goes out."""

    def __init__(self, server: Server, body: bytes) -> None:
        self.server, self.body = server, body
        self.started = threading.Event()
        self.t0 = 0.0
        self.elapsed: float | None = None
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with self.server.client(timeout=SEND_TIMEOUT) as c:
                c.get("metadata")  # connected before the clock starts
                self.t0 = time.monotonic()
                self.started.set()
                self.response = c.post("", content=self.body, headers={"Content-Type": "application/fhir+json"})
                self.elapsed = time.monotonic() - self.t0
        except BaseException as exc:  # a killed server drops the connection: expected, classified by the test
            self.error = exc
        finally:
            self.started.set()

    def join(self) -> None:
        self.thread.join(timeout=SEND_TIMEOUT + 10)
        assert not self.thread.is_alive(), "the request thread did not finish"


def restart_and_verify(store: Store, launch: Callable[..., Server], workers: int = 1) -> Server:
    """After a kill: wait for the database to drop the dead server's sessions, restart, check the store."""
    t0 = time.monotonic()
    store.wait_no_orphans()
    t1 = time.monotonic()
    server = launch(store, workers)
    t2 = time.monotonic()
    done = store.check()
    assert done.returncode == 0, f"samverka check failed after restart:\n{done.stdout}\n{done.stderr}"
    server.restart_timings = (t1 - t0, t2 - t1, time.monotonic() - t2)
    answers_normally(server)
    return server


def answers_normally(server: Server) -> None:
    """A small transaction, a read and a search work (this also warms a fresh server up, so every
    drill round meets a server in the same state as the one that was timed)."""
    tag = f"w{uuid.uuid4().hex[:10]}"
    with server.client() as c:
        assert c.get("metadata").status_code == 200
        r = c.post("", content=orjson.dumps(transaction_bundle(tag, 20, 5)),
                   headers={"Content-Type": "application/fhir+json"})
        assert r.status_code == 200, r.text
        assert c.get(r.json()["entry"][0]["response"]["location"]).status_code == 200
    assert visible(server, tag) == (5, 15)


def run_uninterrupted(server: Server, tag: str, probe: WriteProbe | None = None) -> Any:
    """Send a whole transaction and let it finish: its duration, or with `probe`, its write phase (start, end)."""
    send = Send(server, orjson.dumps(transaction_bundle(tag)))
    assert send.started.wait(30)
    write_start = write_end = None
    deadline = time.monotonic() + SEND_TIMEOUT
    while probe is not None and send.thread.is_alive() and time.monotonic() < deadline:
        now, writing = time.monotonic() - send.t0, probe.writing()
        if writing:
            write_start = now if write_start is None else write_start
            write_end = now
        time.sleep(0.002)
    send.join()
    assert send.response is not None, f"the uninterrupted transaction failed: {send.error!r}"
    assert send.response.status_code == 200, send.response.text
    assert visible(server, tag) == (PATIENTS, ENTRIES - PATIENTS)
    if probe is None:
        return send.elapsed
    assert write_start is not None and write_end is not None, "the probe never saw the write phase"
    return write_start, write_end


def restart_report(server: Server) -> str:
    orphans, restart, check = server.restart_timings
    return f"old sessions gone {orphans:.1f} s, restart {restart:.1f} s, check {check:.1f} s"


def test_kill9_mid_transaction_is_all_or_nothing(store: Store, launch: Callable[..., Server]) -> None:
    """kill -9 at ~30/60/90% of a 1,000-entry transaction and in its write phase: all or none kept, check passes."""
    seed = int(os.environ.get("SAMVERKA_DRILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    probe = store.probe()
    server = launch(store)
    answers_normally(server)
    report = [f"[{store.backend}] seed {seed}"]
    try:
        # 1. uninterrupted, twice: first to time it (nothing watching), then to find its database write
        #    phase with the probe (polling slows the server down a little, so it does not time the run)
        total = run_uninterrupted(server, "baseline-1")
        write_start, write_end = run_uninterrupted(server, "baseline-2", probe)
        report.append(f"uninterrupted: {total:.3f} s; database write phase (probed run) "
                      f"{write_start:.3f}-{write_end:.3f} s")

        # 2. kill -9 at ~30%, ~60%, ~90% (+-5%) of that; then aimed inside the write phase: as soon as the
        #    probe sees the write transaction open, plus a random part of the first half of its length
        plans: list[tuple[str, float | None]] = [
            (f"{int(f * 100)}%", total * (f + rng.uniform(-0.05, 0.05))) for f in (0.3, 0.6, 0.9)
        ]
        plans += [("write phase", None)] * WRITE_PHASE_TRIES
        aimed_hit = False
        for name, delay in plans:
            if name == "write phase" and aimed_hit:
                break
            tag = f"r{uuid.uuid4().hex[:10]}"
            send = Send(server, orjson.dumps(transaction_bundle(tag)))
            assert send.started.wait(30)
            if delay is not None:
                time.sleep(max(0.0, delay - (time.monotonic() - send.t0)))
            else:
                deadline = time.monotonic() + 3 * total + 10
                while not probe.writing():
                    assert send.thread.is_alive() and time.monotonic() < deadline, "never saw the write phase"
                    time.sleep(0.0005)
                time.sleep(rng.uniform(0, 0.5 * (write_end - write_start)))
            at = time.monotonic() - send.t0
            in_write = probe.writing()
            server.kill9()
            send.join()
            answered = send.response is not None
            assert not answered or send.response.status_code == 200, send.response.text  # type: ignore[union-attr]
            server = restart_and_verify(store, launch)
            seen = visible(server, tag)
            report.append(f"kill at {name}: {at:.3f} s, {'inside' if in_write else 'outside'} a write transaction;"
                          f" client {'got 200' if answered else f'lost the connection ({type(send.error).__name__})'};"
                          f" after restart {sum(seen)} of {ENTRIES} visible ({restart_report(server)})")
            if answered:
                assert seen == (PATIENTS, ENTRIES - PATIENTS), f"a transaction answered 200 lost data: {seen}"
            assert seen in ((0, 0), (PATIENTS, ENTRIES - PATIENTS)), f"partial transaction after kill -9: {seen}"
            aimed_hit = aimed_hit or (delay is None and in_write)
            for baseline in ("baseline-1", "baseline-2"):
                assert visible(server, baseline) == (PATIENTS, ENTRIES - PATIENTS)
        assert aimed_hit, f"no aimed kill landed inside the database write phase in {WRITE_PHASE_TRIES} tries"
    finally:
        probe.close()
        print("\n".join(report))


def test_committed_transaction_survives_kill9(store: Store, launch: Callable[..., Server]) -> None:
    """A transaction answered 200 survives an immediate kill -9 of every server process (two workers)."""
    tag = f"d{uuid.uuid4().hex[:10]}"
    entries, patients = 200, 40
    server = launch(store, 2)
    with server.client() as c:
        r = c.post("", content=orjson.dumps(transaction_bundle(tag, entries, patients)),
                   headers={"Content-Type": "application/fhir+json"})
        t_answered = time.monotonic()
        server.kill9()
        kill_s = time.monotonic() - t_answered  # SIGKILL sent, and every process gone
    assert r.status_code == 200, r.text
    locations = [e["response"]["location"] for e in r.json()["entry"]]
    assert len(locations) == entries
    server = restart_and_verify(store, launch, 2)
    assert visible(server, tag) == (patients, entries - patients)
    with server.client() as c:
        for loc in locations:  # Type/id/_history/1
            got = c.get(loc)
            assert got.status_code == 200, f"{loc}: {got.status_code}"
            assert got.json()["meta"]["tag"][0]["code"] == tag
    print(f"[{store.backend}] killed (and reaped) {kill_s * 1000:.1f} ms after the 200: "
          f"all {entries} resources survived")
