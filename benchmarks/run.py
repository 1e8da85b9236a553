"""One command for the ingest and read benchmarks:

    python benchmarks/run.py [--resources 1000000] [--quick] [--steps a,b,...] [--fresh]

Data: `samverka generate` into benchmarks/.work/data-<P>p (generated once, reused), P = resources/100.
Every figure is written to benchmarks/.work/results-<P>p.json as soon as it is measured (a partial run
keeps what finished; a rerun skips finished steps unless --fresh), and a summary to summary-<P>p.md.
Steps run one after another, never in parallel (2 cores: anything else running would skew them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SAMVERKA, WORK, Results, RssSampler, free_port, log, manifest, median

ALL_STEPS = ["profile", "http_sqlite", "raw_sqlite", "load_sqlite", "raw_pg", "ceiling", "http_pg", "load_pg",
             "raw_pg_copy"]
TARGETS = {"http_sqlite": 2500, "http_pg": 2000, "load_sqlite": 5000, "load_pg": 5000}


class LoadAvg:
    """Other work shares this machine (CI, test suites): sample the 1-min load average and the busy
    share of both cores every 5 s during a step, so each figure says how contended the machine was."""

    def __init__(self) -> None:
        import threading

        self.samples: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._cpu0 = self._cpu()

    @staticmethod
    def _cpu() -> tuple[int, int]:
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        idle = f[3] + f[4]
        return sum(f) - idle, sum(f)

    def _run(self) -> None:
        while not self._stop.wait(5):
            self.samples.append(float(open("/proc/loadavg").read().split()[0]))

    def __enter__(self) -> LoadAvg:
        self._cpu0 = self._cpu()
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(6)
        b1, t1 = self._cpu()
        self.busy = round(100 * (b1 - self._cpu0[0]) / max(1, t1 - self._cpu0[1]), 1)

    def summary(self) -> dict[str, float]:
        s = self.samples or [0.0]
        return {"loadavg1_mean": round(sum(s) / len(s), 2), "loadavg1_max": max(s),
                "cpu_busy_pct_both_cores": self.busy}


def pin_code(mode: str) -> str:
    """Other engineers edit src/ while this runs: by default benchmark the committed HEAD, extracted into
    .work/code-<commit>/src and put first on PYTHONPATH (for this process and every server/loader)."""
    repo = WORK.parent.parent
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD" if mode in ("head", "worktree") else mode],
                          capture_output=True, text=True, check=True).stdout.strip()
    if mode == "worktree":
        return f"working tree on {head[:10]} (uncommitted edits included)"
    snap = WORK / f"code-{head[:10]}"
    if not (snap / ".complete").exists():
        shutil.rmtree(snap, ignore_errors=True)
        snap.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(repo), "archive", head, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(snap)], input=archive.stdout, check=True)
        (snap / ".complete").touch()
    os.environ["PYTHONPATH"] = str(snap / "src") + (os.pathsep + os.environ["PYTHONPATH"]
                                                    if os.environ.get("PYTHONPATH") else "")
    sys.path.insert(0, str(snap / "src"))
    return f"commit {head[:10]} (snapshot {snap})"


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    git = subprocess.run(["git", "-C", str(WORK.parent.parent), "log", "-1", "--format=%h %s"], capture_output=True,
                         text=True, check=False).stdout.strip()
    return {"date": subprocess.run(["date"], capture_output=True, text=True).stdout.strip(),
            "nproc": str(os.cpu_count()), "cpu": cpu,
            "free_h": subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.strip(),
            "python": platform.python_version(), "git_head": git,
            "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.strip().splitlines()[0]
            if shutil.which("wrk") else "missing"}


def ensure_data(patients: int) -> Path:
    data = WORK / f"data-{patients}p"
    if not (data / ".complete").exists():
        shutil.rmtree(data, ignore_errors=True)
        log(f"generating {patients} patients into {data}")
        subprocess.run([SAMVERKA, "generate", "--patients", str(patients), "--seed", "1", "--out", str(data)],
                       check=True, timeout=3600)
        (data / ".complete").touch()
    return data


def reads(port: int, lua: Path, logs: Path, tag: str, repeats: int, seconds: int, server_pid: int
          ) -> dict[str, object]:
    from read import warmup, wrk

    warmup(port, lua, logs, tag)
    runs = []
    sampler = RssSampler(server_pid)
    with sampler:
        for i in range(repeats):
            r = wrk(port, lua, logs, f"{tag}-{i + 1}", seconds=seconds)
            log(f"  {tag} run {i + 1}: {r['requests_per_s']:,.0f} req/s p50 {r.get('p50_ms')} ms "
                f"p99 {r.get('p99_ms')} ms non-2xx {r['non_2xx']}")
            runs.append(r)
    return {"runs": runs, "requests_per_s": median([r["requests_per_s"] for r in runs]),
            "p50_ms": median([r["p50_ms"] for r in runs]), "p99_ms": median([r["p99_ms"] for r in runs]),
            "non_2xx_total": sum(r["non_2xx"] for r in runs), "server_rss_during_reads": sampler.summary()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resources", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="about 50k resources, short reads")
    ap.add_argument("--steps", default=",".join(ALL_STEPS), help="comma-separated subset of " + ",".join(ALL_STEPS))
    ap.add_argument("--fresh", action="store_true", help="re-measure steps already in the results file")
    ap.add_argument("--read-seconds", type=int, default=None)
    ap.add_argument("--read-repeats", type=int, default=3)
    ap.add_argument("--load-budget-s", type=float, default=None,
                    help="stop `samverka load` after this many seconds; rate from the store's row count (partial)")
    ap.add_argument("--ingest-budget-s", type=float, default=None,
                    help="stop posting new Bundles after this many seconds (HTTP ingest; figures marked partial)")
    ap.add_argument("--code", default="head",
                    help="head (default: the committed HEAD), worktree (as it is), or a commit to benchmark")
    args = ap.parse_args()
    code = pin_code(args.code)

    resources = 50_000 if args.quick else args.resources
    read_seconds = args.read_seconds or (10 if args.quick else 30)
    patients = max(1, math.ceil(resources / 100))
    WORK.mkdir(parents=True, exist_ok=True)
    logs = WORK / f"logs-{patients}p"
    logs.mkdir(exist_ok=True)
    res = Results(WORK / f"results-{patients}p.json")
    steps = [s for s in args.steps.split(",") if s]
    if args.fresh:  # re-measure the selected steps only; keep every other figure
        for s_ in steps:
            res.data.pop(s_, None)
    unknown = set(steps) - set(ALL_STEPS)
    if unknown:
        sys.exit(f"unknown steps: {unknown}")
    res.put("machine", {**machine(), "code": code})
    data = ensure_data(patients)
    files = manifest(data)
    total = sum(n for _f, n in files)
    res.put("data", {"dir": str(data), "patients": patients, "files": len(files), "resources": total,
                     "bytes": sum((data / f).stat().st_size for f, _n in files)})
    log(f"data: {total:,} resources in {len(files)} transaction Bundles")

    def todo(step: str) -> bool:
        if step not in steps:
            return False
        if step in res.data and "error" not in res.data[step]:
            log(f"{step}: already measured, skipping (use --fresh)")
            return False
        return True

    sqlite_http_dir = WORK / f"db-{patients}p-http-sqlite"
    sqlite_load_dir = WORK / f"db-{patients}p-load-sqlite"
    cluster = None

    def pg():
        nonlocal cluster
        if cluster is None:
            from pg import Cluster

            cluster = Cluster().start()
        return cluster

    def step(name: str, fn) -> None:
        if not todo(name):
            return
        log(f"== {name}")
        t0 = time.perf_counter()
        load = LoadAvg()
        try:
            with load:
                out = fn()
            out["step_wall_seconds"] = round(time.perf_counter() - t0, 1)
            out["machine_load"] = load.summary()
            res.put(name, out)
            log(f"== {name} done: " + json.dumps({k: v for k, v in out.items()
                                                  if not isinstance(v, (dict, list, str)) or k == "read"})[:600])
        except Exception as exc:  # keep going: the other steps still mean something
            import traceback

            traceback.print_exc()
            res.put(name, {"error": f"{type(exc).__name__}: {exc}"[:2000]})

    def do_profile():
        from ingest import profile_load

        return profile_load(data, WORK, target_resources=5000)

    def do_http_sqlite():
        from ingest import http_ingest
        from read import ids_sqlite, write_id_list

        shutil.rmtree(sqlite_http_dir, ignore_errors=True)
        figures, server, sampler = http_ingest(["--data-dir", str(sqlite_http_dir)], data, logs, "sqlite",
                                               keep_server=True, max_seconds=args.ingest_budget_s)
        log(f"  ingest: {figures['resources_per_s']:,.0f} resources/s, failed bundles {figures['failed_bundles']}")
        res.put("http_sqlite_partial", figures)
        try:
            lua = write_id_list(ids_sqlite(sqlite_http_dir / "samverka.sqlite"), WORK, "sqlite")
            figures["read"] = reads(server.port, lua, logs, "read-sqlite", args.read_repeats, read_seconds, server.pid)
            sampler.sample_now()  # final VmHWM of every worker: peak over ingest and reads
            figures["server_vmhwm_total"] = sampler.summary()
        finally:
            server.stop()
        figures["db_mb"] = round(sum(p.stat().st_size for p in sqlite_http_dir.glob("*")) / 2**20, 1)
        return figures

    def do_http_pg():
        from ingest import http_ingest
        from read import ids_postgres, write_id_list

        c = pg()
        url = c.create_db("http_pg")
        figures, server, sampler = http_ingest(["--database", url], data, logs, "pg", keep_server=True,
                                               max_seconds=args.ingest_budget_s)
        log(f"  ingest: {figures['resources_per_s']:,.0f} resources/s, failed bundles {figures['failed_bundles']}")
        res.put("http_pg_partial", figures)
        try:
            lua = write_id_list(ids_postgres(url), WORK, "pg")
            figures["read"] = reads(server.port, lua, logs, "read-pg", args.read_repeats, read_seconds, server.pid)
            sampler.sample_now()
            figures["server_vmhwm_total"] = sampler.summary()
        finally:
            server.stop()
        figures["db_mb"] = c.db_size_mb("http_pg")
        c.drop_db("http_pg")
        c.checkpoint()
        return figures

    def raw_source() -> Path:
        # the full HTTP-ingested store first: a time-budgeted `load` store may hold only part of the data
        for d in (sqlite_http_dir, sqlite_load_dir):
            if (d / "samverka.sqlite").exists():
                return d / "samverka.sqlite"
        raise RuntimeError("no Samverka-loaded SQLite store to take the rows from (run http_sqlite or load_sqlite)")

    def do_raw_sqlite():
        from physical import raw_sqlite, sizes_from_store, source_counts

        src = raw_source()
        sizes = sizes_from_store(src)
        out = raw_sqlite(src, WORK / f"raw-{patients}p.sqlite", sizes)
        out["source"] = str(src)
        out["source_counts"] = source_counts(src)
        for p in WORK.glob(f"raw-{patients}p.sqlite*"):
            p.unlink()
        return out

    def do_raw_pg(method: str = "executemany"):
        from physical import raw_postgres, sizes_from_store

        c = pg()
        src = raw_source()
        url = c.create_db("raw_pg")
        out = raw_postgres(src, url, sizes_from_store(src), method=method)
        out["source"] = str(src)
        c.drop_db("raw_pg")
        c.checkpoint()
        return out

    def do_ceiling():
        from read import ceiling_server, ids_sqlite, write_id_list

        src = sqlite_http_dir / "samverka.sqlite"
        if not src.exists():
            raise RuntimeError("needs the http_sqlite store")
        lua = write_id_list(ids_sqlite(src), WORK, "ceiling")
        port = free_port()
        server = ceiling_server(src, port, logs).start()
        try:
            return reads(port, lua, logs, "read-ceiling", args.read_repeats, read_seconds, server.pid)
        finally:
            server.stop()

    def do_load_sqlite():
        from ingest import load_ingest, load_ingest_budget

        shutil.rmtree(sqlite_load_dir, ignore_errors=True)
        if args.load_budget_s:
            import sqlite3

            def count() -> int:
                c = sqlite3.connect(f"file:{sqlite_load_dir / 'samverka.sqlite'}?mode=ro", uri=True, timeout=5)
                try:
                    return c.execute("SELECT count(*) FROM resources").fetchone()[0]
                finally:
                    c.close()

            return load_ingest_budget(["--data-dir", str(sqlite_load_dir)], data, logs, "sqlite",
                                      args.load_budget_s, count)
        return load_ingest(["--data-dir", str(sqlite_load_dir)], data, logs, "sqlite")

    def do_load_pg():
        from ingest import load_ingest

        c = pg()
        url = c.create_db("load_pg")
        out = load_ingest(["--database", url], data, logs, "pg")
        c.drop_db("load_pg")
        c.checkpoint()
        return out

    try:
        # most important first: a long run cut short keeps the figures the targets are about
        step("profile", do_profile)
        step("http_sqlite", do_http_sqlite)
        step("raw_sqlite", do_raw_sqlite)
        step("load_sqlite", do_load_sqlite)
        step("raw_pg", do_raw_pg)
        step("ceiling", do_ceiling)
        step("http_pg", do_http_pg)
        step("load_pg", do_load_pg)
        step("raw_pg_copy", lambda: do_raw_pg("copy"))
    finally:
        if cluster is not None:
            cluster.stop()
    summary = summarize(res.data)
    (WORK / f"summary-{patients}p.md").write_text(summary)
    print(summary)


def _rate(d: dict, key: str) -> float | None:
    v = d.get(key)
    return v.get("resources_per_s") if isinstance(v, dict) and "error" not in v else None


def summarize(d: dict) -> str:
    lines = [f"# Samverka benchmark summary ({d.get('data', {}).get('resources', '?'):,} resources)", ""]
    m = d.get("machine", {})
    lines += [f"{m.get('date')} | {m.get('nproc')} cores | {m.get('cpu')} | git {m.get('git_head')}", ""]
    lines += ["| ingest | resources/s | target | physical limit (raw) | ratio to raw |", "|---|---|---|---|---|"]
    raw = {"sqlite": _rate(d, "raw_sqlite"), "pg": _rate(d, "raw_pg")}
    for key, label, db in (("http_sqlite", "HTTP transactions, 4 clients, SQLite", "sqlite"),
                           ("http_pg", "HTTP transactions, 4 clients, PostgreSQL", "pg"),
                           ("load_sqlite", "`samverka load`, SQLite", "sqlite"),
                           ("load_pg", "`samverka load`, PostgreSQL", "pg")):
        r = _rate(d, key)
        base = raw[db]
        err = d.get(key, {}).get("error") if isinstance(d.get(key), dict) else None
        lines.append(f"| {label} | {r if r is not None else (err or 'not run')} | ≥ {TARGETS[key]:,} | "
                     f"{base if base else '-'} | {f'{r / base:.2f}' if r and base else '-'} |")
    for key, label in (("raw_sqlite", "raw executemany, SQLite"), ("raw_pg", "raw executemany, PostgreSQL"),
                       ("raw_pg_copy", "raw COPY, PostgreSQL")):
        lines.append(f"| {label} | {_rate(d, key) or d.get(key, {}).get('error', 'not run')} | | | |")
    lines += ["", "| read by id (wrk -t2 -c16) | requests/s | p50 ms | p99 ms | non-2xx | ratio to ceiling |",
              "|---|---|---|---|---|---|"]
    ceil = d.get("ceiling", {}).get("requests_per_s") if isinstance(d.get("ceiling"), dict) else None
    for label, r in (("Samverka, SQLite", (d.get("http_sqlite") or {}).get("read")),
                     ("Samverka, PostgreSQL", (d.get("http_pg") or {}).get("read")),
                     ("ceiling: minimal Starlette async route + sqlite3", d.get("ceiling"))):
        if isinstance(r, dict) and "requests_per_s" in r:
            lines.append(f"| {label} | {r['requests_per_s']:,.0f} | {r['p50_ms']} | {r['p99_ms']} | "
                         f"{r['non_2xx_total']} | {'%.2f' % (r['requests_per_s'] / ceil) if ceil else '-'} |")
        else:
            lines.append(f"| {label} | not run | | | | |")
    lines += ["", "| server memory (--workers 2, all processes) | peak sum VmRSS MB | sum VmHWM MB |", "|---|---|---|"]
    for key in ("http_sqlite", "http_pg"):
        v = d.get(key)
        if isinstance(v, dict) and "server_vmhwm_total" in v:
            s = v["server_vmhwm_total"]
            lines.append(f"| {key} (ingest + reads) | {v['server_rss_during_ingest']['peak_sum_vmrss_mb']} / "
                         f"{v['read']['server_rss_during_reads']['peak_sum_vmrss_mb']} (ingest / reads) | "
                         f"{s['sum_vmhwm_mb']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
