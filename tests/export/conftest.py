"""Export fixtures: one `samverka serve --auth off` subprocess per backend for this folder's HTTP tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.server import BACKENDS, RunningServer, launch


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    backend = str(request.param)
    srv = launch(request, backend, tmp_path_factory.mktemp(f"export-{backend}"))
    try:
        yield srv
    finally:
        srv.stop()
