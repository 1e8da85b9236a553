"""Two worker processes under concurrent reads and writes keep one linear audit chain (no gaps, no forks).

Appends serialise on the database write lock (SQLite) or the locked chain head row (PostgreSQL);
https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from auditkit import client_token, store_args
from authkit import AuthServer

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
        positions = [r[0] for r in repo.fetch("SELECT pos FROM audit_log ORDER BY pos", ())]
    finally:
        repo.close()
    assert positions == list(range(1, 8 + 240 + 1))
    r = two_workers.cli("audit", "verify")
    assert r.returncode == 0 and f"{8 + 240} audit records" in r.stderr, r.stderr
