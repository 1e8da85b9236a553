"""The `samverka` command line: generate, load, check, and serve's loopback-only rule for --auth off."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson

CLI = [sys.executable, "-c", "from samverka.cli import main; main()"]


def run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_serve_refuses_a_non_loopback_address_without_auth() -> None:
    """With --auth off, binding 0.0.0.0 is refused with a non-zero exit and a reason."""
    r = run("serve", "--host", "0.0.0.0", "--port", "18999", "--auth", "off", timeout=60)
    assert r.returncode == 2
    assert "refusing to bind 0.0.0.0 with --auth off" in r.stderr


def test_generate_load_check_round_trip(tmp_path: Path) -> None:
    """Generated bundles load into the store, `check` passes, and a corrupted store is caught."""
    out, data = tmp_path / "gen", tmp_path / "data"
    r = run("generate", "--patients", "5", "--seed", "7", "--out", out)
    assert r.returncode == 0, r.stderr
    files = sorted(out.glob("*.json"))
    assert files and all(orjson.loads(f.read_bytes())["type"] == "transaction" for f in files)
    r = run("load", "--data-dir", data, out)
    assert r.returncode == 0, r.stderr
    assert "resources/s" in r.stderr and "failed" not in r.stderr
    r = run("check", "--data-dir", data)
    assert r.returncode == 0, r.stderr
    assert "consistent" in r.stderr

    with sqlite3.connect(data / "samverka.sqlite") as conn:
        n = conn.execute("SELECT count(*) FROM resources WHERE type = 'Patient'").fetchone()[0]
        assert n == 5
        conn.execute("DELETE FROM idx_string WHERE res = (SELECT min(res) FROM idx_string)")
        conn.execute("DELETE FROM history WHERE seq = (SELECT max(seq) FROM history)")
    r = run("check", "--data-dir", data)
    assert r.returncode == 1
    assert "idx_string" in r.stderr and "problem" in r.stderr


def test_loading_twice_is_idempotent_for_the_region_and_patients(tmp_path: Path) -> None:
    """The region uses PUT and patients use ifNoneExist, so a second load adds no Patients."""
    out, data = tmp_path / "gen", tmp_path / "data"
    assert run("generate", "--patients", "3", "--out", out).returncode == 0
    assert run("load", "--data-dir", data, out).returncode == 0
    assert run("load", "--data-dir", data, out).returncode == 0
    with sqlite3.connect(data / "samverka.sqlite") as conn:
        patients = conn.execute("SELECT count(*) FROM resources WHERE type = 'Patient'").fetchone()[0]
        orgs = conn.execute("SELECT count(*), max(version) FROM resources WHERE type = 'Organization'").fetchone()
    assert patients == 3
    assert orgs[1] == 2  # updated in place by the second PUT, not duplicated

