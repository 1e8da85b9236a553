"""Audit test helpers: the store arguments of a live server and tokens of newly registered clients."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "auth"))

from authkit import AuthServer, fresh_key

from support.server import RunningServer


def store_args(srv: RunningServer) -> list[str]:
    args = srv.args
    if "--database" in args:
        return ["--database", args[args.index("--database") + 1]]
    return ["--data-dir", args[args.index("--data-dir") + 1]]


def client_token(server: AuthServer, scope: str) -> tuple[str, str]:
    """(client_id, access token) of a newly registered backend-services client."""
    key = fresh_key("ES384")
    client_id = server.register(scope, key)
    return client_id, server.token(client_id, key, scope)
