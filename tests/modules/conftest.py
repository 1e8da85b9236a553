"""Module registry fixtures: a real `samverka serve --auth on` per backend, shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from modkit import Admin

from support.server import BACKENDS, RunningServer, launch

from authkit import AuthServer  # isort: skip  (modkit puts tests/auth on the path)


def store_args(srv: RunningServer) -> list[str]:
    args = srv.args
    if "--database" in args:
        return ["--database", args[args.index("--database") + 1]]
    return ["--data-dir", args[args.index("--data-dir") + 1]]


@pytest.fixture(scope="module", params=BACKENDS)
def module_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    backend = str(request.param)
    srv = launch(request, backend, tmp_path_factory.mktemp(f"modules-{backend}"), ["--auth", "on"])
    try:
        yield AuthServer(srv, store_args(srv))
    finally:
        srv.stop()


@pytest.fixture
def admin(module_server: AuthServer) -> Admin:
    return Admin(module_server)
