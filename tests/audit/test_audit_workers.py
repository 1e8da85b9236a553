"""Two worker processes under concurrent reads and writes keep each audit chain linear (no gaps, no forks).

Appends serialise on the database write lock (SQLite) or the locked chain head row (PostgreSQL). On
SQLite read records form a chain of their own beside the store (samverka.audit.logs);
https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from auditkit import client_token, store_args
from authkit import AuthServer

from samverka.audit import logs
from samverka.store import open_repository
from support.server import BACKENDS, launch


@pytest.fixture(params=BACKENDS)
def two_workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuthServer]:
    srv = launch(request, str(request.param), tmp_path, ["--auth", "on", "--workers", "2"])
    try:
        yield AuthServer(srv, store_args(srv))
    finally:
        srv.stop()


def test_the_chain_stays_linear_with_two_workers(two_workers: AuthServer) -> None:
    _cid, token = client_token(two_workers, "system/*.cruds")
    with two_workers.fhir(token) as fhir:
        pids = [fhir.post("/Patient", json={"resourceType": "Patient"}).json()["id"] for _ in range(8)]

    def work(i: int) -> int:
        with two_workers.fhir(token) as fhir:
            pid = pids[i % len(pids)]
            if i % 3 == 0:
                r = fhir.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                                    "code": {"text": str(i)},
                                                    "subject": {"reference": f"Patient/{pid}"}})
            elif i % 3 == 1:
                r = fhir.get(f"/Patient/{pid}")
            else:
                r = fhir.get("/Observation", params={"subject": f"Patient/{pid}"})
            return r.status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(work, range(240)))
    assert set(statuses) <= {200, 201}, statuses
    args = two_workers.store_args
    repo = open_repository(args[1] if args[0] == "--data-dir" else None,
                           args[1] if args[0] == "--database" else None)
    try:
        chains = {c.name: [r[0] for r in c.repo.fetch("SELECT pos FROM audit_log ORDER BY pos", ())]
                  for c in logs.chains(repo)}
    finally:
        repo.close()
    writes, reads = 8 + 80, 160  # the creates (one record each), then the 240 requests: 80 creates, 160 reads
    if "log" in chains:  # PostgreSQL: one chain
        assert chains == {"log": list(range(1, writes + reads + 1))}
    else:
        assert chains == {"writes": list(range(1, writes + 1)), "reads": list(range(1, reads + 1))}
    r = two_workers.cli("audit", "verify")
    assert r.returncode == 0, r.stderr
    if "log" in chains:
        assert f"{writes + reads} audit records, hash chain intact" in r.stderr, r.stderr
    else:
        assert f"{writes} audit records (writes chain)" in r.stderr, r.stderr
        assert f"{reads} audit records (reads chain)" in r.stderr, r.stderr
