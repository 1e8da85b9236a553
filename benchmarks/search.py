"""Search benchmarks: ~1M Synthea-derived resources, a realistic query mix over HTTP, and the physical limit.

    python benchmarks/search.py [--resources 1000000] [--quick] [--backend sqlite|postgresql|both]

Per backend: generate and load the data once (`search_data.py`, stores kept in `benchmarks/.work/search/`),
pick concrete values (`search_queries.py`, seeded), read the store's files once into the OS page cache
(`prewarm`: a server in use has its working set cached), start `samverka serve --workers 2` (the working
tree, editable install), and run a separate client process (httpx):
- latency: every query sequentially; a first pass over all its concrete values (the *first touch* of each,
  reported apart: the database's own cache is cold for that value), then >= 30 timed runs cycling through
  them, p50/p95 -- the steady state of a server in use, which the targets are judged on;
- throughput: 8 concurrent clients (asyncio) running the mix for 30 s, with and without `_total=accurate`;
- `_explain` of the first value of every query;
then, with the server stopped, the physical limit: hand-written SQL for three queries run directly on the
same database (stdlib sqlite3 / psycopg, no HTTP), and the in-process engine (`plan.build` + `plan.page`
and the whole search handler) for every query. Figures land in `.work/search/results-<N>c.json`, the
tables in `.work/search/summary-<N>c.md`; the machine's load average is recorded next to every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_data as sd
import search_queries as sq
from common import PY, Results, free_port, log, samverka_serve

MIN_RUNS = 30
QUERY_BUDGET_S = 30.0
RAW_QUERIES = ("patient_identifier", "obs_patient_code_date", "patient_has_condition")


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def stats(ms: list[float]) -> dict[str, Any]:
    return {"n": len(ms), "p50_ms": round(pct(ms, 0.5), 2), "p95_ms": round(pct(ms, 0.95), 2),
            "min_ms": round(min(ms), 2) if ms else None, "max_ms": round(max(ms), 2) if ms else None}


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def prewarm(folder: Path) -> dict[str, Any]:
    """Read every file of the store once, so the OS page cache holds it as it would on a server in use
    (the 1M stores are 3.4 GB on SQLite and 5.1 GB on PostgreSQL; this machine has 23 GB). Without it the
    first run after a reboot timed disk reads: each value of a query is asked once."""
    t0 = time.perf_counter()
    total = 0
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            with open(f, "rb") as fh:
                while chunk := fh.read(8 << 20):
                    total += len(chunk)
    out = {"bytes": total, "seconds": round(time.perf_counter() - t0, 1)}
    log(f"prewarm: read {total / 1e9:.2f} GB of {folder} into the page cache in {out['seconds']} s")
    return out


def wait_for_quiet(threshold: float, max_wait: float = 600, poll: float = 30) -> dict[str, Any]:
    """Wait (bounded) for the 1-minute load average to drop below `threshold`."""
    t0 = time.monotonic()
    seen = [loadavg()]
    while seen[-1] >= threshold and time.monotonic() - t0 < max_wait:
        log(f"load average {seen[-1]} >= {threshold}; waiting ({time.monotonic() - t0:.0f}/{max_wait:.0f} s)")
        time.sleep(poll)
        seen.append(loadavg())
    return {"waited_s": round(time.monotonic() - t0), "loadavg1_at_start": seen[-1], "quiet": seen[-1] < threshold}


# ---- the client (a separate process) ------------------------------------------------------------------

def _entries(body: bytes) -> tuple[int, int, Any, str | None]:
    doc = orjson.loads(body)
    es = doc.get("entry") or []
    match = sum(1 for e in es if (e.get("search") or {}).get("mode") == "match")
    nxt = next((ln["url"] for ln in doc.get("link", []) if ln.get("relation") == "next"), None)
    return match, len(es) - match, doc.get("total"), nxt


def client_latency(base: str, queries: list[sq.Query], runs: int) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {}
    headers = {"Accept": "application/fhir+json"}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as c:
        page50: dict[str, str] = {}
        for qy in queries:
            if qy.cls != "page50":
                continue
            for path in qy.paths:  # follow `next` 49 times (untimed) to reach page 50
                url: str | None = f"{base}/{path}"
                for _ in range(49):
                    r = c.get(url)  # type: ignore[arg-type]
                    r.raise_for_status()
                    url = _entries(r.content)[3]
                    if url is None:
                        break
                if url:
                    page50[path] = url
        for qy in queries:
            urls = [page50[p] for p in qy.paths if p in page50] if qy.cls == "page50" else \
                [f"{base}/{p}" for p in qy.paths]
            if not urls:
                out[qy.name] = {"error": "no values"}
                continue
            n = max(runs, len(urls)) if qy.cls not in ("total", "info") else runs
            # warm-up: one pass over every value (within 10 s), timed apart as the *first touch* of each value:
            # the database's own cache (PostgreSQL's shared_buffers) still cold for that provider or month
            first: list[float] = []
            t_warm = time.perf_counter()
            for u in urls:
                t0 = time.perf_counter()
                c.get(u)
                first.append((time.perf_counter() - t0) * 1000)
                if time.perf_counter() - t_warm > 10:
                    break
            ms, matches, included, totals, statuses = [], [], [], [], {}
            la0 = loadavg()
            t_start = time.perf_counter()
            for i in range(n):
                if i >= MIN_RUNS and time.perf_counter() - t_start > QUERY_BUDGET_S:
                    break  # bounded: a slow query gets its 30 runs, not more
                u = urls[i % len(urls)]
                t0 = time.perf_counter()
                r = c.get(u)
                body = r.content
                ms.append((time.perf_counter() - t0) * 1000)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    m, inc, tot, _ = _entries(body)
                    matches.append(m)
                    included.append(inc)
                    if tot is not None:
                        totals.append(tot)
            out[qy.name] = {**stats(ms), "first_touch_p50_ms": round(pct(first, 0.5), 2), "statuses": statuses,
                            "values": len(urls),
                            "mean_matches": round(sum(matches) / max(1, len(matches)), 1),
                            "mean_included": round(sum(included) / max(1, len(included)), 1),
                            "mean_total": round(sum(totals) / len(totals)) if totals else None,
                            "loadavg1": [la0, loadavg()], "ms": [round(x, 3) for x in ms]}
            print(f"  {qy.name:32s} p50 {out[qy.name]['p50_ms']:8.2f} ms  p95 {out[qy.name]['p95_ms']:8.2f} ms"
                  f"  matches {out[qy.name]['mean_matches']:6.1f}  total {out[qy.name]['mean_total']}  {statuses}",
                  file=sys.stderr, flush=True)
        out["_page50_urls"] = page50
    return out


async def _throughput(base: str, urls: list[tuple[str, str]], concurrency: int, duration: float) -> dict[str, Any]:
    import httpx

    per: dict[str, list[float]] = {}
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers={"Accept": "application/fhir+json"}, timeout=120, limits=limits) as c:
        async def worker(w: int) -> None:
            order = list(urls)
            random.Random(w).shuffle(order)
            i = 0
            while time.perf_counter() < deadline:  # bounded by the deadline
                name, u = order[i % len(order)]
                i += 1
                t0 = time.perf_counter()
                r = await c.get(u)
                await r.aread()
                if time.perf_counter() <= deadline:
                    per.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = min(time.perf_counter() - t0, duration)
    done = sum(len(v) for v in per.values())
    return {"requests": done, "seconds": round(wall, 1), "requests_per_s": round(done / wall, 1),
            "statuses": statuses, "concurrency": concurrency,
            "per_query": {k: {"n": len(v), "p50_ms": round(pct(v, 0.5), 1)} for k, v in sorted(per.items())}}


def client_main(a: argparse.Namespace) -> None:
    queries = sq.from_json(Path(a.queries).read_bytes())
    if a.mode == "latency":
        res = client_latency(a.url, queries, a.runs)
    else:
        lat = json.loads(Path(a.page50).read_text()) if a.page50 else {}
        res = {}
        slow = set(filter(None, a.exclude.split(",")))
        for label, skip in (("mix", set()), ("mix_without_slow", {"total", "info"})):
            urls = []
            for qy in queries:
                if qy.cls in skip or qy.cls == "info" or (skip and qy.name in slow):
                    continue
                if qy.cls == "page50":
                    urls += [(qy.name, u) for u in lat.values()]
                else:
                    urls += [(qy.name, f"{a.url}/{p}") for p in qy.paths]
            la0 = loadavg()
            res[label] = asyncio.run(_throughput(a.url, urls, a.concurrency, a.duration))
            res[label]["loadavg1"] = [la0, loadavg()]
            print(f"  throughput {label}: {res[label]['requests_per_s']} req/s {res[label]['statuses']}",
                  file=sys.stderr, flush=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


# ---- hand-written SQL (the physical limit) and the in-process engine ---------------------------------

def raw_sql(name: str, meta: dict[str, Any], registry: Any) -> tuple[str, list[Any]]:
    """The best SQL we can write by hand for the query (qmark placeholders), returning what HTTP returns:
    the matching resources' bodies, first page (50) in the search's order."""
    from samverka.fhir.instant import format_instant  # noqa: F401  (the HTTP path formats; we only fetch)
    from samverka.search.normalize import date_range
    from samverka.store.hashing import h64

    # CROSS JOIN fixes the join order on SQLite (it has no statistics: the store never runs ANALYZE);
    # PostgreSQL plans a CROSS JOIN with WHERE conditions like any inner join.
    if name == "patient_identifier":
        p = registry.get("Patient", "identifier")
        return ("SELECT r.id, h.data FROM idx_token t CROSS JOIN resources r CROSS JOIN history h"
                " WHERE t.param = ? AND t.code = ? AND t.system = ? AND r.pk = t.res AND h.seq = r.seq"
                " AND r.type = 'Patient' AND r.deleted = 0 ORDER BY r.pk LIMIT 51", [p.id, h64(meta["ssn"]), h64(sq.SSN)])
    if name == "obs_patient_code_date":
        pat, code, date = (registry.get("Observation", c) for c in ("patient", "code", "date"))
        lo = date_range(meta["ge"])[0]
        hi = date_range(meta["le"])[1]
        return ("SELECT r.id, h.data FROM idx_reference p CROSS JOIN idx_token c CROSS JOIN idx_date d"
                " CROSS JOIN resources r CROSS JOIN history h"
                " WHERE p.param = ? AND p.ref = ? AND c.param = ? AND c.code = ? AND c.system = ? AND c.res = p.res"
                " AND d.res = p.res AND d.param = ? AND d.hi >= ? AND d.lo <= ?"
                " AND r.pk = p.res AND r.type = 'Observation' AND r.deleted = 0 AND h.seq = r.seq"
                " ORDER BY d.hi DESC, r.pk LIMIT 51",
                [pat.id, h64(f"Patient/{meta['patient']}"), code.id, h64(meta["code"]), h64(meta["system"]), date.id,
                 lo, hi])
    if name == "patient_has_condition":
        code, pat = registry.get("Condition", "code"), registry.get("Condition", "patient")
        return ("SELECT r.id, h.data FROM (SELECT DISTINCT x.ref FROM idx_token c CROSS JOIN idx_reference x"
                " WHERE c.param = ? AND c.code = ? AND c.system = ? AND x.res = c.res AND x.param = ?) s"
                " CROSS JOIN resources r CROSS JOIN history h"
                " WHERE r.ref = s.ref AND r.type = 'Patient' AND r.deleted = 0 AND h.seq = r.seq ORDER BY r.pk LIMIT 51",
                [code.id, h64(meta["code"]), h64(meta["system"]), pat.id])
    raise KeyError(name)


def _split(path: str) -> tuple[str | None, str, tuple[str, str] | None, list[tuple[str, str]]]:
    u = urlsplit(path)
    parts = u.path.strip("/").split("/")
    pairs = parse_qsl(u.query, keep_blank_values=True)
    if len(parts) == 3:
        return parts[2], u.path, (parts[0], parts[1]), pairs
    return parts[0], u.path, None, pairs


def in_process(backend: str, store: list[str], queries: list[sq.Query], runs: int) -> dict[str, Any]:
    """Raw SQL (own connection) and the engine in this process, no HTTP; the server is stopped meanwhile."""
    from samverka.api.server import build_services
    from samverka.config import Settings
    from samverka.interactions.search import search as search_handler
    from samverka.search import plan

    settings = Settings(data_dir=Path(store[1])) if backend == "sqlite" else Settings(database=store[1])
    svc = build_services(settings)
    out: dict[str, Any] = {"raw_sql": {}, "engine_plan_page": {}, "engine_handler": {}, "raw_checks": {}}
    by_name = {x.name: x for x in queries}
    if backend == "sqlite":
        import sqlite3
        con = sqlite3.connect(str(Path(store[1]) / "samverka.sqlite"))
        for pragma in ("cache_size = -65536", "mmap_size = 268435456", "temp_store = MEMORY"):
            con.execute(f"PRAGMA {pragma}")

        def fetch(sql: str, ps: list[Any]) -> list[tuple[Any, ...]]:
            return con.execute(sql, ps).fetchall()
    else:
        import psycopg
        pcon = psycopg.connect(store[1], autocommit=True)
        # as the engine's own connections (store.postgres): psycopg prepares a statement run 5 times, and
        # PostgreSQL's generic plan for these hashed codes joined all of a code's rows (2 -> 50 ms)
        pcon.execute("SET plan_cache_mode = force_custom_plan")

        def fetch(sql: str, ps: list[Any]) -> list[tuple[Any, ...]]:
            return pcon.execute(sql.replace("?", "%s"), ps).fetchall()

    def timed(fn: Any, n: int, k: int, budget: float = 60.0, min_runs: int = MIN_RUNS) -> list[float]:
        t0 = time.perf_counter()
        for i in range(min(3, k)):
            fn(i)
            if time.perf_counter() - t0 > 1:
                break
        ms: list[float] = []
        t_start = time.perf_counter()
        for i in range(n):
            if i >= min_runs and time.perf_counter() - t_start > budget:
                break
            t0 = time.perf_counter()
            fn(i % k)
            ms.append((time.perf_counter() - t0) * 1000)
        return ms

    for name in [n for n in RAW_QUERIES if n in by_name]:
        qy = by_name[name]
        sqls = [raw_sql(name, m, svc.registry) for m in qy.meta]
        la0 = loadavg()
        ms = timed(lambda i, sqls=sqls: fetch(*sqls[i]), max(runs, len(sqls)), len(sqls))
        out["raw_sql"][name] = {**stats(ms), "loadavg1": [la0, loadavg()], "sql": sqls[0][0]}
        mism = 0
        for (s, ps), path in zip(sqls, qy.paths, strict=True):  # same rows as the engine's first page?
            t, _, comp, pairs = _split(path)
            res = search_handler(svc, "http://x/fhir", t, pairs, compartment=comp)
            ids = [e["fullUrl"].rsplit("/", 1)[1] for e in res.resource["entry"]
                   if e.get("search", {}).get("mode") == "match"]
            raw_ids = [r[0] for r in fetch(s, ps)][:50]
            if ids != raw_ids:
                mism += 1
        out["raw_checks"][name] = {"values": len(sqls), "mismatching_first_pages": mism}

        parsed = [(_split(p)) for p in qy.paths]

        def engine(i: int, parsed: list[Any] = parsed) -> None:  # the engine alone: no compartment here
            t, _, _comp, pairs = parsed[i]
            query = svc.parse_query(t, pairs)
            p = plan.build(svc.repo, svc.registry, query)
            plan.page(svc.repo, p, 50, None)

        la0 = loadavg()
        ms = timed(engine, max(runs, len(parsed)), len(parsed))
        out["engine_plan_page"][name] = {**stats(ms), "loadavg1": [la0, loadavg()]}
    for qy in queries:
        if qy.cls == "page50":
            continue
        parsed = [(_split(p)) for p in qy.paths]

        def handler(i: int, parsed: list[Any] = parsed) -> None:
            t, _, comp, pairs = parsed[i]
            search_handler(svc, "http://x/fhir", t, pairs, compartment=comp)

        la0 = loadavg()
        n = max(runs, len(parsed)) if qy.cls not in ("total", "info") else max(10, runs // 3)
        ms = timed(handler, n, len(parsed), budget=15.0, min_runs=5)  # the HTTP figures are the >= 30-run ones
        out["engine_handler"][qy.name] = {**stats(ms), "loadavg1": [la0, loadavg()]}
        log(f"  in-process handler {qy.name}: p50 {out['engine_handler'][qy.name]['p50_ms']} ms")
    return out


def explain_all(base: str, queries: list[sq.Query]) -> dict[str, Any]:
    import httpx

    out = {}
    with httpx.Client(timeout=300, headers={"Accept": "application/fhir+json"}) as c:
        for qy in queries:
            if qy.cls == "page50" or not qy.paths:
                continue
            r = c.get(f"{base}/{qy.paths[0]}&_explain=true")
            doc = r.json()
            for e in doc.get("entry", []):
                if e.get("search", {}).get("mode") == "outcome":
                    for issue in e["resource"]["issue"]:
                        if issue.get("code") == "informational":
                            out[qy.name] = json.loads(issue["diagnostics"])
    return out


# ---- orchestration ----------------------------------------------------------------------------------

def bench_backend(backend: str, clones: int, data: Path, a: argparse.Namespace, res: Results) -> None:
    cluster = None
    pg_url = None
    tag = a.tag
    if backend == "postgresql":
        cluster = sd.pg_cluster_class()(sd.pg_root(clones), sd.pg_port(clones)).start()
        pg_url = cluster.ensure_db("samverka")
    try:
        info = sd.load(backend, clones, data, pg_url)
        res.put(f"{backend}.load", info)
        store = sd.store_args(backend, clones, pg_url)
        if backend == "postgresql":
            store = ["--database", pg_url]
        from samverka.api.server import build_services
        from samverka.config import Settings
        settings = Settings(data_dir=Path(store[1])) if backend == "sqlite" else Settings(database=store[1])
        svc = build_services(settings)
        counts = dict(svc.repo.fetch("SELECT type, count(*) FROM resources WHERE deleted = 0 GROUP BY type", []))
        res.put(f"{backend}.counts", {"total": sum(counts.values()), **counts})
        qfile = sd.SEARCH / f"queries-{backend}-{clones}c.json"
        if not qfile.exists():
            qfile.write_bytes(sq.to_json(sq.pick(svc.repo.fetch, svc.registry, a.values)))
        queries = sq.from_json(qfile.read_bytes())
        if a.only:
            keep = set(a.only.split(","))
            queries = [x for x in queries if x.name in keep]
            qfile = sd.SEARCH / f"queries-{backend}-{clones}c{a.tag}-only.json"
            qfile.write_bytes(sq.to_json(queries))
        del svc
        warm_dir = Path(store[1]) if backend == "sqlite" else sd.pg_root(clones)
        res.put(f"{backend}.prewarm{tag}", prewarm(warm_dir))
        if a.wait_load:
            res.put(f"{backend}.quiet_wait{tag}", wait_for_quiet(a.wait_load, a.wait_max))
        port = free_port()
        base = f"http://127.0.0.1:{port}/fhir"
        logp = sd.SEARCH / f"serve-{backend}-{clones}c.log"
        with samverka_serve(port, store, logp, workers=2):
            if "latency" in a.steps:
                out = sd.SEARCH / f"latency-{backend}-{clones}c{tag}.json"
                log(f"{backend}: latency, {a.runs} runs per query (load {loadavg()})")
                subprocess.run([PY, __file__, "client", "--url", base, "--queries", str(qfile), "--mode", "latency",
                                "--runs", str(a.runs), "--out", str(out)], check=True, timeout=3600)
                lat = json.loads(out.read_text())
                (sd.SEARCH / f"page50-{backend}-{clones}c.json").write_text(json.dumps(lat.pop("_page50_urls")))
                res.put(f"{backend}.latency{tag}", {k: {kk: vv for kk, vv in v.items() if kk != "ms"}
                                                    for k, v in lat.items()})
            if "explain" in a.steps:
                res.put(f"{backend}.explain{tag}", explain_all(base, queries))
            if "throughput" in a.steps:
                out = sd.SEARCH / f"throughput-{backend}-{clones}c{tag}.json"
                log(f"{backend}: throughput, 8 clients x {a.duration} s (load {loadavg()})")
                subprocess.run([PY, __file__, "client", "--url", base, "--queries", str(qfile), "--mode",
                                "throughput", "--duration", str(a.duration), "--concurrency", "8",
                                "--page50", str(sd.SEARCH / f"page50-{backend}-{clones}c.json"), "--out", str(out),
                                "--exclude", ",".join(k for k, v in (res.get(f"{backend}.latency{tag}") or {}).items()
                                                      if v.get("p50_ms", 0) > 100)],
                               check=True, timeout=3600)
                res.put(f"{backend}.throughput{tag}", json.loads(out.read_text()))
        if "raw" in a.steps:
            log(f"{backend}: hand-written SQL and the in-process engine (load {loadavg()})")
            res.put(f"{backend}.in_process{tag}", in_process(backend, store, queries, a.runs))
    finally:
        if cluster is not None:
            cluster.stop()


def summary(res: Results, clones: int, tag: str) -> str:
    lines = []
    for backend in ("sqlite", "postgresql"):
        lat = res.get(f"{backend}.latency{tag}")
        if not lat:
            continue
        counts = res.get(f"{backend}.counts", {})
        inproc = res.get(f"{backend}.in_process{tag}", {})
        lines += [f"### {backend} ({counts.get('total', '?'):,} resources)", "",
                  "| query | class | p50 ms | p95 ms | first touch p50 ms | in-process p50 ms | matches/page | total"
                  " | target | load avg |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        qs = sq.from_json((sd.SEARCH / f"queries-{backend}-{clones}c.json").read_bytes())
        qs = [x for x in qs if x.name in lat]
        page1 = lat.get("obs_page1", {}).get("p50_ms")
        for qy in qs:
            s = lat.get(qy.name, {})
            if "p50_ms" not in s:
                continue
            t50, t95 = sq.TARGETS[qy.cls]
            if qy.cls == "page50":
                ok = page1 is not None and s["p50_ms"] <= 1.5 * page1
                target = f"<= 1.5 x page 1 ({s['p50_ms'] / page1:.2f}x) {'ok' if ok else 'MISS'}" if page1 else "?"
            elif t50 is None:
                target = "-"
            else:
                ok = s["p50_ms"] <= t50 and (t95 is None or s["p95_ms"] <= t95)
                target = f"p50 <= {t50:g}" + (f", p95 <= {t95:g}" if t95 else "") + (" ok" if ok else " MISS")
            eng = inproc.get("engine_handler", {}).get(qy.name, {}).get("p50_ms", "")
            lines.append(f"| {qy.name} | {qy.cls} | {s['p50_ms']} | {s['p95_ms']} | {s.get('first_touch_p50_ms', '')}"
                         f" | {eng} | {s['mean_matches']}"
                         f" | {s.get('mean_total') or ''} | {target} | {s['loadavg1'][0]}-{s['loadavg1'][1]} |")
        thr = res.get(f"{backend}.throughput{tag}") or {}
        lines.append("")
        for label, t in thr.items():
            left_out = ""
            if label != "mix":
                left_out = " (left out: `_total` queries and " + (", ".join(
                    k for k, v in lat.items() if v.get("p50_ms", 0) > 100 and k not in (
                        "obs_total_accurate", "obs_total_laboratory")) or "none") + ")"
            lines.append(f"Throughput ({label}{left_out}, 8 clients, {t['seconds']} s): **{t['requests_per_s']} req/s**,"
                         f" statuses {t['statuses']}, load avg {t['loadavg1'][0]}-{t['loadavg1'][1]}")
        if inproc:
            lines += ["", "| query | HTTP p50 | hand-written SQL p50 (p95) | ratio HTTP/SQL | plan.build+page p50 | ratio engine/SQL | first pages equal |",
                      "|---|---|---|---|---|---|---|"]
            for name in [n for n in RAW_QUERIES if n in inproc["raw_sql"]]:
                r, e = inproc["raw_sql"][name], inproc["engine_plan_page"][name]
                h = lat[name]["p50_ms"]
                chk = inproc["raw_checks"][name]
                lines.append(f"| {name} | {h} | {r['p50_ms']} ({r['p95_ms']}) | {h / r['p50_ms']:.1f}x | {e['p50_ms']}"
                             f" | {e['p50_ms'] / r['p50_ms']:.1f}x | {chk['values'] - chk['mismatching_first_pages']}"
                             f"/{chk['values']} |")
        lines.append("")
    return "\n".join(lines)


def pin_code(mode: str, overlay: list[str]) -> str:
    """Other engineers edit src/ while this runs: benchmark the committed HEAD (lines copied from run.pin_code),
    extracted into .work/search/code-<commit>[-<overlay hash>]/src and put first on PYTHONPATH, for this
    process and every server, loader and client it starts. `overlay`: working-tree files copied over the
    snapshot (a plan fix measured before it is committed)."""
    import hashlib
    import shutil

    repo = sd.REPO
    pinned = sd.SEARCH / "pinned-commit"  # one base commit for a before/after series (HEAD moves meanwhile)
    rev = pinned.read_text().strip() if pinned.exists() else "HEAD"
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", rev], capture_output=True, text=True,
                          check=True).stdout.strip()
    if mode == "worktree":
        return f"working tree on {head[:10]} (uncommitted edits included)"
    digest = hashlib.sha1(b"".join(f.encode() + (repo / f).read_bytes() for f in overlay)).hexdigest()[:8] \
        if overlay else ""
    snap = sd.SEARCH / (f"code-{head[:10]}" + (f"-{digest}" if digest else ""))
    if not (snap / ".complete").exists():
        shutil.rmtree(snap, ignore_errors=True)
        snap.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(repo), "archive", head, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(snap)], input=archive.stdout, check=True)
        for f in overlay:
            shutil.copy(repo / f, snap / f)
        (snap / ".complete").touch()
    os.environ["PYTHONPATH"] = str(snap / "src") + (os.pathsep + os.environ["PYTHONPATH"]
                                                    if os.environ.get("PYTHONPATH") else "")
    sys.path.insert(0, str(snap / "src"))
    return f"committed HEAD {head[:10]}" + (f" + working-tree {', '.join(overlay)}" if overlay else "") + f" ({snap})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--queries", required=True)
    c.add_argument("--mode", choices=["latency", "throughput"], required=True)
    c.add_argument("--runs", type=int, default=40)
    c.add_argument("--duration", type=float, default=30)
    c.add_argument("--concurrency", type=int, default=8)
    c.add_argument("--page50", default="")
    c.add_argument("--exclude", default="", help="queries left out of the second mix (p50 > 100 ms in the latency run)")
    c.add_argument("--out", required=True)
    ap.add_argument("--resources", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="~50k resources, shorter runs")
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--runs", type=int, default=40, help="latency runs per query (>= 30)")
    ap.add_argument("--values", type=int, default=40, help="concrete values per query")
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--steps", default="latency,explain,throughput,raw")
    ap.add_argument("--wait-load", type=float, default=1.0, help="wait (<= 10 min) for loadavg1 below this; 0: no")
    ap.add_argument("--wait-max", type=float, default=600, help="longest wait for a quiet machine, s")
    ap.add_argument("--tag", default="", help="suffix for the result keys (e.g. -before, -after)")
    ap.add_argument("--only", default="", help="comma-separated query names (a before/after comparison)")
    ap.add_argument("--code", choices=["head", "worktree"], default="head")
    ap.add_argument("--overlay", default="", help="comma-separated working-tree files laid over the HEAD snapshot")
    a = ap.parse_args()
    if a.cmd == "client":
        client_main(a)
        return
    if a.quick:
        a.resources, a.duration, a.wait_load = 50_000, min(a.duration, 10), 0
    a.steps = set(a.steps.split(","))
    code = pin_code(a.code, [f for f in a.overlay.split(",") if f])
    log(f"code under test: {code}")
    clones = sd.clones_for(a.resources)
    data = sd.generate(clones)
    res = Results(sd.SEARCH / f"results-{clones}c.json")
    res.put(f"code{a.tag}", code)
    res.put("machine", {"cpus": os.cpu_count(), "uname": " ".join(os.uname()), "python": sys.version.split()[0]})
    for backend in (["sqlite", "postgresql"] if a.backend == "both" else [a.backend]):
        bench_backend(backend, clones, data, a, res)
        text = summary(res, clones, a.tag)
        (sd.SEARCH / f"summary-{clones}c{a.tag}.md").write_text(text)
        print(text, flush=True)


if __name__ == "__main__":
    main()
