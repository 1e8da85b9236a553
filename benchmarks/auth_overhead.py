"""The cost of authorization plus auditing (issue 4): the read-by-id and search workloads of the earlier
benchmarks, with `samverka serve --auth off` and with auth on, where every request carries a user's token.

```
python benchmarks/auth_overhead.py            # 10,000 generated patients (~1M resources), 3 x 30 s per run
python benchmarks/auth_overhead.py --quick    # 300 patients (~29k resources), 3 x 8 s: smoke run
```

Users: practitioners of the generated region (Practitioner/PractitionerRole with HSA-ids), each acting
under one assignment (care unit). Tokens come from the RFC 7523 JWT-bearer grant: the benchmark is a
trusted identity provider (`serve --trust-issuer`) that signs each user's assertion, and a module
(private_key_jwt client, scope user/*.rs) exchanges it. Every patient queried is assigned to one user,
and an in-progress Encounter of that patient at the user's unit gives the care relationship that the
Patientdatalagen rules (`samverka.auth.pdl`, whenever the code under test has them) ask for; a probe
records whether a patient without one is refused. Requests of a user carry that user's token, so both
modes answer the same requests with the same results (searches are the patient-scoped queries of
`search_queries.pick`; the other queries of that mix return fewer rows under PDL, a different workload).

Each repeat starts the server once per mode (order alternating), warms up, then runs wrk (2 threads,
16 connections; or an async httpx client in its own process when wrk is missing) per workload.
Medians of the repeats are reported with p50/p99, the on/off throughput ratio against the target (at
most 25% lower), the machine's load average and CPU busy share during each run, and the raw HTTP
ceiling of a read by id (`read.ceiling_server`). Note: `--auth off` still audits every read (the
records name an unauthenticated client), so the ratio is the cost of authorization, PDL and the user
attribution in the records; the audit log itself is paid in both modes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from common import HERE, PY, SAMVERKA, Results, Server, free_port, log, median, run
from read import CEILING_APP, parse_wrk

ISSUER = "https://idp.bench.samverka.invalid"
HSA = "urn:oid:1.2.752.29.4.19"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PATIENT_SCOPED = ("obs_patient_code_date", "encounter_patient_sorted", "diagreport_patient_category",
                  "obs_patient_category_not", "medreq_include", "compartment_obs_code", "patient_revinclude_encounters")
_PID = re.compile(r"(?:[?&]patient=|^Patient/|[?&]_id=)([A-Za-z0-9.\-]+)")
LUA = """
local tokens, lines = {}, {}
for t in io.lines("%(tokens)s") do tokens[#tokens + 1] = t end
for l in io.lines("%(lines)s") do
  local k, p = l:match("^(%%d+)\\t(.*)$")
  lines[#lines + 1] = {tonumber(k) + 1, p}
end
local n, seeded = #lines, false
request = function()
  if not seeded then
    math.randomseed(os.time() + math.floor(os.clock() * 1000000) + tonumber(tostring(lines):sub(-6), 16))
    seeded = true
  end
  local l = lines[math.random(n)]
  local h = {["Accept"] = "application/fhir+json"}
  local t = tokens[l[1]]
  if t ~= nil and t ~= "" then h["Authorization"] = "Bearer " .. t end
  return wrk.format("GET", l[2], h)
end
"""


# ---- machine state ------------------------------------------------------------------------------

def _cpu() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)  # busy (all but idle and iowait), total


def measured(fn: Any) -> dict[str, Any]:
    """Run `fn()` (a dict of figures) and add the load average and the machine's CPU busy share meanwhile."""
    la0, (b0, t0) = os.getloadavg()[0], _cpu()
    out = dict(fn())
    b1, t1 = _cpu()
    out.update(loadavg1_start=round(la0, 2), loadavg1_end=round(os.getloadavg()[0], 2),
               cpu_busy_share=round((b1 - b0) / max(t1 - t0, 1), 3))
    return out


# ---- code, data, store ---------------------------------------------------------------------------

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
    sys.path.insert(0, str(snap / "src"))
    return f"commit {head[:10]} (snapshot {snap})"


def ensure_store(work: Path, patients: int) -> Path:
    """`samverka generate` (reusing run.py's data folder when it exists) and `samverka load` into a store of
    this benchmark's own (it adds Encounters and audit records)."""
    data = HERE / ".work" / f"data-{patients}p"
    if not (data / "00-region.json").exists():
        data = work / f"data-{patients}p"
        if not (data / ".complete").exists():
            log(f"generating {patients} patients into {data}")
            rc, out, _ = run([SAMVERKA, "generate", "--patients", str(patients), "--seed", "1", "--out", str(data)],
                             work / "generate.log", timeout=6 * 3600)
            if rc != 0:
                raise RuntimeError(f"generate failed: {out[-1500:]}")
            (data / ".complete").touch()
    store = work / f"store-{patients}p"
    if not (store / ".loaded").exists():
        shutil.rmtree(store, ignore_errors=True)
        log(f"loading {data} into {store}")
        rc, out, secs = run([SAMVERKA, "load", "--data-dir", str(store), str(data)], work / "load.log",
                            timeout=12 * 3600)
        if rc != 0:
            raise RuntimeError(f"load failed: {out[-1500:]}")
        log(f"loaded in {secs:.0f} s")
        (store / ".loaded").touch()
    return store


# ---- users, care relationships, tokens -----------------------------------------------------------

def _hsa(doc: dict[str, Any]) -> str | None:
    return next((i["value"] for i in doc.get("identifier", []) if i.get("system") == HSA), None)


def _key() -> Any:
    from joserfc.jwk import ECKey

    return ECKey.generate_key("P-384", parameters={"alg": "ES384"}, auto_kid=True)  # SMART: RS384 or ES384


def _jwt(key: Any, claims: dict[str, Any]) -> str:
    from joserfc import jwt

    return jwt.encode({"alg": "ES384", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["ES384"])


def plan_workload(store: Path, users: int, n_values: int, read_patients: int) -> dict[str, Any]:
    """Users (practitioner, unit), the patients each one treats, the read paths and the search paths."""
    import random

    import search_queries as sq

    from samverka.api.server import build_services
    from samverka.config import Settings

    svc = build_services(Settings(data_dir=store, auth=False))
    fetch = svc.repo.fetch
    docs = {(t, i): json.loads(bytes(d)) for t, i, d in fetch(
        "SELECT r.type, r.id, h.data FROM resources r JOIN history h ON h.seq = r.seq WHERE r.deleted = 0"
        " AND r.type IN ('Practitioner', 'PractitionerRole', 'Organization')", [])}
    roles = []
    for (t, _i), role in sorted(docs.items()):
        if t != "PractitionerRole" or not role.get("active", True):
            continue
        prac = docs.get(("Practitioner", role["practitioner"]["reference"].split("/")[-1]), {})
        org = docs.get(("Organization", role.get("organization", {}).get("reference", "/").split("/")[-1]), {})
        if _hsa(prac) and _hsa(org):
            roles.append({"hsa": _hsa(prac), "practitioner": prac["id"], "unit": _hsa(org), "org": org["id"]})
    chosen: list[dict[str, Any]] = []
    for r in roles:  # one assignment per user, spread over the units
        if len(chosen) < users and r["hsa"] not in {c["hsa"] for c in chosen}:
            chosen.append(r)
    chosen.sort(key=lambda r: r["unit"])
    queries = [q for q in sq.pick(fetch, svc.registry, n_values) if q.name in PATIENT_SCOPED]
    searches = [(q.name, p, m.group(1)) for q in queries for p in q.paths if (m := _PID.search(p))]
    patients = sorted({pid for _n, _p, pid in searches})
    rng = random.Random(11)
    everyone = sorted(str(r[0]) for r in fetch("SELECT id FROM resources WHERE type = 'Patient' AND deleted = 0", []))
    others = [p for p in everyone if p not in set(patients)]
    patients += rng.sample(others, max(0, min(len(others), read_patients - len(patients)) - 1))
    outsider = next(p for p in others if p not in set(patients))  # no care relationship: the PDL probe
    owner = {pid: i % len(chosen) for i, pid in enumerate(patients)}
    reads = []
    for start in range(0, len(patients), 500):
        chunk = patients[start:start + 500]
        for t, i, comp in fetch(f"SELECT type, id, compartment FROM resources WHERE deleted = 0 AND compartment IN"
                                f" ({', '.join('?' for _ in chunk)})", chunk):
            reads.append((owner[str(comp)], f"/fhir/{t}/{i}"))
    svc.repo.close()
    return {"users": chosen, "owner": owner, "outsider": outsider, "reads": sorted(reads),
            "searches": [(owner[pid], f"/fhir/{p}", name) for name, p, pid in searches]}


class Auth:
    """The benchmark as a trusted identity provider and a module: keys, clients and user tokens."""

    def __init__(self, work: Path) -> None:
        from joserfc.jwk import ECKey

        self.path = work / "auth.json"
        saved = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.idp = ECKey.import_key(saved["idp"]) if saved else _key()
        self.module = ECKey.import_key(saved["module"]) if saved else _key()
        # registered clients per store (a store knows only the clients registered in it)
        self.by_store: dict[str, dict[str, str]] = saved.get("by_store", {})
        self.clients: dict[str, str] = {}
        self.jwks = work / "idp-jwks.json"
        self.jwks.write_text(json.dumps({"keys": [self.idp.as_dict(private=False)]}))
        self.work = work

    def save(self) -> None:
        self.path.write_text(json.dumps({"idp": self.idp.as_dict(private=True),
                                         "module": self.module.as_dict(private=True), "by_store": self.by_store}))

    def register(self, origin: str, store: Path) -> None:
        import httpx

        self.clients = self.by_store.setdefault(str(store.resolve()), {})
        if self.clients:
            return
        admin = subprocess.run([SAMVERKA, "admin", "token", "--data-dir", str(store)], capture_output=True,
                               text=True, check=True).stdout.strip()
        for name, scope, grants in (("user", "user/*.rs", [JWT_BEARER]), ("system", "system/*.cruds",
                                                                          ["client_credentials"])):
            r = httpx.post(f"{origin}/auth/register", headers={"Authorization": f"Bearer {admin}"}, timeout=60,
                           json={"client_name": f"bench-{name}", "scope": scope, "grant_types": grants,
                                 "token_endpoint_auth_method": "private_key_jwt",
                                 "jwks": {"keys": [self.module.as_dict(private=False)]}})
            if r.status_code != 201:
                raise RuntimeError(f"registering the {name} client failed: {r.text}")
            self.clients[name] = r.json()["client_id"]
        self.save()

    def _client_assertion(self, client: str, aud: str) -> str:
        now = int(time.time())
        return _jwt(self.module, {"iss": client, "sub": client, "aud": aud, "exp": now + 240, "jti": uuid.uuid4().hex})

    def system_token(self, origin: str) -> str:
        import httpx

        aud = f"{origin}/auth/token"
        r = httpx.post(aud, timeout=60, data={
            "grant_type": "client_credentials", "scope": "system/*.cruds", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self._client_assertion(self.clients["system"], aud)})
        if r.status_code != 200:
            raise RuntimeError(f"system token refused: {r.text}")
        return str(r.json()["access_token"])

    def user_token(self, origin: str, user: dict[str, Any]) -> str:
        """RFC 7523: the IdP's assertion for (user, assignment), exchanged by the module for an access token."""
        import httpx

        aud, now = f"{origin}/auth/token", int(time.time())
        grant = _jwt(self.idp, {"iss": ISSUER, "sub": user["hsa"], "assignment": user["unit"], "aud": aud,
                                "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex})
        r = httpx.post(aud, timeout=60, data={
            "grant_type": JWT_BEARER, "assertion": grant, "scope": "user/*.rs",
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": self._client_assertion(self.clients["user"], aud)})
        if r.status_code != 200:
            raise RuntimeError(f"JWT-bearer grant for {user['hsa']} at {user['unit']} refused: {r.text}")
        return str(r.json()["access_token"])


def care_relationships(origin: str, auth: Auth, plan: dict[str, Any]) -> int:
    """One in-progress Encounter per (patient, its user's unit), posted as transaction Bundles."""
    import httpx

    token = auth.system_token(origin)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    entries = []
    for pid, k in sorted(plan["owner"].items()):
        u = plan["users"][k]
        entries.append({"resource": {
            "resourceType": "Encounter", "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"}, "period": {"start": now},
            "participant": [{"individual": {"reference": f"Practitioner/{u['practitioner']}"}}],
            "serviceProvider": {"reference": f"Organization/{u['org']}"}},
            "request": {"method": "POST", "url": "Encounter"}})
    with httpx.Client(timeout=600, headers={"Authorization": f"Bearer {token}"}) as http:
        for start in range(0, len(entries), 500):
            r = http.post(f"{origin}/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                                 "entry": entries[start:start + 500]})
            if r.status_code != 200:
                raise RuntimeError(f"posting care relationships failed: {r.text[:1000]}")
    return len(entries)


# ---- load generators ------------------------------------------------------------------------------

def write_lines(work: Path, tag: str, lines: list[tuple[int, str]], sample: int = 200_000) -> Path:
    import random

    pick = random.Random(7).sample(lines, min(sample, len(lines)))
    path = work / f"lines-{tag}.tsv"
    path.write_text("".join(f"{k}\t{p}\n" for k, p in pick))
    return path


def load_run(port: int, lines: Path, tokens: Path, logs: Path, tag: str, seconds: float,
             connections: int) -> dict[str, Any]:
    """wrk (2 threads) when installed, else the httpx client of this file in its own process."""
    if shutil.which("wrk"):
        lua = logs / f"{tag}.lua"
        lua.write_text(LUA % {"tokens": tokens, "lines": lines})
        rc, out, _ = run(["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "--timeout", "5s",
                          "-s", str(lua), f"http://127.0.0.1:{port}"], logs / f"wrk-{tag}.log", timeout=seconds + 60)
        if rc != 0:
            raise RuntimeError(f"wrk failed: {out[-1500:]}")
        fig = {"client": "wrk", **parse_wrk(out)}
        m = re.search(r"timeout (\d+)", fig.get("socket_errors") or "")
        fig["timeouts"] = int(m.group(1)) if m else 0
        if not fig.get("requests"):  # nothing answered within wrk's 5 s timeout: no latency to report
            fig.update(p50_ms=None, p99_ms=None)
        return fig
    out_file = logs / f"client-{tag}.json"
    rc, out, _ = run([PY, str(Path(__file__).resolve()), "client", "--url", f"http://127.0.0.1:{port}",
                      "--lines", str(lines), "--tokens", str(tokens), "--seconds", str(seconds),
                      "--connections", str(connections), "--out", str(out_file)], logs / f"client-{tag}.log",
                     timeout=seconds + 120)
    if rc != 0:
        raise RuntimeError(f"client failed: {out[-1500:]}")
    return {"client": "httpx", **json.loads(out_file.read_text())}


def client_main(a: argparse.Namespace) -> None:
    """A closed-loop async httpx client: `connections` workers, random lines, for `seconds`."""
    import asyncio
    import random

    import httpx

    tokens = a.tokens.read_text().splitlines() if a.tokens else []
    lines = [(int(k), p) for k, p in (ln.split("\t", 1) for ln in a.lines.read_text().splitlines())]
    lat: list[float] = []
    bad = 0

    async def worker(http: httpx.AsyncClient, rnd: random.Random, until: float) -> None:
        nonlocal bad
        while time.perf_counter() < until:
            k, path = lines[rnd.randrange(len(lines))]
            h = {"Accept": "application/fhir+json"}
            if k < len(tokens) and tokens[k]:
                h["Authorization"] = f"Bearer {tokens[k]}"
            t0 = time.perf_counter()
            r = await http.get(path, headers=h)
            lat.append((time.perf_counter() - t0) * 1000)
            bad += r.status_code >= 300

    async def main() -> float:
        limits = httpx.Limits(max_connections=a.connections, max_keepalive_connections=a.connections)
        async with httpx.AsyncClient(base_url=a.url, limits=limits, timeout=10) as http:
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(http, random.Random(i), t0 + a.seconds) for i in range(a.connections)))
            return time.perf_counter() - t0

    wall = asyncio.run(main())
    s = sorted(lat)
    a.out.write_text(json.dumps({"requests_per_s": round(len(s) / wall, 1), "requests": len(s), "non_2xx": bad,
                                 "p50_ms": round(s[len(s) // 2], 2), "p99_ms": round(s[int(len(s) * 0.99)], 2)}))


# ---- one server run per mode -----------------------------------------------------------------------

def serve(store: Path, mode: str, auth: Auth, logs: Path, tag: str) -> Server:
    port = free_port()
    extra = ["--auth", "off"] if mode == "off" else ["--auth", "on", "--trust-issuer", f"{ISSUER}={auth.jwks}"]
    return Server([SAMVERKA, "serve", "--data-dir", str(store), "--port", str(port), "--workers", "2", *extra],
                  port, logs / f"server-{tag}.log")


def probe(origin: str, plan: dict[str, Any], tokens: list[str]) -> dict[str, Any]:
    """Before measuring: a few requests of each workload answer 200 with the same entry counts in both
    modes (checked by the caller), and whether PDL refuses a patient without a care relationship."""
    import httpx

    out: dict[str, Any] = {"status": {}, "entries": {}}
    with httpx.Client(base_url=origin, timeout=60) as http:
        def get(k: int, path: str) -> httpx.Response:
            h = {"Accept": "application/fhir+json"}
            if tokens:
                h["Authorization"] = f"Bearer {tokens[k]}"
            return http.get(path, headers=h)

        for k, path in plan["reads"][:: max(1, len(plan["reads"]) // 20)]:
            r = get(k, path)
            out["status"][path] = r.status_code
        for k, path, _name in plan["searches"][:: max(1, len(plan["searches"]) // 20)]:
            r = get(k, path)
            out["status"][path] = r.status_code
            out["entries"][path] = len(r.json().get("entry", [])) if r.status_code == 200 else None
        if tokens:
            out["outsider_status"] = get(0, f"/fhir/Patient/{plan['outsider']}").status_code
    return out


def run_mode(store: Path, mode: str, auth: Auth, plan: dict[str, Any], files: dict[str, Path], work: Path,
             rep: int, a: argparse.Namespace) -> dict[str, Any]:
    logs = work / "logs"
    tag = f"{mode}-{rep}"
    figures: dict[str, Any] = {}
    with serve(store, mode, auth, logs, tag) as srv:
        origin = f"http://127.0.0.1:{srv.port}"
        tokens = [auth.user_token(origin, u) for u in plan["users"]] if mode == "on" else []
        tok_file = work / f"tokens-{mode}.txt"
        tok_file.write_text("".join(f"{t}\n" for t in tokens) or "\n")
        figures["probe"] = probe(origin, plan, tokens)
        for wl in a.workloads:
            load_run(srv.port, files[wl], tok_file, logs, f"{tag}-{wl}-warmup", a.warmup, a.connections)
            figures[wl] = measured(lambda wl=wl: load_run(srv.port, files[wl], tok_file, logs, f"{tag}-{wl}",
                                                          a.seconds, a.connections))
            log(f"  {mode} {wl}: {figures[wl]['requests_per_s']:.0f} req/s, p50 {figures[wl].get('p50_ms')} ms,"
                f" p99 {figures[wl].get('p99_ms')} ms, non-2xx {figures[wl].get('non_2xx')},"
                f" load {figures[wl]['loadavg1_end']}")
    return figures


def ceiling(store: Path, files: dict[str, Path], work: Path, a: argparse.Namespace) -> dict[str, Any]:
    """The physical limit of a read by id over HTTP (minimal Starlette route + stdlib sqlite3, 2 workers)."""
    tok = work / "tokens-off.txt"
    tok.write_text("\n")
    app_dir = work / "ceiling"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "ceiling_app.py").write_text(CEILING_APP)
    port = free_port()
    srv = Server([PY, "-m", "uvicorn", "--app-dir", str(app_dir), "ceiling_app:app", "--host", "127.0.0.1",
                  "--port", str(port), "--workers", "2", "--log-level", "warning", "--no-access-log"],
                 port, work / "logs" / "server-ceiling.log", env={"CEILING_DB": str(store / "samverka.sqlite")})
    with srv:
        load_run(srv.port, files["read"], tok, work / "logs", "ceiling-warmup", a.warmup, a.connections)
        return measured(lambda: load_run(srv.port, files["read"], tok, work / "logs", "ceiling", a.seconds,
                                         a.connections))


# ---- in-process audit cost -------------------------------------------------------------------------

def audit_cost(a: argparse.Namespace) -> None:
    """µs per read record in process: `connections` tasks, each a closed loop of a read by id and its
    `Auditor.success` (record built, committed before the task goes on), against the same loop without
    auditing. Prints wall, process CPU (every thread) and event-loop-thread CPU per record: medians of
    `repeats`. A fresh SQLite store of 20 patients x 3 Observations in a temporary folder."""
    import asyncio
    import statistics
    import tempfile

    from samverka import audit
    from samverka.api.server import build_services
    from samverka.config import Settings
    from samverka.interactions.create import create
    from samverka.interactions.read import read

    who = audit.Who(client_id="bench", user_id="SE2321000131-P000000000001", user_name="Ada Läkare",
                    role="läkare", unit_id="SE2321000131-E000000000011", provider_id="SE2321000131-E000000000001",
                    address="127.0.0.1")

    async def loop(svc: Any, ids: list[str], auditor: Any, n: int) -> tuple[float, float, float]:
        async def client(c: int) -> None:
            for i in range(n):
                oid = ids[(c * 7 + i) % len(ids)]
                res = read(svc, "Observation", oid)
                if auditor is not None:
                    await auditor.success(["Observation", oid], "read", who, res, "")
                else:
                    await asyncio.sleep(0)
        w, p, t = time.perf_counter(), time.process_time(), time.thread_time()
        await asyncio.gather(*(client(c) for c in range(a.connections)))
        total = a.connections * n
        return ((time.perf_counter() - w) / total * 1e6, (time.process_time() - p) / total * 1e6,
                (time.thread_time() - t) / total * 1e6)

    with tempfile.TemporaryDirectory() as tmp:
        svc = build_services(Settings(data_dir=Path(tmp), auth=False))
        ids = []
        for i in range(20):
            pid = create(svc, "Patient", {"resourceType": "Patient", "name": [{"family": f"F{i}"}]}).version.id
            for _ in range(3):
                ids.append(create(svc, "Observation", {"resourceType": "Observation", "status": "final",
                                                       "code": {"text": "x"},
                                                       "subject": {"reference": f"Patient/{pid}"}}).version.id)
        auditor = audit.Auditor(svc.repo, svc.settings)
        asyncio.run(loop(svc, ids, auditor, 20))
        n = max(1, a.records // a.connections)
        base, aud = [], []
        for _ in range(a.repeats):
            base.append(asyncio.run(loop(svc, ids, None, n)))
            aud.append(asyncio.run(loop(svc, ids, auditor, n)))
        cost = [statistics.median(x[i] for x in aud) - statistics.median(x[i] for x in base) for i in range(3)]
        print(f"audit per read record ({a.connections} concurrent reads, {n * a.connections} records x {a.repeats}):"
              f" wall {cost[0]:.1f} µs, process CPU {cost[1]:.1f} µs, event-loop thread CPU {cost[2]:.1f} µs;"
              f" load average {os.getloadavg()[0]:.2f}")


# ---- summary and main ------------------------------------------------------------------------------

def _med(runs: list[dict[str, Any]], key: str) -> float | None:
    xs = [r[key] for r in runs if r.get(key) is not None]
    return round(median(xs), 2) if xs else None


def summarize(res: Results, a: argparse.Namespace) -> str:
    d = res.data
    lines = [f"# Authorization + auditing overhead ({d.get('patients')} patients, {d.get('resources')} resources)", "",
             f"Code: {d.get('code')}. {d.get('users')} users, {d.get('patients_treated')} patients with a care"
             f" relationship (in-progress Encounter at the user's unit). Client: wrk-style closed loop,"
             f" {a.connections} connections, {a.seconds:.0f} s per run after {a.warmup:.0f} s warm-up; medians of"
             f" {a.repeats} repeats; `serve --workers 2` on SQLite.", "",
             f"PDL enforced (a patient without care relationship refused): {d.get('pdl_enforced')}."
             f" Same results on and off (probed searches): {d.get('same_results')}.", "",
             "| workload | auth off req/s | p50 / p99 ms | auth on req/s | p50 / p99 ms | on/off | throughput lost |"
             " target (<= 25% lower) | load avg (off / on) |", "|---|---|---|---|---|---|---|---|---|"]
    for wl in a.workloads:
        off, on = d.get("runs", {}).get(f"{wl}.off", []), d.get("runs", {}).get(f"{wl}.on", [])
        if not off or not on:
            continue
        r_off, r_on = _med(off, "requests_per_s") or 0, _med(on, "requests_per_s") or 0
        ratio = r_on / r_off if r_off else 0
        res.put(f"ratio.{wl}", round(ratio, 3))
        lines.append(f"| {wl} | {r_off:,.0f} | {_med(off, 'p50_ms')} / {_med(off, 'p99_ms')} | {r_on:,.0f} |"
                     f" {_med(on, 'p50_ms')} / {_med(on, 'p99_ms')} | {ratio:.2f} | {(1 - ratio) * 100:.0f}% |"
                     f" {'met' if ratio >= 0.75 else 'missed'} | {_med(off, 'loadavg1_end')} / {_med(on, 'loadavg1_end')} |")
        bad = sum(r.get("non_2xx") or 0 for r in off + on)
        slow = sum(r.get("timeouts") or 0 for r in off + on)
        if bad or slow:
            lines.append(f"|  | {bad} non-2xx answers, {slow} requests unanswered after 5 s in these runs:"
                         " see the logs |||||||")
    c = d.get("ceiling")
    if c:
        lines += ["", f"Physical limit, read by id over HTTP (minimal Starlette route + sqlite3, 2 workers, no"
                  f" auth, no audit): {c['requests_per_s']:,.0f} req/s, p50 {c.get('p50_ms')} ms, p99 {c.get('p99_ms')} ms."]
    lines += ["", "`--auth off` still audits every read (records with an unauthenticated client), so on/off is the"
              " cost of token verification, the PDL policy and filters, and the user attribution; the audit log"
              " itself is paid in both columns. CPU busy share and load per run are in the results JSON."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--lines", type=Path, required=True)
    c.add_argument("--tokens", type=Path)
    c.add_argument("--seconds", type=float, default=30)
    c.add_argument("--connections", type=int, default=16)
    c.add_argument("--out", type=Path, required=True)
    ac = sub.add_parser("audit-cost", help="in-process µs per read record (no server)")
    ac.add_argument("--connections", type=int, default=16)
    ac.add_argument("--records", type=int, default=2000)
    ac.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="300 patients, 3 x 8 s: a smoke run")
    ap.add_argument("--patients", type=int, default=10_000, help="generated patients (~100 resources each)")
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--read-patients", type=int, default=400, help="patients whose resources are read by id")
    ap.add_argument("--values", type=int, default=40, help="concrete values per search query")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--workloads", default="read,search")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the raw HTTP read ceiling")
    ap.add_argument("--code", choices=["head", "worktree"], default="head")
    ap.add_argument("--work", type=Path, default=HERE / ".work" / "auth-overhead")
    a = ap.parse_args()
    if a.cmd == "client":
        client_main(a)
        return
    if a.cmd == "audit-cost":
        audit_cost(a)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds the `with` blocks: servers stop too
    if a.quick:
        a.patients, a.seconds, a.warmup, a.read_patients, a.values = 300, min(a.seconds, 8), 3, 60, 10
    a.workloads = a.workloads.split(",")
    a.work.mkdir(parents=True, exist_ok=True)
    (a.work / "logs").mkdir(exist_ok=True)
    res = Results(a.work / f"results-{a.patients}p.json")
    res.put("code", pin_code(a.code, a.work))
    log(f"code under test: {res.get('code')}")
    res.put("machine", {"cpus": os.cpu_count(), "uname": " ".join(os.uname()), "python": sys.version.split()[0],
                        "wrk": bool(shutil.which("wrk"))})
    store = ensure_store(a.work, a.patients)
    auth = Auth(a.work)
    auth.clients = auth.by_store.setdefault(str(store.resolve()), {})  # registered below when the plan is made
    plan_file = a.work / f"plan-{a.patients}p.json"
    if not plan_file.exists():
        plan = plan_workload(store, a.users, a.values, a.read_patients)
        with serve(store, "on", auth, a.work / "logs", "setup") as srv:
            origin = f"http://127.0.0.1:{srv.port}"
            auth.register(origin, store)
            plan["encounters"] = care_relationships(origin, auth, plan)
        plan_file.write_text(json.dumps(plan))
    plan = json.loads(plan_file.read_text())
    if not auth.clients:  # a store planned before auth.json knew it (or with another auth.json)
        with serve(store, "on", auth, a.work / "logs", "setup") as srv:
            auth.register(f"http://127.0.0.1:{srv.port}", store)
    import sqlite3

    with sqlite3.connect(f"file:{store / 'samverka.sqlite'}?mode=ro", uri=True) as db:
        res.put("resources", db.execute("SELECT count(*) FROM resources WHERE deleted = 0").fetchone()[0])
    res.put("patients", a.patients)
    res.put("users", len(plan["users"]))
    res.put("patients_treated", len(plan["owner"]))
    files = {"read": write_lines(a.work, "read", [tuple(x) for x in plan["reads"]]),
             "search": write_lines(a.work, "search", [(k, p) for k, p, _n in plan["searches"]])}
    runs: dict[str, list[dict[str, Any]]] = {}
    probes: dict[str, Any] = {}
    for rep in range(a.repeats):
        for mode in (("off", "on") if rep % 2 == 0 else ("on", "off")):
            log(f"repeat {rep + 1}/{a.repeats}, auth {mode}")
            figures = run_mode(store, mode, auth, plan, files, a.work, rep, a)
            probes[mode] = figures.pop("probe")
            for wl, fig in figures.items():
                runs.setdefault(f"{wl}.{mode}", []).append(fig)
            res.put("runs", runs)
    if "off" in probes and "on" in probes:
        res.put("probes", probes)
        res.put("pdl_enforced", probes["on"].get("outsider_status") == 403)
        res.put("same_results", probes["on"]["entries"] == probes["off"]["entries"]
                and set(probes["on"]["status"].values()) == {200} and set(probes["off"]["status"].values()) == {200})
    if not a.no_ceiling and "read" in a.workloads:
        log("raw HTTP ceiling for a read by id")
        res.put("ceiling", ceiling(store, files, a.work, a))
    text = summarize(res, a)
    (a.work / f"summary-{a.patients}p.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
