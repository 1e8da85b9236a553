"""REST API fixtures: one real `samverka serve` subprocess per backend for the whole session.

Every test talks HTTP to it with httpx and uses its own ids (or identifier systems), so tests do not
depend on each other's data. PostgreSQL servers get their own empty schema on the session database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from support.server import BACKENDS, RunningServer, launch


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A running server (`.base`, `.client`) on SQLite or PostgreSQL, shared by the session."""
    backend = str(request.param)
    srv = launch(request, backend, tmp_path_factory.mktemp(f"api-{backend}"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: RunningServer) -> httpx.Client:
    """The server's httpx client (base URL http://127.0.0.1:PORT/fhir)."""
    return server.client


@pytest.fixture
def uid() -> str:
    """A fresh token for ids, identifier systems and names that no other test uses."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def make(client: httpx.Client) -> Callable[..., dict[str, Any]]:
    """Create a resource with POST and return the stored body (asserting the 201)."""

    def _make(resource: dict[str, Any]) -> dict[str, Any]:
        r = client.post(f"/{resource['resourceType']}", json=resource)
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    return _make


@pytest.fixture
def put(client: httpx.Client) -> Callable[..., dict[str, Any]]:
    """Create or update a resource at its own id with PUT and return the stored body."""

    def _put(resource: dict[str, Any]) -> dict[str, Any]:
        r = client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
        assert r.status_code in (200, 201), r.text
        body: dict[str, Any] = r.json()
        return body

    return _put
