"""A throwaway PostgreSQL 15 cluster for the benchmarks (same approach as tests/support/postgres_cluster.py).

Settings: fsync and synchronous_commit on (durable commits, as in production); larger shared_buffers
and max_wal_size than the defaults so that a 1M-resource load is not dominated by forced checkpoints.
Samverka and the raw-insert limit run against the same cluster with the same settings.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from common import free_port, log
from psycopg import sql

BINDIR = Path("/usr/lib/postgresql/15/bin")
SETTINGS = {
    "shared_buffers": "1GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "15min",
    "synchronous_commit": "on",
    "fsync": "on",
    "max_connections": "200",
    "wal_compression": "on",
}


class Cluster:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="samverka-bench-pg-"))
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chmod(self.root, 0o700)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [*self.as_user, str(BINDIR / args[0]), *args[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout}\n{done.stderr}")

    def start(self) -> Cluster:
        self._run("initdb", "-D", str(self.datadir), "--auth=trust", "-U", "postgres", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-instructions")
        return self.launch(SETTINGS)

    def launch(self, settings: dict[str, str], start_timeout: int = 60, ready_timeout: float = 30) -> Cluster:
        """`pg_ctl start` on the initialised data folder with `settings`, then wait until it accepts connections."""
        opts = f"-k {self.root} -c listen_addresses=127.0.0.1 -p {self.port} " + " ".join(
            f"-c {k}={v}" for k, v in settings.items())
        self._run("pg_ctl", "start", "-w", "-t", str(start_timeout), "-D", str(self.datadir), "-l",
                  str(self.root / "server.log"), "-o", opts)
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        log(f"PostgreSQL cluster at {self.url()} ({self.root})")
        return self

    def create_db(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_db(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def checkpoint(self) -> None:
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute("CHECKPOINT")

    def db_size_mb(self, name: str) -> float:
        with psycopg.connect(self.url(), autocommit=True) as c:
            row = c.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
        return round(row[0] / 2**20, 1) if row else 0.0

    def stop(self) -> None:
        try:
            if (self.datadir / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.datadir))
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
