"""Shared helpers for the benchmarks: work folder, results file, server processes, RSS sampling."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"
PY = sys.executable
SAMVERKA = shutil.which("samverka") or str(Path(sys.executable).parent / "samverka")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Results:
    """A JSON file updated after every measurement, so a partial run still leaves its figures."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


# ---- manifest of the generated data: (file, entries) in load order --------------------------------

def manifest(data_dir: Path) -> list[tuple[str, int]]:
    cache = data_dir.parent / f"manifest-{data_dir.name}.json"  # not inside: `samverka load DIR` reads every *.json
    if cache.exists():
        return [tuple(x) for x in json.loads(cache.read_text())]  # type: ignore[misc]
    out = []
    for f in sorted(data_dir.glob("*.json")):
        doc = orjson.loads(f.read_bytes())
        out.append((f.name, len(doc.get("entry") or [])))
    cache.write_text(json.dumps(out))
    return out


# ---- process tree memory ------------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:  # bounded: a process tree is finite and acyclic
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples the summed VmRSS of a process tree every `interval` s; remembers per-process VmHWM."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval = pid, interval
        self.peak_sum_rss_kb = 0
        self.peak_sum_pss_kb = 0
        self.peak_sum_anon_kb = 0
        self.peak_sum_file_kb = 0
        self.hwm_kb: dict[int, int] = {}
        self.procs = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        pids = tree(self.pid)
        self.procs = max(self.procs, len(pids))
        self.peak_sum_rss_kb = max(self.peak_sum_rss_kb, sum(_status_kb(p, "VmRSS") for p in pids))
        # PSS splits shared pages between processes: the tree's real footprint (sum of RSS counts them twice)
        self.peak_sum_pss_kb = max(self.peak_sum_pss_kb, sum(_pss_kb(p) for p in pids))
        # anonymous (heap) vs file-backed (SQLite's mmap of the database, shared page cache) resident memory
        self.peak_sum_anon_kb = max(self.peak_sum_anon_kb, sum(_status_kb(p, "RssAnon") for p in pids))
        self.peak_sum_file_kb = max(self.peak_sum_file_kb, sum(_status_kb(p, "RssFile") for p in pids))
        for p in pids:
            hwm = _status_kb(p, "VmHWM")
            if hwm:
                self.hwm_kb[p] = max(self.hwm_kb.get(p, 0), hwm)

    def sample_now(self) -> None:
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._t.join(5)

    def summary(self) -> dict[str, Any]:
        return {"peak_sum_vmrss_mb": round(self.peak_sum_rss_kb / 1024, 1),
                "peak_sum_pss_mb": round(self.peak_sum_pss_kb / 1024, 1),
                "peak_sum_rssanon_mb": round(self.peak_sum_anon_kb / 1024, 1),
                "peak_sum_rssfile_mb": round(self.peak_sum_file_kb / 1024, 1),
                "sum_vmhwm_mb": round(sum(self.hwm_kb.values()) / 1024, 1),
                "per_process_vmhwm_mb": {str(k): round(v / 1024, 1) for k, v in sorted(self.hwm_kb.items())},
                "processes": self.procs}


# ---- servers --------------------------------------------------------------------------------------

class Server:
    """`samverka serve` (or any command) in its own process group; stopped by its own pid/pgid."""

    def __init__(self, cmd: list[str], port: int, log_path: Path, env: dict[str, str] | None = None,
                 ready_path: str = "/fhir/metadata") -> None:
        self.cmd, self.port, self.log_path, self.ready_path = cmd, port, log_path, ready_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> Server:
        import httpx

        fh = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}); see {self.log_path}")
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=5)
                if r.status_code == 200:
                    # with --workers N, wait until every worker answers (a few more probes)
                    time.sleep(1.0)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s; see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is our child's pid
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def samverka_serve(port: int, store_args: list[str], log_path: Path, workers: int = 2) -> Server:
    # the benchmarks measure the FHIR API itself; auth on/off is compared separately
    import importlib.util

    spec = importlib.util.find_spec("samverka.cli")  # the pinned snapshot: older commits have no --auth
    has_auth = bool(spec and spec.origin and "--auth" in Path(spec.origin).read_text())
    return Server([SAMVERKA, "serve", *store_args, "--port", str(port), "--workers", str(workers),
                   *(["--auth", "off"] if has_auth else [])],
                  port, log_path)


def run(cmd: list[str], log_path: Path, timeout: float, env: dict[str, str] | None = None
        ) -> tuple[int, str, float]:
    """Run a command to completion (bounded by `timeout`); returns (rc, output, wall seconds)."""
    t0 = time.perf_counter()
    with open(log_path, "ab") as fh:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                           env={**os.environ, **(env or {})}, cwd=REPO, check=False)
        fh.write(p.stdout)
    return p.returncode, p.stdout.decode(errors="replace"), time.perf_counter() - t0


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
