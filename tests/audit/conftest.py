"""Audit fixtures: a real `samverka serve --auth on` per backend, with tokens from real client assertions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from auditkit import store_args
from authkit import AuthServer

from support.server import BACKENDS, launch


@pytest.fixture(scope="module", params=BACKENDS)
def audit_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """`samverka serve --auth on` on SQLite and on PostgreSQL, shared by a module's tests."""
    backend = str(request.param)
    srv = launch(request, backend, tmp_path_factory.mktemp(f"audit-{backend}"), ["--auth", "on"])
    try:
        yield AuthServer(srv, store_args(srv))
    finally:
        srv.stop()
