"""Drill fixtures: real `samverka serve` subprocesses on free loopback ports, on SQLite or PostgreSQL.

A server runs in its own session (process group), so `kill9()` takes uvicorn's worker processes
down with it, as `kill -9` of a whole service would. Every wait here is bounded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

START_TIMEOUT = 45.0  # seconds for a server (all its workers) to come up
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samverka_cmd() -> list[str]:
    script = Path(sys.executable).parent / "samverka"
    if script.exists():
        return [str(script)]
    found = shutil.which("samverka")
    if found:
        return [found]
    return [sys.executable, "-c", "from samverka.cli import main; main()"]


def _with_param(url: str, key: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


@dataclass
class Store:
    """Where a server keeps its data: a SQLite data dir or a PostgreSQL URL (tagged with an application_name)."""

    backend: str
    data_dir: Path
    database: str | None = None
    app_name: str = field(default_factory=lambda: f"samverka-drill-{uuid.uuid4().hex[:10]}")

    def args(self) -> list[str]:
        return ["--database", self.database] if self.database else ["--data-dir", str(self.data_dir)]

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "samverka.sqlite"

    def pg_backends(self) -> int:
        """PostgreSQL sessions opened by servers on this store (they all carry our application_name)."""
        assert self.database is not None
        with psycopg.connect(self.database, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                               (self.app_name,)).fetchone()
        return int(row[0]) if row else 0

    def wait_no_orphans(self, timeout: float = 30.0) -> None:
        """After a kill -9, wait until PostgreSQL has noticed and ended the dead server's sessions."""
        if self.database is None:
            return
        deadline = time.monotonic() + timeout
        while self.pg_backends() > 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL sessions of the killed server still alive after {timeout} s")
            time.sleep(0.05)

    def probe(self) -> WriteProbe:
        return WriteProbe(self)

    def check(self, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """`samverka check` on this store."""
        return subprocess.run([*samverka_cmd(), "check", *self.args()], capture_output=True, text=True,
                              timeout=timeout, check=False)


class WriteProbe:
    """Is a server inside a database write transaction right now? Used to aim a kill -9 at the write phase.

    SQLite (WAL): a writer holds the WAL write lock, a POSIX lock on byte 120 of the `-shm` file, from
    BEGIN IMMEDIATE to COMMIT; F_GETLK sees it without taking it. PostgreSQL: one of the server's
    sessions has a transaction id (it has written something in an open transaction).
    """

    _WAL_WRITE_LOCK = 120  # WALINDEX_LOCK_OFFSET + WAL_WRITE_LOCK in SQLite's shared-memory file

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pg: psycopg.Connection[Any] | None = None
        if store.database:
            self._pg = psycopg.connect(store.database, autocommit=True, connect_timeout=10)

    def writing(self) -> bool:
        if self._pg is not None:
            row = self._pg.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                                   " AND backend_xid IS NOT NULL", (self.store.app_name,)).fetchone()
            return bool(row and row[0])
        try:
            fd = os.open(f"{self.store.sqlite_path}-shm", os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, self._WAL_WRITE_LOCK, 1, 0)
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        finally:
            os.close(fd)
        return struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()


def _group_pids(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            out.append(int(entry))
    return out


def _opened(pid: int, path: Path) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    target = str(path.resolve())
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


class Server:
    """One `samverka serve` process group: `start()`, then `kill9()` (the `launch` fixture does both)."""

    def __init__(self, store: Store, workers: int = 1, log_dir: Path | None = None) -> None:
        self.store = store
        self.workers = workers
        self.log_dir = log_dir or store.data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = self.log_dir / "server.log"
        self.restart_timings = (0.0, 0.0, 0.0)  # (orphans gone, restart, check) in seconds, set by drills

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def start(self) -> Server:
        last: Exception | None = None
        for _attempt in range(3):  # a free port can be taken between finding and binding it
            try:
                self._start_once()
                return self
            except _PortTaken as exc:
                last = exc
        raise AssertionError(f"could not start the server: {last}")

    def _start_once(self) -> None:
        self.port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        store_args = self.store.args()
        if self.store.database:
            store_args = ["--database", _with_param(self.store.database, "application_name", self.store.app_name)]
        cmd = [*samverka_cmd(), "serve", *store_args, "--port", str(self.port), "--workers", str(self.workers),
               "--auth", "off"]
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                text = self.log_path.read_text(errors="replace")[-3000:]
                self.proc = None
                if "address already in use" in text.lower():
                    raise _PortTaken(text)
                raise AssertionError(f"the server exited during startup:\n{text}")
            if self._workers_ready() and self._healthy():
                return
            if time.monotonic() > deadline:
                text = self.log_path.read_text(errors="replace")[-3000:]
                self.kill9()
                raise AssertionError(f"the server did not come up within {START_TIMEOUT} s:\n{text}")
            time.sleep(0.05)

    def _workers_ready(self) -> bool:
        """Every worker has opened its store (so none of them is still importing when a drill starts)."""
        assert self.proc is not None
        if self.store.database:
            return self.store.pg_backends() >= self.workers
        pids = _group_pids(self.proc.pid)
        return sum(_opened(pid, self.store.sqlite_path) for pid in pids) >= self.workers

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def kill9(self) -> None:
        """SIGKILL the whole process group (supervisor and uvicorn workers) and reap it."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"server {pgid} survived SIGKILL") from exc
        deadline = time.monotonic() + STOP_TIMEOUT
        while _group_pids(pgid) and time.monotonic() < deadline:  # workers are reparented, not our children
            time.sleep(0.02)
        self.proc = None

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=timeout,
                            headers={"Accept": "application/fhir+json"})


class _PortTaken(Exception):
    pass


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store on each backend."""
    if request.param == "sqlite":
        return Store("sqlite", tmp_path / "data")
    url = request.getfixturevalue("pg_fresh_url")
    return Store("postgresql", tmp_path / "data", url)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def busy_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with two worker processes (so writers meet in the store's locks), shared by a module's drills."""
    tmp = tmp_path_factory.mktemp(f"drill-{request.param}")
    if request.param == "sqlite":
        s = Server(Store("sqlite", tmp / "data"), workers=2, log_dir=tmp / "log")
    else:
        pg_session = request.getfixturevalue("pg_session")  # a fresh schema, like pg_fresh_url, but per module
        s = Server(Store("postgresql", tmp / "data", pg_session.fresh()), workers=2, log_dir=tmp / "log")
    try:
        yield s.start()
    finally:
        s.kill9()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """`launch(store, workers=1)`: a started server, killed at teardown whatever happened."""
    started: list[Server] = []

    def start(store: Store, workers: int = 1) -> Server:
        s = Server(store, workers, tmp_path / "log")
        started.append(s)
        return s.start()

    yield start
    for s in started:
        s.kill9()
