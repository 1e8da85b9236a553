"""`samverka load --server URL --token T`: a module-style bulk load through the REST API with auth on."""

from __future__ import annotations

import subprocess
from pathlib import Path

from authkit import AuthServer, fresh_key

from support.server import samverka_command


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*samverka_command(), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_load_needs_a_token_and_works_with_one(auth_server: AuthServer, tmp_path: Path) -> None:
    """Without a token every Bundle gets 401; with a system/*.cu token all of them load."""
    out = tmp_path / "gen"
    assert _cli("generate", "--patients", "2", "--seed", "3", "--out", out).returncode == 0
    refused = _cli("load", "--server", auth_server.srv.base, out)
    assert "HTTP 401" in refused.stderr
    key = fresh_key()
    client_id = auth_server.register("system/*.cu system/Patient.s", key)
    token = auth_server.token(client_id, key, "system/*.cu system/Patient.s")
    r = _cli("load", "--server", auth_server.srv.base, "--token", token, out)
    assert r.returncode == 0, r.stderr
    assert "failed" not in r.stderr and "resources/s" in r.stderr
    count = auth_server.fhir(token).get("/Patient", params={"_summary": "count"}).json()["total"]
    assert count == 2
