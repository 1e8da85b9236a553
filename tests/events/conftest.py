"""Event fixtures: a real `samverka serve` per backend with quick retries, and a real rest-hook receiver."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eventkit import QUICK, Receiver

from support.server import BACKENDS, RunningServer, launch


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`samverka serve --auth off` on SQLite and on PostgreSQL, shared by a module's tests."""
    backend = str(request.param)
    srv = launch(request, backend, tmp_path_factory.mktemp(f"events-{backend}"), QUICK)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()
