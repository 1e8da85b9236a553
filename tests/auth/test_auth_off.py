"""`serve --auth off`: for local development only, refused on a non-loopback address; and auth on by default."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support.server import launch, samverka_command


def test_auth_off_is_refused_on_a_non_loopback_address(tmp_path: Path) -> None:
    r = subprocess.run([*samverka_command(), "serve", "--data-dir", str(tmp_path), "--host", "0.0.0.0",
                        "--port", "18998", "--auth", "off"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "refusing to bind 0.0.0.0 with --auth off" in r.stderr


def test_auth_off_on_loopback_needs_no_token(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    srv = launch(request, "sqlite", tmp_path, ["--auth", "off"])
    try:
        assert srv.client.get("/Patient").status_code == 200
        assert srv.client.post("/Patient", json={"resourceType": "Patient"}).status_code == 201
        assert srv.client.get("/.well-known/smart-configuration").status_code == 404
    finally:
        srv.stop()


def test_auth_is_on_by_default() -> None:
    """Settings and `serve` both default to auth on (--auth off must be asked for)."""
    from samverka.config import Settings

    assert Settings().auth is True
    r = subprocess.run([*samverka_command(), "serve", "--help"], capture_output=True, text=True, timeout=60,
                       env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "TERM": "dumb"})
    assert r.returncode == 0
    line = next(x for x in r.stdout.splitlines() if "--auth" in x)
    assert "[default: on]" in line
