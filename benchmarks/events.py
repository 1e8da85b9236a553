"""Subscription delivery benchmarks (issue 5): one command.

    python benchmarks/events.py [--quick] [--repeats 3] [--work DIR] [--code head|worktree]

- **throughput**: 10 rest-hook subscriptions (topic lab-result, id-only) on a local receiver (its own
  process: raw asyncio HTTP/1.1, Bundles parsed only when dumped); a burst of lab-result Observations
  committed over HTTP (transaction Bundles, 4 clients); the sustained notifications per second from the
  first commit to the last receipt. A "notification" is one event (one `notification-event`) delivered to
  one subscriber; a POST may carry several when a subscription is behind (up to its max-count), so POSTs
  per second are reported beside it.
- **latency**: the same subscriptions at an offered load of `--rate` commits/s (each fans out to 10
  notifications) for `--seconds`; commit-to-delivery latency p50/p99 per notification, from the event's
  timestamp (the version's lastUpdated, stamped inside the committing transaction) to the receiver's clock
  at receipt (same machine, same clock).
- **ingest**: `samverka generate` Bundles over HTTP (benchmarks/ingest.py client, 4 clients) into a fresh
  store with no subscriptions and with 10 active ones (2 on each shipped topic, delivered to the receiver
  meanwhile); the ratio of resources/s (the outbox row itself is written in both: it is what makes events
  transactional; the difference is matching and delivery).
- **receiver ceiling**: the receiver's own rate with a trivial sender (the same notification Bundle POSTed
  by a raw asyncio keep-alive client process, 16 connections) — the physical limit of the measuring setup.

Medians of `--repeats`, with the 1-min load average and CPU busy share of both cores per run. Results go
to <work>/results[-quick].json (after every measurement) and <work>/summary[-quick].md; logs and stores
under <work>. The code under test is the committed HEAD (`--code worktree` for the working tree).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HERE, PY, SAMVERKA, Results, Server, free_port, log, median, run, samverka_serve

EXT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "https://samverka.se/fhir/SubscriptionTopic/"
TOPICS = ["lab-result", "encounter-start-end", "referral", "appointment-booked-cancelled", "patient-demographics"]
LAB = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}


# ---- the receiver (its own process) ----------------------------------------------------------------

def _parse(body: bytes) -> tuple[str, list[tuple[int, float]]]:
    """(kind, [(event number, timestamp ms)]) of one notification Bundle."""
    bundle = orjson.loads(body)
    params = bundle["entry"][0]["resource"]["parameter"]
    kind, events = "", []
    for p in params:
        if p["name"] == "type":
            kind = p["valueCode"]
        elif p["name"] == "notification-event":
            part = {q["name"]: q for q in p["part"]}
            ts = part["timestamp"]["valueInstant"]
            events.append((int(part["event-number"]["valueString"]), _epoch_ms(ts)))
    return kind, events


async def receiver_serve(port: int) -> None:
    """A raw asyncio HTTP/1.1 rest-hook endpoint (keep-alive, Content-Length bodies): keeps (receipt time,
    path, body) per POST and counts posts, events and handshakes with byte searches; the Bundles are
    parsed only on POST /dump, which writes [(receipt time, path, kind, [(event number, timestamp ms)])]
    to the file named in the body. GET /stats answers the counts. No framework on the hot path."""
    raw: list[tuple[float, str, bytes]] = []
    counts = {"posts": 0, "events": 0, "handshakes": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.time()
                lines = head.split(b"\r\n")
                method, path, _ = lines[0].split(b" ", 2)
                length = 0
                for line in lines[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length) if length else b""
                out = b"{}"
                if method == b"POST" and path == b"/dump":
                    records = [(t, p, *_parse(b)) for t, p, b in raw]
                    Path(body.decode()).write_bytes(orjson.dumps(records))
                elif method == b"POST":
                    raw.append((now, path.decode(), body))
                    counts["posts"] += 1
                    counts["events"] += body.count(b'"event-number"')
                    counts["handshakes"] += b'"valueCode":"handshake"' in body
                else:
                    out = orjson.dumps(counts)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                             + str(len(out)).encode() + b"\r\n\r\n" + out)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def _epoch_ms(instant: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(instant.replace("Z", "+00:00")).timestamp() * 1000


def receiver_main(a: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.run(receiver_serve(a.port))
    except ImportError:
        asyncio.run(receiver_serve(a.port))


class Receiver:
    def __init__(self, logs: Path, tag: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = Server([PY, str(Path(__file__).resolve()), "receiver", "--port", str(self.port)], self.port,
                             logs / f"receiver-{tag}.log", ready_path="/stats")

    def __enter__(self) -> Receiver:
        self.server.start(60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def stats(self) -> dict[str, int]:
        import httpx

        return dict(httpx.get(f"{self.url}/stats", timeout=30).json())

    def wait(self, key: str, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats()[key] >= count:
                return True
            time.sleep(0.2)
        return False

    def dump(self, path: Path) -> list[Any]:
        import httpx

        httpx.post(f"{self.url}/dump", content=str(path).encode(), timeout=60)
        return list(orjson.loads(path.read_bytes()))


# ---- the trivial sender (receiver ceiling) ---------------------------------------------------------

def blast_main(a: argparse.Namespace) -> None:

    body = orjson.dumps({"resourceType": "Bundle", "type": "history", "entry": [{"resource": {
        "resourceType": "Parameters", "parameter": [
            {"name": "type", "valueCode": "event-notification"},
            {"name": "notification-event", "part": [{"name": "event-number", "valueString": "1"},
                                                    {"name": "timestamp", "valueInstant": "2026-01-01T00:00:00.000Z"}]}]}}]})

    async def main() -> int:
        sent = 0
        until = time.monotonic() + a.seconds
        host, _, port = a.url.removeprefix("http://").partition(":")
        request = (f"POST /notify HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/fhir+json\r\n"
                   f"content-length: {len(body)}\r\n\r\n").encode() + body

        async def one() -> None:  # raw keep-alive HTTP/1.1: the sender must not be the limit it measures
            nonlocal sent
            reader, writer = await asyncio.open_connection(host, int(port))
            while time.monotonic() < until:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(h[15:]) for h in head.split(b"\r\n") if h[:15].lower() == b"content-length:")
                await reader.readexactly(length)
                sent += 1
            writer.close()
        await asyncio.gather(*(one() for _ in range(a.connections)))
        return sent

    t0 = time.perf_counter()
    sent = asyncio.run(main())
    print(json.dumps({"sent": sent, "seconds": round(time.perf_counter() - t0, 2)}))


# ---- helpers -----------------------------------------------------------------------------------------

class LoadAvg:
    """1-min load average (sampled every 2 s) and the busy share of both cores during a measurement."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.busy = 0.0

    @staticmethod
    def _cpu() -> tuple[int, int]:
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        idle = f[3] + f[4]
        return sum(f) - idle, sum(f)

    def __enter__(self) -> LoadAvg:
        import threading

        self._stop = threading.Event()
        self._c0 = self._cpu()

        def sample() -> None:
            while True:
                self.samples.append(float(open("/proc/loadavg").read().split()[0]))
                if self._stop.wait(2):
                    return

        self._t = threading.Thread(target=sample, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(3)
        b1, t1 = self._cpu()
        self.busy = round(100 * (b1 - self._c0[0]) / max(1, t1 - self._c0[1]), 1)

    def summary(self) -> dict[str, float]:
        s = self.samples or [0.0]
        return {"loadavg1_mean": round(sum(s) / len(s), 2), "loadavg1_max": max(s), "cpu_busy_pct_both_cores": self.busy}


def pin_code(mode: str, work: Path) -> str:
    """Benchmark the committed HEAD (extracted to <work>/code-<commit>, first on PYTHONPATH), as run.py does."""
    repo = HERE.parent
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    if mode == "worktree":
        return f"working tree on {head[:10]} (uncommitted edits included)"
    snap = work / f"code-{head[:10]}"
    if not (snap / ".complete").exists():
        shutil.rmtree(snap, ignore_errors=True)
        snap.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(repo), "archive", head, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(snap)], input=archive.stdout, check=True)
        (snap / ".complete").touch()
    os.environ["PYTHONPATH"] = str(snap / "src") + (os.pathsep + os.environ["PYTHONPATH"]
                                                    if os.environ.get("PYTHONPATH") else "")
    return f"commit {head[:10]} (snapshot {snap})"


MAX_COUNT: int | None = None  # --max-count: the subscriptions' backport-max-count (events per notification)


def subscription(topic: str, endpoint: str) -> dict[str, Any]:
    sub: dict[str, Any] = {
        "resourceType": "Subscription", "meta": {"profile": [f"{EXT}backport-subscription"]},
        "status": "requested", "reason": "benchmark", "criteria": TOPIC + topic,
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": f"{EXT}backport-payload-content", "valueCode": "id-only"}]}}}
    if MAX_COUNT is not None:
        sub["channel"]["extension"] = [{"url": f"{EXT}backport-max-count", "valuePositiveInt": MAX_COUNT}]
    return sub


def subscribe(base: str, rx: Receiver, topics: list[str]) -> None:
    import httpx

    for i, topic in enumerate(topics):
        r = httpx.post(f"{base}/Subscription", json=subscription(topic, f"{rx.url}/notify/{i}"), timeout=60)
        r.raise_for_status()
    if not rx.wait("handshakes", len(topics), 60):
        raise RuntimeError(f"only {rx.stats()['handshakes']} of {len(topics)} handshakes arrived")


def lab(patient: str, i: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "category": [LAB],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": {"reference": f"Patient/{patient}"}, "valueQuantity": {"value": i % 200, "unit": "mg/dL"}}


async def _burst(base: str, patient: str, total: int, per_bundle: int, clients: int) -> float:
    """Commit `total` lab results as transaction Bundles, `clients` in flight; the commit seconds."""
    import httpx

    bundles = [{"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": lab(patient, i), "request": {"method": "POST", "url": "Observation"}}
        for i in range(start, min(total, start + per_bundle))]} for start in range(0, total, per_bundle)]
    queue = list(reversed(bundles))
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, headers={"Prefer": "return=minimal"}) as http:
        async def one() -> None:
            while queue:
                r = await http.post(base, content=orjson.dumps(queue.pop()),
                                    headers={"Content-Type": "application/fhir+json"})
                r.raise_for_status()
        await asyncio.gather(*(one() for _ in range(clients)))
    return time.perf_counter() - t0


async def _paced(base: str, patient: str, rate: float, seconds: float) -> int:
    """Single creates at `rate` per second (open loop: late ones are not skipped); how many."""
    import httpx

    n = int(rate * seconds)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, headers={"Prefer": "return=minimal"},
                                 limits=httpx.Limits(max_connections=64)) as http:
        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            r = await http.post(f"{base}/Observation", content=orjson.dumps(lab(patient, i)),
                                headers={"Content-Type": "application/fhir+json"})
            r.raise_for_status()
        await asyncio.gather(*(one(i) for i in range(n)))
    return n


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(len(s) * p))], 1) if s else float("nan")


# ---- the steps ---------------------------------------------------------------------------------------

def delivery_run(a: argparse.Namespace, work: Path, rep: int) -> dict[str, Any]:
    import httpx

    logs = work / "logs"
    store = work / f"store-delivery-{rep}"
    shutil.rmtree(store, ignore_errors=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    out: dict[str, Any] = {}
    with Receiver(logs, f"delivery-{rep}") as rx, samverka_serve(port, ["--data-dir", str(store)],
                                                                logs / f"server-delivery-{rep}.log", a.workers):
        subscribe(base, rx, ["lab-result"] * a.subscribers)
        patient = httpx.post(f"{base}/Patient", json={"resourceType": "Patient"}, timeout=60).json()["id"]
        expected = a.burst * a.subscribers
        with LoadAvg() as load:
            t0 = time.time()
            commit_s = asyncio.run(_burst(base, patient, a.burst, 50, 4))
            complete = rx.wait("events", expected, a.timeout)
        records = rx.dump(work / f"records-{rep}-burst.json")
        receipts = [r[0] for r in records if r[2] == "event-notification"]
        got = sum(len(r[3]) for r in records if r[2] == "event-notification")
        span = max(receipts) - t0 if receipts else float("nan")
        out["throughput"] = {"commits": a.burst, "notifications_expected": expected, "notifications": got,
                             "posts": len(receipts), "posts_per_s": round(len(receipts) / span, 1),
                             "complete": complete, "commit_s": round(commit_s, 2), "first_commit_to_last_receipt_s":
                             round(span, 2), "notifications_per_s": round(got / span, 1), "load": load.summary()}
        log(f"  throughput: {got} notifications in {span:.1f} s = {got / span:.0f}/s in {len(receipts)} POSTs"
            f" ({len(receipts) / span:.0f}/s; commits took {commit_s:.1f} s)")
        time.sleep(1)
        before = rx.stats()["events"]
        with LoadAvg() as load:
            n = asyncio.run(_paced(base, patient, a.rate, a.seconds))
            complete = rx.wait("events", before + n * a.subscribers, a.timeout)
        records = rx.dump(work / f"records-{rep}-paced.json")
        lat = [r[0] * 1000 - ts for r in records if r[2] == "event-notification" for num, ts in r[3] if num > a.burst]
        out["latency"] = {"offered_commits_per_s": a.rate, "offered_notifications_per_s": a.rate * a.subscribers,
                          "seconds": a.seconds, "notifications": len(lat), "complete": complete,
                          "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99), "max_ms": _pct(lat, 1.0),
                          "load": load.summary()}
        log(f"  latency at {a.rate * a.subscribers:.0f} notifications/s offered: p50 {out['latency']['p50_ms']} ms,"
            f" p99 {out['latency']['p99_ms']} ms ({len(lat)} notifications)")
    shutil.rmtree(store, ignore_errors=True)
    return out


def ingest_run(a: argparse.Namespace, work: Path, data: Path, mode: str, rep: int) -> dict[str, Any]:
    logs = work / "logs"
    store = work / f"store-ingest-{mode}-{rep}"
    shutil.rmtree(store, ignore_errors=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    tag = f"ingest-{mode}-{rep}"
    with Receiver(logs, tag) as rx, samverka_serve(port, ["--data-dir", str(store)], logs / f"server-{tag}.log",
                                                   a.workers):
        if mode == "subscriptions":
            subscribe(base, rx, [t for t in TOPICS for _ in range(2)][:a.subscribers])
        with LoadAvg() as load:
            rc, text, _wall = run([PY, str(HERE / "ingest.py"), "client", "--url", base, "--data", str(data),
                                   "--concurrency", "4"], logs / f"client-{tag}.log", timeout=3600)
        if rc != 0:
            raise RuntimeError(f"ingest client failed ({rc}): {text[-2000:]}")
        figures = json.loads(text.strip().splitlines()[-1])
        stats = rx.stats()
    shutil.rmtree(store, ignore_errors=True)
    log(f"  ingest {mode}: {figures['resources_per_s']} resources/s ({figures['resources']} resources,"
        f" {stats['events']} notifications received by the end)")
    return {"resources_per_s": figures["resources_per_s"], "resources": figures["resources"],
            "failed_bundles": figures["failed_bundles"], "notifications_received": stats["events"],
            "load": load.summary()}


def ceiling_run(a: argparse.Namespace, work: Path, rep: int) -> dict[str, Any]:
    logs = work / "logs"
    with Receiver(logs, f"ceiling-{rep}") as rx, LoadAvg() as load:
        rc, text, _wall = run([PY, str(Path(__file__).resolve()), "blast", "--url", rx.url, "--seconds",
                               str(a.ceiling_seconds), "--connections", "16"], logs / f"blast-{rep}.log", timeout=600)
        received = rx.stats()["events"]
    if rc != 0:
        raise RuntimeError(f"blast failed: {text[-1000:]}")
    figures = json.loads(text.strip().splitlines()[-1])
    rate = round(received / figures["seconds"], 1)
    log(f"  receiver ceiling: {rate}/s")
    return {"received": received, "seconds": figures["seconds"], "notifications_per_s": rate, "load": load.summary()}


def summarize(res: Results, a: argparse.Namespace) -> str:
    d = res.data

    def med(step: str, *path: str) -> float | None:
        vals = []
        for run_ in d.get(step, []):
            v: Any = run_
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            if isinstance(v, int | float):
                vals.append(float(v))
        return round(median(vals), 1) if vals else None

    none = med("ingest_none", "resources_per_s")
    subs = med("ingest_subscriptions", "resources_per_s")
    ratio = round(subs / none, 3) if none and subs else None
    rate = med("delivery", "throughput", "notifications_per_s")
    p99 = med("delivery", "latency", "p99_ms")
    lines = [f"# Subscription delivery benchmark{' (quick)' if a.quick else ''}", "",
             f"Code: {d.get('code')}. Machine: {d.get('machine')}. Medians of {a.repeats} repeats.", "",
             "| figure | median | target | runs |", "|---|---|---|---|",
             f"| notifications/s, commit → receipt ({a.subscribers} subscribers, burst of {a.burst} commits) | {rate} |"
             f" ≥ 1,000 | {[r['throughput']['notifications_per_s'] for r in d.get('delivery', [])]} |",
             f"| POSTs/s in that burst (several events per POST when behind) | {med('delivery', 'throughput', 'posts_per_s')}"
             f" | | {[r['throughput'].get('posts_per_s') for r in d.get('delivery', [])]} |",
             f"| latency p50 ms at {a.rate * a.subscribers:.0f} notifications/s offered |"
             f" {med('delivery', 'latency', 'p50_ms')} | | {[r['latency']['p50_ms'] for r in d.get('delivery', [])]} |",
             f"| latency p99 ms | {p99} | < 1,000 | {[r['latency']['p99_ms'] for r in d.get('delivery', [])]} |",
             f"| ingest resources/s, no subscriptions | {none} | | {[r['resources_per_s'] for r in d.get('ingest_none', [])]} |",
             f"| ingest resources/s, {a.subscribers} active subscriptions | {subs} | |"
             f" {[r['resources_per_s'] for r in d.get('ingest_subscriptions', [])]} |",
             f"| ingest ratio with/without | {ratio} | ≥ 0.85 | |",
             f"| receiver ceiling (trivial sender), notifications/s | {med('ceiling', 'notifications_per_s')} | | |",
             "", "Load during each run (1-min load average mean / CPU busy % of both cores):", ""]
    for step in ("delivery", "ingest_none", "ingest_subscriptions", "ceiling"):
        for i, r in enumerate(d.get(step, [])):
            loads = [r["throughput"]["load"], r["latency"]["load"]] if step == "delivery" else [r["load"]]
            lines.append(f"- {step} #{i + 1}: " + "; ".join(f"{x['loadavg1_mean']} / {x['cpu_busy_pct_both_cores']}%"
                                                             for x in loads))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    r = sub.add_parser("receiver")
    r.add_argument("--port", type=int, required=True)
    b = sub.add_parser("blast")
    b.add_argument("--url", required=True)
    b.add_argument("--seconds", type=float, default=10)
    b.add_argument("--connections", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="a smoke run: small burst, 1 repeat, 50 patients")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--subscribers", type=int, default=10)
    ap.add_argument("--burst", type=int, default=3000, help="commits in the throughput burst")
    ap.add_argument("--rate", type=float, default=100, help="commits/s offered in the latency run")
    ap.add_argument("--max-count", type=int, default=None,
                    help="events per notification at most (1: one POST per event and subscriber)")
    ap.add_argument("--seconds", type=float, default=30, help="length of the latency run")
    ap.add_argument("--patients", type=int, default=300, help="generated patients for the ingest (~100 resources each)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300, help="longest wait for deliveries to arrive")
    ap.add_argument("--ceiling-seconds", type=float, default=10)
    ap.add_argument("--steps", default="ceiling,delivery,ingest")
    ap.add_argument("--code", choices=["head", "worktree"], default="head")
    ap.add_argument("--work", type=Path, default=HERE / ".work" / "events")
    a = ap.parse_args()
    global MAX_COUNT
    MAX_COUNT = getattr(a, "max_count", None)
    if a.cmd == "receiver":
        return receiver_main(a)
    if a.cmd == "blast":
        return blast_main(a)
    if a.quick:
        a.repeats, a.burst, a.rate, a.seconds, a.patients, a.ceiling_seconds = 1, 300, 20, 5, 10, 3
    work: Path = a.work
    (work / "logs").mkdir(parents=True, exist_ok=True)
    res = Results(work / f"results{'-quick' if a.quick else ''}.json")
    res.put("code", pin_code(a.code, work))
    res.put("machine", f"{os.cpu_count()} cores, load at start {open('/proc/loadavg').read().split()[0]}")
    res.put("settings", {k: str(v) for k, v in vars(a).items()})
    steps = a.steps.split(",")
    for step in ("delivery", "ingest_none", "ingest_subscriptions", "ceiling"):
        res.put(step, [])
    data = work / f"data-{a.patients}p"
    if "ingest" in steps and not (data / ".complete").exists():
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run([SAMVERKA, "generate", "--patients", str(a.patients), "--out", str(data)], check=True,
                       capture_output=True)
        (data / ".complete").touch()
    for rep in range(a.repeats):
        log(f"repeat {rep + 1}/{a.repeats}")
        if "ceiling" in steps:
            res.put("ceiling", [*res.get("ceiling"), ceiling_run(a, work, rep)])
        if "delivery" in steps:
            res.put("delivery", [*res.get("delivery"), delivery_run(a, work, rep)])
        if "ingest" in steps:
            order = ["none", "subscriptions"] if rep % 2 == 0 else ["subscriptions", "none"]  # alternate
            for mode in order:
                key = f"ingest_{mode}"
                res.put(key, [*res.get(key), ingest_run(a, work, data, mode, rep)])
    summary = summarize(res, a)
    (work / f"summary{'-quick' if a.quick else ''}.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
