"""The cost of authorization plus auditing (issue 4): the read-by-id and search workloads of the earlier
benchmarks, with `samverka serve --auth off` and with auth on, where every request carries a user's token.

```
python benchmarks/auth_overhead.py            # 10,000 generated patients (~1M resources), 3 repeats x 6 pairs x 10 s
python benchmarks/auth_overhead.py --quick    # 300 patients (~29k resources), 2 repeats x 4 pairs x 5 s: smoke run
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

Method (made for a noisy shared 2-core VM, where the auth-off read rate alone ranged from 701 to 1,793
req/s between the 30 s runs of one invocation, and throughput fell as a run went on). Each repeat copies the
loaded base store twice (`samverka*.sqlite` and WALs, flushed to disk; the base itself is only served to set
up clients and care relationships) and starts `serve --auth off` on one copy and `--auth on` on the other:
separate files, since every read is audited into the store's `samverka-audit-reads.sqlite` sibling, and each
repeat starts from the same state. Both servers stay up for the whole repeat; the idle one uses about 2% of a
core (its CPU during each slice is recorded). Per workload each server is warmed up, then wrk (2 threads, 16
connections; an async httpx client in its own process when wrk is missing) runs short slices alternately
against them in `--pairs` pairs, each pair's order the reverse of the previous one's (off on, on off, ...:
ABBA, the first order alternating between repeats). The headline is the median over all pairs of the pair's
on/off req/s: two slices adjacent in time see nearly the same machine, so slow drift (neighbours, page-cache
and store growth) cancels. A second estimate: the server's CPU time per request in each slice (utime+stime of
the server and all its worker processes, /proc/<pid>/stat, before and after the slice, over the requests
completed; after a slice the benchmark waits, at most `--settle` s, until that server is quiet, so the audit
commits it finishes late count for its own slice and do not compete with the other server's next one), whose
off/on ratio estimates the throughput ratio of a CPU-bound server without depending on how much CPU the
machine gave it. It is the conservative one: wrk's own CPU per request (also recorded, from the benchmark's
reaped children) is the same in both modes, and adding it gives the ratio of a box running only the two
(`cpu_ratio_with_client`). The two agree only when the server saturates the CPU: on a quiet box the off
server may use fewer cores than the on one (it waits on something else), and then its throughput ratio
is above the CPU ratio, which is the ratio a CPU-saturated deployment would see (so both are reported, with
the cores each server used). Each slice also records the machine's busy, iowait and steal shares
(/proc/stat), the share of both cores used by other processes than the two servers and wrk, and the
load average, so noisy slices are visible. Reported: median and range of the pair
ratios (and per repeat), medians of req/s, p50/p99 and CPU ms per request per mode, the CPU ratio, against
the target (on at most 25% lower than off), and the raw HTTP ceiling of a read by id
(`read.ceiling_server`). Every slice and pair is in `results-<N>p.json` (`runs`, `pairs`, `repeats`), the
table in `summary-<N>p.md`. The copies need twice the store's size on disk (about 6 GB at 10,000 patients)
and are removed after each repeat (`--keep-copies` keeps the last); a default run takes about 25 minutes.
Note: `--auth off` still audits every read (the records name an
unauthenticated client), so the ratio is the cost of authorization, PDL and the user attribution in the
records; the audit log itself is paid in both modes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from common import HERE, PY, SAMVERKA, Results, Server, free_port, log, median, run, tree
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


# ---- machine state and server CPU ------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _stat() -> list[int]:
    """The machine's CPU counters: user nice system idle iowait irq softirq steal (ticks)."""
    with open("/proc/stat") as fh:
        return [int(x) for x in fh.readline().split()[1:9]]


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants, plus the children they reaped."""
    ticks = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile: its time is in its parent's cutime/cstime once reaped
            continue
        ticks += sum(int(x) for x in f[11:15])  # fields 14-17: utime stime cutime cstime
    return ticks / TICK


def snapshot(pids: dict[str, int]) -> dict[str, Any]:
    return {"t": time.perf_counter(), "stat": _stat(), "la": os.getloadavg()[0],
            "cpu": {m: tree_cpu(p) for m, p in pids.items()}}


def machine_delta(s0: dict[str, Any], s1: dict[str, Any]) -> dict[str, Any]:
    """Load average, busy / iowait / steal shares of the machine's CPU time between two snapshots."""
    d = [b - a for a, b in zip(s0["stat"], s1["stat"], strict=True)]
    total = max(sum(d), 1)
    return {"loadavg1_start": round(s0["la"], 2), "loadavg1_end": round(s1["la"], 2),
            "cpu_busy_share": round((total - d[3] - d[4]) / total, 3), "iowait_share": round(d[4] / total, 3),
            "steal_share": round(d[7] / total, 3)}


def measured(fn: Any) -> dict[str, Any]:
    """Run `fn()` (a dict of figures) and add the load average and the machine's CPU shares meanwhile."""
    s0 = snapshot({})
    out = dict(fn())
    out.update(machine_delta(s0, snapshot({})))
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


def store_files(store: Path) -> list[Path]:
    """The store's database and its siblings as the code names them (`samverka.sqlite`,
    `samverka-audit-reads.sqlite`, ...) with their WALs; leftovers of older namings are not part of it."""
    return sorted(f for f in store.iterdir() if f.is_file() and f.name.startswith("samverka")
                  and f.name.endswith((".sqlite", ".sqlite-wal")))


def copy_store(base: Path, dest: Path) -> Path:
    """A private copy of the (stopped) base store, flushed to disk so its write-back does not run into the
    measurement. Each server of a repeat gets its own: reads are audited, so a server writes to its store."""
    shutil.rmtree(dest, ignore_errors=True)  # only ever a copy this benchmark made
    dest.mkdir(parents=True)
    for f in store_files(base):
        shutil.copyfile(f, dest / f.name)
        fd = os.open(dest / f.name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return dest


def store_mb(store: Path) -> float:
    return round(sum(f.stat().st_size for f in store.iterdir() if f.is_file()) / 2**20, 1)


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


class Tokens:
    """The user tokens of the auth-on server, in the file the wrk script reads at the start of each slice;
    issued again before a slice once half their lifetime is gone (user tokens live 15 minutes)."""

    def __init__(self, auth: Auth, origin: str, users: list[dict[str, Any]], path: Path) -> None:
        self.auth, self.origin, self.users, self.path = auth, origin, users, path
        self.at = 0.0
        self.refresh()

    def refresh(self, older_than: float = 0) -> None:
        if time.monotonic() - self.at < older_than:
            return
        self.list = [self.auth.user_token(self.origin, u) for u in self.users]
        self.path.write_text("".join(f"{t}\n" for t in self.list))
        self.at = time.monotonic()


def run_slice(servers: dict[str, Server], mode: str, lines: Path, tokens: Path, logs: Path, tag: str,
              a: argparse.Namespace) -> dict[str, Any]:
    """One wrk slice against one of the two running servers: throughput, latency, the server's CPU seconds
    per request (its whole process tree), the idle server's CPU meanwhile, and the machine's steal share."""
    pids = {m: srv.pid for m, srv in servers.items()}
    s0, c0 = snapshot(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
    fig = load_run(servers[mode].port, lines, tokens, logs, tag, a.seconds, a.connections)
    s_load, c1 = snapshot(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
    client = c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime  # wrk (or the httpx client), reaped by run()
    settle_cpu(pids[mode], a.settle)
    s1 = snapshot(pids)
    cpu = s1["cpu"][mode] - s0["cpu"][mode]
    idle = sum(s_load["cpu"][m] - s0["cpu"][m] for m in pids if m != mode)
    n = fig.get("requests") or 0
    wall, d = s_load["t"] - s0["t"], [b - a for a, b in zip(s0["stat"], s_load["stat"], strict=True)]
    busy = (sum(d) - d[3] - d[4]) / TICK  # every process's CPU seconds meanwhile, both cores
    ours = sum(s_load["cpu"][m] - s0["cpu"][m] for m in pids) + client
    fig.update(wall_s=round(wall, 2), server_cores=round((s_load["cpu"][mode] - s0["cpu"][mode]) / wall, 2),
               foreign_cpu_share=round(max(0.0, busy - ours) / (wall * (os.cpu_count() or 1)), 3),
               server_cpu_s=round(cpu, 2),
               cpu_ms_per_request=round(cpu * 1000 / n, 4) if n else None,
               client_cpu_ms_per_request=round(client * 1000 / n, 4) if n else None,
               settle_s=round(s1["t"] - s_load["t"], 2), settle_cpu_s=round(s1["cpu"][mode] - s_load["cpu"][mode], 2),
               idle_server_cpu_s=round(idle, 2), **machine_delta(s0, s_load))
    return fig


def settle_cpu(pid: int, limit: float, window: float = 1.0, quiet: float = 0.05) -> None:
    """After a slice: wait (at most `limit` s) until the server's process tree uses under `quiet` of a core,
    so that work it deferred (audit records committed in the background) is counted in its own slice's CPU
    and does not compete with the other server's next slice."""
    deadline = time.perf_counter() + limit
    c0 = tree_cpu(pid)
    while time.perf_counter() < deadline:
        time.sleep(window)
        c1 = tree_cpu(pid)
        if c1 - c0 < quiet * window:
            return
        c0 = c1


def _with_client(off: dict[str, Any], on: dict[str, Any]) -> float | None:
    """off/on CPU per request of server and load generator together: the throughput ratio of a machine whose
    CPU is all theirs (the server-only ratio is lower, as wrk's own cost per request is the same in both)."""
    keys = ("cpu_ms_per_request", "client_cpu_ms_per_request")
    if not all(f.get(k) for f in (off, on) for k in keys):
        return None
    return round(sum(off[k] for k in keys) / sum(on[k] for k in keys), 4)


def run_repeat(base: Path, rep: int, auth: Auth, plan: dict[str, Any], files: dict[str, Path], work: Path,
               a: argparse.Namespace) -> dict[str, Any]:
    """Both servers up for the whole repeat, each on its own copy of the base store; per workload both are
    warmed up, then `a.pairs` pairs of slices alternate between them, each pair's order the reverse of the
    previous one's (off on, on off, off on, ...; the first pair's order alternates between repeats)."""
    logs = work / "logs"
    first = ("off", "on") if rep % 2 == 0 else ("on", "off")
    t0 = time.perf_counter()
    copies = {m: copy_store(base, work / f"run-{a.patients}p" / m) for m in first}
    out: dict[str, Any] = {"slices": {}, "pairs": {}, "probes": {},
                           "store_mb_start": store_mb(copies["off"]), "copy_s": round(time.perf_counter() - t0, 1)}
    log(f"  copied the store twice ({out['store_mb_start']:,.0f} MB each) in {out['copy_s']} s")
    try:
        with contextlib.ExitStack() as stack:
            servers = {m: stack.enter_context(serve(copies[m], m, auth, logs, f"{m}-{rep}")) for m in first}
            origin = {m: f"http://127.0.0.1:{srv.port}" for m, srv in servers.items()}
            tok_files = {"off": work / f"tokens-off-{a.patients}p.txt", "on": work / f"tokens-on-{a.patients}p.txt"}
            tok_files["off"].write_text("\n")
            tokens = Tokens(auth, origin["on"], plan["users"], tok_files["on"])
            for m in first:
                out["probes"][m] = probe(origin[m], plan, tokens.list if m == "on" else [])
            for wl in a.workloads:
                for m in first:
                    load_run(servers[m].port, files[wl], tok_files[m], logs, f"{m}-{rep}-{wl}-warmup", a.warmup,
                             a.connections)
                for i in range(a.pairs):
                    pair: dict[str, Any] = {"rep": rep, "pair": i}
                    order = first if i % 2 == 0 else first[::-1]
                    for m in order:
                        tokens.refresh(older_than=450)
                        fig = run_slice(servers, m, files[wl], tok_files[m], logs, f"{m}-{rep}-{wl}-{i}", a)
                        fig.update(rep=rep, pair=i, position=order.index(m))
                        out["slices"].setdefault(f"{wl}.{m}", []).append(fig)
                        pair[m] = fig
                    off, on = pair.pop("off"), pair.pop("on")
                    pair.update(order="/".join(order), ratio=round(on["requests_per_s"] / off["requests_per_s"], 4)
                                if off["requests_per_s"] else None,
                                cpu_ratio=round(off["cpu_ms_per_request"] / on["cpu_ms_per_request"], 4)
                                if off["cpu_ms_per_request"] and on["cpu_ms_per_request"] else None,
                                cpu_ratio_with_client=_with_client(off, on),
                                off_rps=off["requests_per_s"], on_rps=on["requests_per_s"],
                                off_cpu_ms=off["cpu_ms_per_request"], on_cpu_ms=on["cpu_ms_per_request"],
                                steal_share=max(off["steal_share"], on["steal_share"]),
                                non_2xx=(off.get("non_2xx") or 0) + (on.get("non_2xx") or 0))
                    out["pairs"].setdefault(wl, []).append(pair)
                    log(f"  {wl} pair {i + 1}/{a.pairs} ({pair['order']}): off {off['requests_per_s']:.0f} req/s"
                        f" {off['cpu_ms_per_request']} CPU ms/req, on {on['requests_per_s']:.0f} req/s"
                        f" {on['cpu_ms_per_request']} CPU ms/req; on/off {pair['ratio']}, CPU off/on"
                        f" {pair['cpu_ratio']}, steal {pair['steal_share']:.1%}, idle server"
                        f" {off['idle_server_cpu_s']} / {on['idle_server_cpu_s']} CPU s, non-2xx {pair['non_2xx']}")
        out["store_mb_end"] = {m: store_mb(c) for m, c in copies.items()}
    finally:
        if not a.keep_copies:
            for c in copies.values():
                shutil.rmtree(c, ignore_errors=True)
            with contextlib.suppress(OSError):
                (work / f"run-{a.patients}p").rmdir()
    return out


def ceiling(store: Path, files: dict[str, Path], work: Path, a: argparse.Namespace) -> dict[str, Any]:
    """The physical limit of a read by id over HTTP (minimal Starlette route + stdlib sqlite3, 2 workers)."""
    tok = work / f"tokens-off-{a.patients}p.txt"
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
    return round(median(xs), 4 if key.endswith(("ratio", "share", "per_request")) else 2) if xs else None


def _per_rep(pairs: list[dict[str, Any]], key: str) -> str:
    reps = sorted({p["rep"] for p in pairs})
    return " / ".join(f"{_med([p for p in pairs if p['rep'] == r], key) or 0:.2f}" for r in reps)


def summarize(res: Results, a: argparse.Namespace) -> str:
    d = res.data
    lines = [f"# Authorization + auditing overhead ({d.get('patients')} patients, {d.get('resources')} resources)", "",
             f"Code: {d.get('code')}. {d.get('users')} users, {d.get('patients_treated')} patients with a care"
             f" relationship (in-progress Encounter at the user's unit). `serve --workers 2` on SQLite; both servers"
             f" run for the whole repeat, each on its own copy of the store. Client: wrk closed loop,"
             f" {a.connections} connections; per workload {a.warmup:.0f} s warm-up of each server, then {a.pairs}"
             f" pairs of {a.seconds:.0f} s slices (off/on, on/off, ...) per repeat, {a.repeats} repeats.", "",
             f"PDL enforced (a patient without care relationship refused): {d.get('pdl_enforced')}."
             f" Same results on and off (probed searches): {d.get('same_results')}.", "",
             "| workload | pairs | on/off (median of pairs; per repeat) | off req/s | off p50 / p99 ms | on req/s |"
             " on p50 / p99 ms | server cores off / on | CPU ms/req off / on | CPU off/on (median of pairs; per repeat) | CPU incl. wrk off/on |"
             " target on/off ≥ 0.75 | other processes' CPU share median / max | steal median / max |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for wl in a.workloads:
        off, on = d.get("runs", {}).get(f"{wl}.off", []), d.get("runs", {}).get(f"{wl}.on", [])
        pairs = d.get("pairs", {}).get(wl, [])
        if not pairs:
            continue
        ratio, cpu_ratio = _med(pairs, "ratio") or 0, _med(pairs, "cpu_ratio") or 0
        res.put(f"ratio.{wl}", ratio)
        res.put(f"cpu_ratio.{wl}", cpu_ratio)
        steal = [s["steal_share"] for s in off + on]
        foreign = [s.get("foreign_cpu_share") or 0 for s in off + on]
        lo, hi = min(p["ratio"] or 0 for p in pairs), max(p["ratio"] or 0 for p in pairs)
        lines.append(f"| {wl} | {len(pairs)} | **{ratio:.2f}** ({lo:.2f}-{hi:.2f}; {_per_rep(pairs, 'ratio')}) |"
                     f" {_med(off, 'requests_per_s') or 0:,.0f} | {_med(off, 'p50_ms')} / {_med(off, 'p99_ms')} |"
                     f" {_med(on, 'requests_per_s') or 0:,.0f} | {_med(on, 'p50_ms')} / {_med(on, 'p99_ms')} |"
                     f" {_med(off, 'server_cores') or 0:.2f} / {_med(on, 'server_cores') or 0:.2f} |"
                     f" {_med(off, 'cpu_ms_per_request') or 0:.2f} / {_med(on, 'cpu_ms_per_request') or 0:.2f} |"
                     f" **{cpu_ratio:.2f}** ({_per_rep(pairs, 'cpu_ratio')}) | {_med(pairs, 'cpu_ratio_with_client') or 0:.2f} |"
                     f" {'met' if ratio >= 0.75 else 'missed'} (CPU: {'met' if cpu_ratio >= 0.75 else 'missed'}) |"
                     f" {median(foreign):.0%} / {max(foreign):.0%} | {median(steal):.1%} / {max(steal):.1%} |")
        bad = sum(r.get("non_2xx") or 0 for r in off + on)
        slow = sum(r.get("timeouts") or 0 for r in off + on)
        if bad or slow:
            lines.append(f"|  | {bad} non-2xx answers, {slow} requests unanswered after 5 s in these slices:"
                         " see the logs |||||||||||||")
    c = d.get("ceiling")
    if c:
        lines += ["", f"Physical limit, read by id over HTTP (minimal Starlette route + sqlite3, 2 workers, no"
                  f" auth, no audit): {c['requests_per_s']:,.0f} req/s, p50 {c.get('p50_ms')} ms, p99 {c.get('p99_ms')} ms."]
    grow = [(r["store_mb_start"], r.get("store_mb_end", {})) for r in d.get("repeats", [])]
    if grow:
        lines += ["", "Store copies per repeat (MB at start → end, off / on): " + "; ".join(
            f"{s:,.0f} → {e.get('off', 0):,.0f} / {e.get('on', 0):,.0f}" for s, e in grow) + "."]
    lines += ["", "on/off is the throughput ratio of the two slices of a pair (adjacent in time, so the machine's "
              "slow drift cancels); CPU off/on is the server's CPU time per request (its process tree, from "
              "/proc, including what it finished after the slice) off over on, a second estimate of the "
              "throughput ratio on this CPU-bound box that does not depend on how much CPU the server got; with "
              "wrk's own CPU per request added to both (same work in both modes) it is the ratio of a box that "
              "runs only them. `--auth off` still audits every read (records with an unauthenticated client), so "
              "both are the cost of token verification, the PDL policy and filters, and the user attribution; the"
              " audit log itself is paid in both. The other processes' CPU share is the machine's busy time "
              "during a slice not spent by the two servers or wrk, over both cores' time (other users of this "
              "VM); steal is the hypervisor's. Every slice (with the idle server's CPU, the server's cores in "
              "use, busy / iowait / steal shares, load average) is in the results JSON."]
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
    ap.add_argument("--quick", action="store_true", help="300 patients, 2 repeats x 4 pairs x 5 s slices: a smoke run")
    ap.add_argument("--patients", type=int, default=10_000, help="generated patients (~100 resources each)")
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--read-patients", type=int, default=400, help="patients whose resources are read by id")
    ap.add_argument("--values", type=int, default=40, help="concrete values per search query")
    ap.add_argument("--repeats", type=int, help="fresh store copies and server pairs (default 3; quick 2)")
    ap.add_argument("--pairs", type=int, help="off/on slice pairs per workload and repeat (default 6; quick 4)")
    ap.add_argument("--slice", "--seconds", dest="seconds", type=float,
                    help="seconds per wrk slice (default 10; quick 5)")
    ap.add_argument("--warmup", type=float, help="seconds of warm-up per server and workload (default 5; quick 3)")
    ap.add_argument("--settle", type=float, default=15,
                    help="after a slice, at most this many seconds for the server to finish its deferred work")
    ap.add_argument("--keep-copies", action="store_true", help="keep the last repeat's two store copies")
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
    defaults = {"repeats": 3, "pairs": 6, "seconds": 10.0, "warmup": 5.0}
    if a.quick:
        a.patients, a.read_patients, a.values = 300, 60, 10
        defaults = {"repeats": 2, "pairs": 4, "seconds": 5.0, "warmup": 3.0}
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.workloads = a.workloads.split(",")
    a.work.mkdir(parents=True, exist_ok=True)
    (a.work / "logs").mkdir(exist_ok=True)
    out = a.work / f"results-{a.patients}p.json"
    if out.exists():  # the previous run's figures stay beside this run's until the next one
        out.replace(out.with_suffix(".prev.json"))
    res = Results(out)
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
    files = {"read": write_lines(a.work, f"read-{a.patients}p", [tuple(x) for x in plan["reads"]]),
             "search": write_lines(a.work, f"search-{a.patients}p", [(k, p) for k, p, _n in plan["searches"]])}
    res.put("settings", {k: getattr(a, k) for k in ("repeats", "pairs", "seconds", "warmup", "connections",
                                                    "workloads")})
    res.put("method", "per repeat: two store copies, auth-off and auth-on servers both up; per workload"
            " alternating slices in pairs (ABBA); ratio = on/off req/s of a pair, cpu_ratio = off/on server CPU"
            " ms per request of a pair; runs[workload.mode] holds every slice")
    runs: dict[str, list[dict[str, Any]]] = {}
    pairs: dict[str, list[dict[str, Any]]] = {}
    repeats: list[dict[str, Any]] = []
    probes: dict[str, Any] = {}
    for rep in range(a.repeats):
        log(f"repeat {rep + 1}/{a.repeats}")
        got = run_repeat(store, rep, auth, plan, files, a.work, a)
        probes = got.pop("probes")
        for k, v in got.pop("slices").items():
            runs.setdefault(k, []).extend(v)
        for k, v in got.pop("pairs").items():
            pairs.setdefault(k, []).extend(v)
        repeats.append(got)
        res.put("runs", runs)
        res.put("pairs", pairs)
        res.put("repeats", repeats)
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
