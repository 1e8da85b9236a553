"""Start and stop a real `samverka serve` subprocess on a free loopback port, for the REST API tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


class ServerStartError(RuntimeError):
    """The server did not come up; the message carries its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samverka_command() -> list[str]:
    """The installed `samverka` console script next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).with_name("samverka")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("samverka")
    if found:
        return [found]
    # the console script is missing (not installed editable?): call the entry point directly
    return [sys.executable, "-c", "from samverka.cli import main; main()"]


@dataclass
class RunningServer:
    """A live server: `base` is http://127.0.0.1:PORT/fhir and `client` an httpx.Client on it."""

    base: str
    client: httpx.Client
    proc: subprocess.Popen[bytes]
    log_path: Path
    backend: str
    args: list[str] = field(default_factory=list)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # its own session: the server and its children only
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def start_server(
    data_dir: Path,
    database: str | None = None,
    extra_args: list[str] | tuple[str, ...] = (),
    timeout: float = 60.0,
    backend: str = "sqlite",
) -> RunningServer:
    """Run `samverka serve` and wait until GET /fhir/metadata answers 200; raise with the log otherwise."""
    data_dir.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between probing and binding: retry on another
        port = free_port()
        args = [*samverka_command(), "serve", "--data-dir", str(data_dir), "--port", str(port)]
        if database:
            args += ["--database", database]
        if "--auth" not in extra_args:
            args += ["--auth", "off"]  # these tests are about the FHIR API; tests/auth runs with auth on
        args += list(extra_args)
        log_path = data_dir / f"server-{port}.log"
        log = log_path.open("wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        base = f"http://127.0.0.1:{port}/fhir"
        client = httpx.Client(base_url=base, timeout=60.0)
        server = RunningServer(base, client, proc, log_path, backend, args)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                if client.get("/metadata").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        server.stop()
        last_error = (f"`{' '.join(args)}` did not answer GET /fhir/metadata "
                      f"(exit code {proc.returncode}); its log:\n{server.log()}")
        if "address already in use" not in server.log().lower():
            break
    raise ServerStartError(last_error)


def expect_outcome(response: httpx.Response, *statuses: int) -> list[dict[str, Any]]:
    """Assert an OperationOutcome answer with one of `statuses`; return its issues."""
    assert response.status_code in statuses, f"{response.status_code} not in {statuses}: {response.text[:2000]}"
    assert response.headers.get("content-type", "").startswith("application/fhir+json"), response.headers
    body = response.json()
    assert body.get("resourceType") == "OperationOutcome", body
    issues: list[dict[str, Any]] = body.get("issue") or []
    assert issues, body
    return issues


def launch(request: pytest.FixtureRequest, backend: str, data_dir: Path,
           extra_args: list[str] | tuple[str, ...] = ()) -> RunningServer:
    """Start a server on `backend` for a fixture; a start-up failure fails the test with the server's log.

    PostgreSQL servers get an empty schema of their own on the session database (`pg_session`).
    """
    database = None
    if backend == "postgresql":
        database = request.getfixturevalue("pg_session").fresh()
    try:
        return start_server(data_dir, database, extra_args, backend=backend)
    except ServerStartError as exc:
        pytest.fail(str(exc), pytrace=False)
