"""The processes of a drill: the platform (`samverka serve`), example modules (`python -m examples.<name>`)
and `samverka` commands, each in its own session so that `kill9()` is a `kill -9` of the whole service."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

START_TIMEOUT = 60.0


class DrillError(RuntimeError):
    """A step of the drill could not be carried out (not a failed check): the message says which."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samverka_command() -> list[str]:
    beside = Path(sys.executable).with_name("samverka")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("samverka")
    return [found] if found else [sys.executable, "-m", "samverka"]


def _tail(path: Path, n: int = 2500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


class Process:
    """A long-running subprocess in its own session, logging to `log`; healthy when `health_url` answers 200."""

    def __init__(self, name: str, cmd: list[str], log: Path, health_url: str, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name, self.cmd, self.log, self.health_url = name, cmd, log, health_url
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = START_TIMEOUT) -> Process:
        return self.spawn().ready(timeout)

    def spawn(self) -> Process:
        """Start the process without waiting for it (see `ready`)."""
        with self.log.open("ab") as out:
            out.write(f"\n--- {' '.join(self.cmd)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.cwd, start_new_session=True)
        self.starts += 1
        return self

    def ready(self, timeout: float = START_TIMEOUT) -> Process:
        """Wait until the health URL answers 200; DrillError with the log's tail if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = self.proc.returncode if self.proc is not None else None
                raise DrillError(f"{self.name} exited during start-up (code {code}):\n{_tail(self.log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.health_url, timeout=2.0).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                self.kill9()
                raise DrillError(f"{self.name} did not answer {self.health_url} within {timeout:.0f} s:\n"
                                 f"{_tail(self.log)}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the process group (the service and any workers it started) and reap it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.proc = None


class Platform(Process):
    """`samverka serve --auth on` on a fixed loopback port (a restart comes back on the same port, where the
    modules look for it)."""

    def __init__(self, store_args: list[str], log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.store_args = store_args
        cmd = [*samverka_command(), "serve", *store_args, "--port", str(self.port), "--auth", "on",
               "--event-backoff", "0.2", "--event-backoff-max", "1", "--event-lease", "2"]
        super().__init__("the platform", cmd, log, f"{self.origin}/healthz")

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"{self.origin}/fhir"

    def command(self, *args: str, timeout: float = 120.0) -> str:
        """Run `samverka ARGS --data-dir/--database ...` on this platform's store; its stdout, or DrillError."""
        cmd = [*samverka_command(), *args, *self.store_args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                           env={**os.environ, "COLUMNS": "200"})
        if r.returncode != 0:
            raise DrillError(f"`samverka {' '.join(args)}` exited {r.returncode}: {r.stderr.strip()[-2000:]}")
        return r.stdout


def module_process(name: str, examples_root: Path, platform: Platform, key: Path, client_id: str, port: int,
                   data: Path, log: Path) -> Process:
    """`python -m examples.<name>` with the examples' parent folder on the path."""
    cmd = [sys.executable, "-m", f"examples.{name}", "--server", platform.base, "--key", str(key),
           "--client-id", client_id, "--port", str(port), "--data", str(data)]
    path = os.pathsep.join(p for p in (str(examples_root), os.environ.get("PYTHONPATH", "")) if p)
    return Process(name, cmd, log, f"http://127.0.0.1:{port}/healthz", env={"PYTHONPATH": path},
                   cwd=examples_root)
