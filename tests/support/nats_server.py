"""A throwaway `nats-server -js` (Debian's package `nats-server`) on a free loopback port, and a
JetStream consumer that reads a subject of a stream from its start, for the NATS bridge tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson


def find_nats_server() -> str | None:
    """The nats-server binary: PATH first, then Debian's /usr/sbin (not on every user's PATH)."""
    found = shutil.which("nats-server")
    if found:
        return found
    for candidate in ("/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NatsServer:
    """JetStream with its store in a temporary directory; `stop()` keeps the store (a restart finds its
    streams again), `remove()` deletes it."""

    binary: str
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="samverka-nats-")))
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 20.0) -> NatsServer:
        log = (self.root / "server.log").open("ab")
        before = len(self.log()) if log.tell() else 0
        self.proc = subprocess.Popen([self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port),
                                      "-sd", str(self.root / "store"), "--server_name", f"test-{self.port}"],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while "Server is ready" not in self.log()[before:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server did not start on port {self.port}:\n{self.log()}")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class Received:
    subject: str
    msg_id: str | None
    stream_seq: int
    body: dict[str, Any]


async def _consume(url: str, stream: str, subject: str, count: int, timeout: float, settle: float) -> list[Received]:
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=1,
                            reconnect_time_wait=0)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while True:  # the bridge creates the stream with its first publish
            try:
                sub = await js.pull_subscribe(subject, durable=f"test-{uuid.uuid4().hex[:12]}", stream=stream)
                break
            except NotFoundError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        got: list[Received] = []
        while True:
            wait = settle if len(got) >= count else max(0.1, min(1.0, deadline - time.monotonic()))
            try:
                msgs = await sub.fetch(100, timeout=wait)
            except (TimeoutError, nats.errors.TimeoutError):
                msgs = []
            for m in msgs:
                await m.ack()
                got.append(Received(m.subject, (m.headers or {}).get("Nats-Msg-Id"), m.metadata.sequence.stream,
                                    orjson.loads(m.data)))
            if not msgs and (len(got) >= count or time.monotonic() > deadline):
                return got
    finally:
        await nc.close()


def consume(url: str, stream: str, subject: str, count: int, timeout: float = 30.0,
            settle: float = 1.0) -> list[Received]:
    """Every message of `subject` in the stream, from its first: wait until there are at least `count`
    (or `timeout`), then `settle` seconds more for any that should not be there."""
    return asyncio.run(_consume(url, stream, subject, count, timeout, settle))
