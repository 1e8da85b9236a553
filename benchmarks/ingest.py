"""Ingest benchmarks: transaction Bundles over HTTP (a separate client process), `samverka load`, and a
cProfile of a single-process load.

    python benchmarks/ingest.py client --url http://127.0.0.1:P/fhir --data DIR --concurrency 4

The client reads each Bundle file as bytes and POSTs it unchanged (no JSON work on the client), the
region Bundle first (every patient Bundle refers to its units and practitioners), then the patient
Bundles with `concurrency` requests in flight. It prints one JSON line with its figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from common import HERE, PY, SAMVERKA, RssSampler, free_port, manifest, run, samverka_serve


async def _client(url: str, data: Path, concurrency: int, retries: int = 3,
                  progress: Path | None = None, max_seconds: float | None = None) -> dict[str, Any]:
    import httpx

    files = manifest(data)
    headers = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
    ok_resources = ok_bundles = failed = retried = 0
    statuses: dict[str, int] = {}
    errors: list[str] = []
    latencies: list[float] = []

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=600, headers=headers,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:

        async def post(name: str, n: int) -> None:
            nonlocal ok_resources, ok_bundles, failed, retried
            body = (data / name).read_bytes()
            for attempt in range(retries + 1):  # bounded
                t0 = time.perf_counter()
                r = await client.post("", content=body)
                latencies.append(time.perf_counter() - t0)
                statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
                if r.status_code == 200:
                    ok_resources += n
                    ok_bundles += 1
                    if progress is not None and ok_bundles % 50 == 0:
                        with open(progress, "a") as fh:  # a cut-short run still leaves a rate
                            fh.write(f"{time.perf_counter() - started:.1f} {ok_resources} {ok_bundles}\n")
                    return
                if r.status_code in (429, 503) and attempt < retries:
                    retried += 1
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                failed += 1
                if len(errors) < 10:
                    errors.append(f"{name}: HTTP {r.status_code} {r.text[:300]}")
                return

        first, rest = files[0], files[1:]
        await post(*first)
        queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        for item in rest:
            queue.put_nowait(item)

        async def worker() -> None:
            while True:
                if max_seconds is not None and time.perf_counter() - started > max_seconds:
                    return  # time budget spent: stop taking new Bundles (the figures say partial)
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await post(*item)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"partial": ok_bundles + failed < len(files), "budget_s": max_seconds,
            "resources": ok_resources, "bundles": ok_bundles, "failed_bundles": failed, "retried": retried,
            "statuses": statuses, "errors": errors, "seconds": round(elapsed, 2),
            "resources_per_s": round(ok_resources / elapsed, 1),
            "bundle_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
            "bundle_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1) if latencies else None}


def http_ingest(store_args: list[str], data: Path, logs: Path, tag: str, concurrency: int = 4,
                workers: int = 2, keep_server: bool = False, max_seconds: float | None = None) -> tuple[dict[str, Any], Any, Any]:
    """Start a server, run the client process against it; return (figures, server, rss sampler)."""
    port = free_port()
    server = samverka_serve(port, store_args, logs / f"server-{tag}.log", workers=workers).start()
    sampler = RssSampler(server.pid)
    try:
        with sampler:
            rc, out, _wall = run([PY, str(HERE / "ingest.py"), "client", "--url", f"http://127.0.0.1:{port}/fhir",
                                 "--data", str(data), "--concurrency", str(concurrency),
                                 "--progress", str(logs / f"progress-{tag}.txt"),
                                 *(["--max-seconds", str(max_seconds)] if max_seconds else [])],
                                logs / f"client-{tag}.log", timeout=4 * 3600)
        if rc != 0:
            raise RuntimeError(f"ingest client failed ({rc}): {out[-2000:]}")
        figures = json.loads(out.strip().splitlines()[-1])
        figures["server_rss_during_ingest"] = sampler.summary()
    except BaseException:
        server.stop()
        raise
    if not keep_server:
        server.stop()
    return figures, server, sampler


def load_ingest_budget(store_args: list[str], data: Path, logs: Path, tag: str, budget_s: float,
                       count: Any) -> dict[str, Any]:
    """`samverka load` stopped after `budget_s`: the rate comes from the store's row count over time
    (`count()` returns resources stored so far), measured from the first row to the stop."""
    import os
    import signal
    import subprocess

    fh = open(logs / f"load-{tag}.log", "ab")
    p = subprocess.Popen([SAMVERKA, "load", *store_args, str(data)], stdout=fh, stderr=subprocess.STDOUT,
                         start_new_session=True, env={**os.environ, "COLUMNS": "200", "TERM": "dumb"})
    t_start = time.perf_counter()
    samples: list[tuple[float, int]] = []
    try:
        while time.perf_counter() - t_start < budget_s and p.poll() is None:  # bounded by the budget
            time.sleep(5)
            try:
                samples.append((time.perf_counter() - t_start, int(count())))
            except Exception:  # the store may not exist yet
                pass
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
    nz = [s for s in samples if s[1] > 0]
    if len(nz) < 2:
        raise RuntimeError("too few samples of the store's row count")
    (t0, n0), (t1, n1) = nz[0], nz[-1]
    return {"partial": True, "budget_s": budget_s, "resources": n1, "seconds": round(t1, 1),
            "resources_per_s": round((n1 - n0) / (t1 - t0), 1),
            "resources_per_s_incl_startup": round(n1 / t1, 1),
            "samples": samples[::6]}


def load_ingest(store_args: list[str], data: Path, logs: Path, tag: str) -> dict[str, Any]:
    """`samverka load` straight into the store (its own process pool, one per core)."""
    rc, out, wall = run([SAMVERKA, "load", *store_args, str(data)], logs / f"load-{tag}.log", timeout=4 * 3600,
                        env={"COLUMNS": "200", "TERM": "dumb"})
    if rc != 0:
        raise RuntimeError(f"samverka load failed ({rc}): {out[-2000:]}")
    line = [x for x in out.splitlines() if x.startswith("loaded ")][-1]
    # "loaded N resources from F file(s) in S s: R resources/s"
    words = line.replace(",", "").split()
    loaded, secs = int(words[1]), float(words[words.index("in") + 1])
    return {"resources": loaded, "seconds": secs, "resources_per_s": round(loaded / secs, 1),
            "wall_seconds_incl_startup": round(wall, 1), "printed": line.strip(),
            "failed": "failed" in line}


def profile_load(data: Path, work: Path, target_resources: int = 5000, top: int = 40) -> dict[str, Any]:
    """cProfile a single-process `load` of about `target_resources` resources into a fresh SQLite store."""
    import cProfile
    import io
    import pstats
    import shutil

    from samverka.api.server import build_services
    from samverka.config import Settings
    from samverka.loader import _load_file_with

    files, total = [], 0
    for name, n in manifest(data):
        files.append(data / name)
        total += n
        if total >= target_resources:
            break
    db = work / "profile-db"
    shutil.rmtree(db, ignore_errors=True)
    svc = build_services(Settings(data_dir=db))
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for f in files:
        _load_file_with(svc, f)
    prof.disable()
    elapsed = time.perf_counter() - t0
    svc.repo.close()
    prof.dump_stats(str(work / "ingest.prof"))
    out = {}
    for key in ("cumulative", "tottime"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(key).print_stats(top)
        text = buf.getvalue()
        (work / f"ingest-profile-{key}.txt").write_text(text)
        out[key] = text
    return {"resources": total, "files": len(files), "seconds_under_profiler": round(elapsed, 2),
            "resources_per_s_under_profiler": round(total / elapsed, 1),
            "cumulative": out["cumulative"], "tottime": out["tottime"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("--concurrency", type=int, default=4)
    c.add_argument("--progress", type=Path)
    c.add_argument("--max-seconds", type=float)
    args = ap.parse_args()
    if not args.url.startswith("http://127.0.0.1:"):
        sys.exit("traffic only to 127.0.0.1")
    print(json.dumps(asyncio.run(_client(args.url, args.data, args.concurrency, progress=args.progress,
                                        max_seconds=args.max_seconds))), flush=True)


if __name__ == "__main__":
    main()
