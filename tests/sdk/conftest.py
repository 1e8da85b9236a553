"""SDK fixtures: a real `samverka serve --auth on` (SQLite) shared by a test module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "modules"))

from modkit import Admin  # tests/modules is on the path now

from authkit import AuthServer  # isort: skip  (modkit puts tests/auth on the path)
from support.server import RunningServer, launch  # isort: skip


def store_args(srv: RunningServer) -> list[str]:
    args = srv.args
    if "--database" in args:
        return ["--database", args[args.index("--database") + 1]]
    return ["--data-dir", args[args.index("--data-dir") + 1]]


@pytest.fixture(scope="module")
def sdk_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    srv = launch(request, "sqlite", tmp_path_factory.mktemp("sdk"), ["--auth", "on"])
    try:
        yield AuthServer(srv, store_args(srv))
    finally:
        srv.stop()


@pytest.fixture
def admin(sdk_server: AuthServer) -> Admin:
    return Admin(sdk_server)
