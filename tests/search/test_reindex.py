"""Reindexing for custom SearchParameters: concurrent writes, kill -9 and resume, several processes.

https://hl7.org/fhir/R4/searchparameter.html -- real SQLite and PostgreSQL stores, the `samverka reindex`
command as a subprocess, and real `samverka serve` processes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_custom_params import URL, birthplace_sp, ids, patient, services

from samverka.integrity import full_check
from samverka.interactions import reindex, transaction, update
from samverka.interactions.context import Services
from support.server import BACKENDS, launch, samverka_command

CITIES = ["Uppsala", "Lund", "Malmö", "Umeå", "Visby", "Kiruna"]


def load_bundle(svc: Services, n: int, seed: int = 1) -> dict[str, str]:
    """`n` Patients with a birthplace, in transactions of 500; returns id -> city."""
    rnd = random.Random(seed)
    made: dict[str, str] = {}
    for start in range(0, n, 500):
        entries = []
        for i in range(start, min(n, start + 500)):
            city = rnd.choice(CITIES)
            made[f"p{i}"] = city
            entries.append({"resource": patient(city, f"p{i}"), "request": {"method": "PUT", "url": f"Patient/p{i}"}})
        transaction.transaction(svc, "http://x/fhir", {"resourceType": "Bundle", "type": "transaction",
                                                       "entry": entries})
    return made


def expect(svc: Services, made: dict[str, str]) -> None:
    for city in ("Uppsala", "Umeå"):
        assert ids(svc, [("birthplace:exact", city)]) == {i for i, c in made.items() if c == city}, city


@pytest.fixture
def svc(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Services]:
    s = services(backend, tmp_path, request)
    try:
        yield s
    finally:
        s.repo.close()


def test_updates_before_and_after_the_batch_position_are_indexed_right(svc: Services) -> None:
    made = load_bundle(svc, 40)
    update.update(svc, "SearchParameter", "birthplace", birthplace_sp())
    job = reindex.start(svc)
    assert job is not None
    job = reindex.claim(svc, job.id)
    assert job is not None
    for _ in range(2):
        job = reindex.step(svc, job, 7)
    assert 0 < job.last_pk < job.max_pk and job.percent < 100
    # one resource the walk has passed, one it has not reached, one new
    for pid, city in (("p1", "Umeå"), ("p35", "Uppsala"), ("new", "Umeå")):
        update.update(svc, "Patient", pid, patient(city, pid))
        made[pid] = city
    while job.status == "running":
        job = reindex.step(svc, job, 7)
    svc.searchable(force=True)
    expect(svc, made)
    assert full_check(svc)[0] == []


def test_concurrent_writes_during_a_reindex_are_not_lost(svc: Services) -> None:
    made = load_bundle(svc, 600)
    update.update(svc, "SearchParameter", "birthplace", birthplace_sp())
    job = reindex.start(svc)
    assert job is not None
    result: list[reindex.Job | None] = []
    runner = threading.Thread(target=lambda: result.append(reindex.run(svc, job, 5)))
    runner.start()
    rnd = random.Random(7)
    writes = 0
    # writes while the reindex runs (at least 50, at most 2,000: back-to-back writes could otherwise starve
    # the runner of the write lock and never end), with a pause that lets the runner take the lock
    while (runner.is_alive() or writes < 50) and writes < 2000:
        pid = f"p{rnd.randrange(600)}"
        city = rnd.choice(CITIES)
        update.update(svc, "Patient", pid, patient(city, pid))
        made[pid] = city
        writes += 1
        time.sleep(0.001)
    runner.join(timeout=120)
    assert not runner.is_alive(), "the reindex did not finish"
    assert result and result[0] is not None and result[0].status == "done"
    svc.searchable(force=True)
    expect(svc, made)
    assert full_check(svc)[0] == []


def _cli(backend: str, tmp_path: Path, svc: Services) -> list[str]:
    where = ["--database", str(svc.settings.database)] if backend == "postgresql" else ["--data-dir", str(tmp_path)]
    return [*samverka_command(), "reindex", *where]


def test_kill_9_mid_reindex_then_run_again_resumes(backend: str, tmp_path: Path, svc: Services) -> None:
    made = load_bundle(svc, 3000)
    update.update(svc, "SearchParameter", "birthplace", birthplace_sp())
    proc = subprocess.Popen([*_cli(backend, tmp_path, svc), "--batch", "10", "--pause", "0.01"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            running = [j for j in reindex.jobs(svc) if j.status == "running" and j.done >= 200]
            if running:
                break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    [job] = reindex.jobs(svc)
    assert job.status == "running" and 0 < job.last_pk < job.max_pk, job
    with pytest.raises(Exception, match="being reindexed"):
        ids(svc, [("birthplace", "lund")])
    r = subprocess.run([*_cli(backend, tmp_path, svc), "--batch", "200"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"reindex job {job.id}" in r.stderr  # the same job, continued
    first = next(line for line in r.stderr.splitlines() if line.startswith(f"job {job.id}:"))
    assert int(first.split()[2].split("/")[0]) > job.done  # from where the killed run stopped, not from 0
    svc.searchable(force=True)
    expect(svc, made)
    where = ["--database", str(svc.settings.database)] if backend == "postgresql" else ["--data-dir", str(tmp_path)]
    check = subprocess.run([*samverka_command(), "check", *where], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_server_processes_over_http(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One process learns of the parameter, another reindexes, both answer; CapabilityStatement says so."""
    a = launch(request, backend, tmp_path / "a")
    database = None
    if backend == "postgresql":
        database = a.args[a.args.index("--database") + 1]
    from support.server import start_server

    b = start_server(tmp_path / "a", database, backend=backend)
    try:
        for i, city in enumerate(["Lund", "Visby", "Lund"]):
            assert a.client.put(f"/Patient/h{i}", json=patient(city, f"h{i}")).status_code == 201
        r = a.client.put("/SearchParameter/birthplace", json=birthplace_sp())
        assert r.status_code == 201, r.text
        bad = b.client.get("/Patient", params={"birthplace": "lund"})
        assert bad.status_code == 400 and "being reindexed" in bad.text, bad.text
        meta = b.client.get("/metadata").json()
        [patient_caps] = [x for x in meta["rest"][0]["resource"] if x["type"] == "Patient"]
        [sp] = [p for p in patient_caps["searchParam"] if p["name"] == "birthplace"]
        assert sp["definition"] == URL and "Not usable yet" in sp["documentation"]
        started = b.client.post("/SearchParameter/birthplace/$reindex")
        assert started.status_code == 202, started.text
        follow = started.headers["content-location"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = a.client.get(follow).json()
            [job] = [p for p in status["parameter"] if p["name"] == "job"]
            if {"name": "status", "valueCode": "done"} in job["part"]:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"reindex did not finish: {status}")
        for server in (a, b):
            found = server.client.get("/Patient", params={"birthplace": "lund"}).json()
            assert sorted(e["resource"]["id"] for e in found["entry"]) == ["h0", "h2"]
        bad_sp = birthplace_sp("Patient.extension(") | {"id": "broken", "url": "http://example.org/broken"}
        r = b.client.put("/SearchParameter/broken", json=bad_sp)
        assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["SearchParameter.expression"]
    finally:
        b.stop()
        a.stop()
