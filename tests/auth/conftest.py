"""Auth fixtures: a real `samverka serve --auth on` subprocess per backend, shared by a module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from authkit import AuthServer

from support.server import BACKENDS, RunningServer, launch


def _store_args(srv: RunningServer) -> list[str]:
    args = srv.args
    if "--database" in args:
        return ["--database", args[args.index("--database") + 1]]
    return ["--data-dir", args[args.index("--data-dir") + 1]]


@pytest.fixture(scope="module", params=BACKENDS)
def auth_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """`samverka serve --auth on` on SQLite and on PostgreSQL, shared by a module's tests."""
    backend = str(request.param)
    srv = launch(request, backend, tmp_path_factory.mktemp(f"auth-{backend}"), ["--auth", "on"])
    try:
        yield AuthServer(srv, _store_args(srv))
    finally:
        srv.stop()
