"""Data for the search benchmarks: the 60 Synthea patient bundles cloned (seeded) into ~1M resources,
loaded with `samverka load` into a SQLite store and a PostgreSQL store kept in `benchmarks/.work/search/`.

Cloning (per clone `c` of source bundle `b`, with `random.Random(f"{seed}:{c}:{b}")`):
- every resource gets a fresh uuid (fullUrl, `id`, every `urn:uuid:` reference and every other occurrence
  of the old uuid, e.g. the Synthea/MRN identifiers, which equal the patient uuid);
- the Patient gets fresh SSN / driver's licence / passport identifiers (unique per clone) and a name drawn
  from pools derived from the originals (~1,000 family names, so a family name matches a few patients);
- every date/dateTime/instant is shifted by one offset per clone (-10 .. +5 years), so the data spreads;
- Organization and Practitioner entries become conditional creates (`ifNoneExist` on their identifier):
  hospitals and clinicians are shared by all clones, as they would be in a region, and the
  hospitalInformation/practitionerInformation bundles are loaded once, before the patients.

Stores are reused when their marker file (`loaded.json`) exists; a partial store is deleted and reloaded.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SAMVERKA, WORK, log

SYNTHEA = Path("/work/shared/data/synthea-r4")
SEARCH = WORK / "search"
SEED = 20240611
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DATE = re.compile(rb'"(\d{4})-(\d{2})-(\d{2})(T[0-9:.+\-Z]*)?"')
_SUFFIXES = ["", "son", "sen", "berg", "strom", "er", "man", "ley", "ton", "ford", "field", "wood", "dale",
             "ski", "ova", "ez", "ini"]
_SHARED_TYPES = ("Organization", "Practitioner")


def source_files() -> tuple[list[Path], list[Path]]:
    files = sorted(SYNTHEA.glob("*.json"))
    shared = [f for f in files if f.name.startswith(("hospitalInformation", "practitionerInformation"))]
    return shared, [f for f in files if f not in shared]


def per_clone_resources() -> tuple[int, int]:
    """(resources in one clone of all patient bundles, resources in the shared bundles)."""
    shared, patients = source_files()
    n_pat = sum(1 for f in patients for e in orjson.loads(f.read_bytes())["entry"]  # shared ones match, not create
                if e["resource"]["resourceType"] not in _SHARED_TYPES)
    n_shared = sum(len(orjson.loads(f.read_bytes())["entry"]) for f in shared)
    return n_pat, n_shared


def clones_for(resources: int) -> int:
    n_pat, n_shared = per_clone_resources()
    return max(1, math.ceil((resources - n_shared) / n_pat))


def _name_pools(patients: list[Path]) -> tuple[list[str], dict[str, list[str]]]:
    families: set[str] = set()
    given: dict[str, set[str]] = {}
    for f in patients:
        p = orjson.loads(f.read_bytes())["entry"][0]["resource"]
        for n in p.get("name", []):
            if n.get("family"):
                families.add(re.sub(r"\d+", "", n["family"]))
            for g in n.get("given", []):
                given.setdefault(p.get("gender", "unknown"), set()).add(re.sub(r"\d+", "", g))
    fam = sorted({f + s for f in families for s in _SUFFIXES})
    return fam, {k: sorted(v) for k, v in given.items()}


def _new_uuid(rng: random.Random) -> bytes:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4)).encode()


def clone_bundle(raw: bytes, c: int, b: int, n: int, families: list[str], given: dict[str, list[str]]) -> bytes:
    """Clone `c` of source bundle `b`; `n` is the patient's global number (unique identifiers)."""
    rng = random.Random(f"{SEED}:{c}:{b}")
    doc = orjson.loads(raw)
    mapping: dict[bytes, bytes] = {}
    for e in doc["entry"]:
        r = e["resource"]
        if r["resourceType"] in _SHARED_TYPES:
            ident = r["identifier"][0]
            e["request"] = {"method": "POST", "url": r["resourceType"],
                            "ifNoneExist": f"identifier={ident['system']}|{ident['value']}"}
            continue
        mapping[r["id"].encode()] = _new_uuid(rng)
        if r["resourceType"] == "Patient":
            gender = r.get("gender", "unknown")
            family = rng.choice(families)
            first = rng.choice(given.get(gender) or given[next(iter(given))])
            for nm in r.get("name", []):
                if nm.get("use") != "maiden":
                    nm["family"] = family
                    nm["given"] = [first]
            for ident in r.get("identifier", []):
                code = ((ident.get("type") or {}).get("coding") or [{}])[0].get("code")
                if code == "SS":
                    ident["value"] = f"9{rng.randint(10, 99)}-{(n // 10000) % 100:02d}-{n % 10000:04d}"
                elif code == "DL":
                    ident["value"] = f"S{99000000 + n}"
                elif code == "PPN":
                    ident["value"] = f"X{n:08d}X"
                elif ident.get("value", "").encode() not in mapping and _UUID.fullmatch(ident.get("value", "").encode()):
                    mapping[ident["value"].encode()] = _new_uuid(rng)  # Synthea person id (also the MRN)
    offset = dt.timedelta(days=rng.randint(-3650, 1826))
    text = orjson.dumps(doc)
    text = _UUID.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)

    def shift(m: re.Match[bytes]) -> bytes:
        try:
            d = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))) + offset
        except ValueError:
            return m.group(0)
        return b'"' + d.isoformat().encode() + (m.group(4) or b"") + b'"'

    return _DATE.sub(shift, text)


def _clone_job(args: tuple[int, list[tuple[int, str]], str, list[str], dict[str, list[str]]]) -> int:
    c, sources, out, families, given = args
    written = 0
    for b, path in sources:
        n = c * 1000 + b
        data = clone_bundle(Path(path).read_bytes(), c, b, n, families, given)
        target = Path(out) / f"c{c:03d}-b{b:02d}.json"
        target.write_bytes(data)
        written += 1
    return written


def data_dir(clones: int) -> Path:
    return SEARCH / f"data-{clones}c"


def generate(clones: int) -> Path:
    """Write the cloned bundles (once); returns the data folder (`shared/`, `patients/`)."""
    root = data_dir(clones)
    marker = root / "complete.json"
    if marker.exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    (root / "shared").mkdir(parents=True)
    (root / "patients").mkdir()
    shared, patients = source_files()
    for f in shared:
        shutil.copy(f, root / "shared" / f.name)
    families, given = _name_pools(patients)
    sources = [(b, str(f)) for b, f in enumerate(patients)]
    t0 = time.perf_counter()
    jobs = [(c, sources, str(root / "patients"), families, given) for c in range(clones)]
    with ProcessPoolExecutor(os.cpu_count() or 2) as pool:
        files = sum(pool.map(_clone_job, jobs))
    marker.write_text(json.dumps({"clones": clones, "files": files, "families": len(families),
                                  "seconds": round(time.perf_counter() - t0, 1)}))
    log(f"generated {files} cloned bundles in {time.perf_counter() - t0:.0f} s -> {root}")
    return root


# ---- PostgreSQL: a persistent cluster in .work (pg.Cluster is a throwaway one in a temp dir) ----------

def pg_cluster_class() -> type:
    from pg import SETTINGS, Cluster

    class PersistentCluster(Cluster):
        """Lines copied from pg.Cluster.start/stop: the data directory is kept, and reused when present."""

        def __init__(self, root: Path, port: int) -> None:
            super().__init__()
            shutil.rmtree(self.root, ignore_errors=True)  # the temp dir the base made
            self.root = root
            self.root.mkdir(parents=True, exist_ok=True)
            self.port = port
            if self.as_user:
                import pwd
                pw = pwd.getpwnam("postgres")
                os.chown(self.root, pw.pw_uid, pw.pw_gid)
                os.chmod(self.root, 0o700)

        def start(self) -> PersistentCluster:
            if not (self.datadir / "PG_VERSION").exists():
                self._run("initdb", "-D", str(self.datadir), "--auth=trust", "-U", "postgres", "-E", "UTF8",
                          "--locale=C.UTF-8", "--no-instructions")
            if (self.datadir / "postmaster.pid").exists():  # left by a killed run
                try:
                    self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.datadir))
                except RuntimeError:
                    (self.datadir / "postmaster.pid").unlink(missing_ok=True)
            settings = {**SETTINGS, "random_page_cost": "1.1", "effective_cache_size": "8GB"}
            self.launch(settings, start_timeout=120, ready_timeout=60)
            return self

        def ensure_db(self, name: str) -> str:
            import psycopg
            with psycopg.connect(self.url(), autocommit=True) as c:
                if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                    c.execute(f'CREATE DATABASE "{name}"')
            return self.url(name)

        def stop(self) -> None:
            if (self.datadir / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.datadir), timeout=300)

    return PersistentCluster


def pg_root(clones: int) -> Path:
    return SEARCH / f"pg-{clones}c"


def pg_port(clones: int) -> int:
    return 54000 + clones % 900


def store_args(backend: str, clones: int, pg_url: str | None = None) -> list[str]:
    if backend == "sqlite":
        return ["--data-dir", str(SEARCH / f"sqlite-{clones}c")]
    assert pg_url
    return ["--database", pg_url]


def _marker(backend: str, clones: int) -> Path:
    return SEARCH / f"loaded-{backend}-{clones}c.json"


def loaded(backend: str, clones: int) -> dict[str, Any] | None:
    m = _marker(backend, clones)
    return json.loads(m.read_text()) if m.exists() else None


def load(backend: str, clones: int, data: Path, pg_url: str | None = None) -> dict[str, Any]:
    """`samverka load` the shared bundles, then every clone; reused when the marker exists."""
    done = loaded(backend, clones)
    if done:
        log(f"{backend}: reusing the loaded store ({done['resources']} resources)")
        return done
    args = store_args(backend, clones, pg_url)
    if backend == "sqlite":
        shutil.rmtree(args[1], ignore_errors=True)
    else:
        import psycopg
        with psycopg.connect(pg_url) as c:  # a partial load: start over
            c.execute("DROP SCHEMA public CASCADE")
            c.execute("CREATE SCHEMA public")
    out: dict[str, Any] = {"backend": backend, "clones": clones, "steps": []}
    total, secs = 0, 0.0
    logf = SEARCH / f"load-{backend}-{clones}c.log"
    for part in ("shared", "patients"):
        t0 = time.perf_counter()
        with open(logf, "ab") as fh:
            p = subprocess.run([SAMVERKA, "load", *args, str(data / part)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, cwd=REPO, timeout=6 * 3600, check=False,
                               env={**os.environ, "COLUMNS": "200"})
            fh.write(p.stdout)
        text = p.stdout.decode(errors="replace")
        if p.returncode != 0 or "failed" in text.splitlines()[-1]:
            raise RuntimeError(f"samverka load {part} failed ({p.returncode}): {text[-3000:]}")
        line = [x for x in text.splitlines() if x.startswith("loaded ")][-1]
        words = line.split()
        n, s = int(words[1]), float(words[words.index("in") + 1])
        total += n
        secs += s
        out["steps"].append({"part": part, "resources": n, "seconds": s, "wall_s": round(time.perf_counter() - t0, 1),
                             "loadavg_after": os.getloadavg()[0]})
        log(f"{backend}: loaded {part}: {n} resources in {s:.0f} s ({n / s:.0f}/s)")
    out.update(resources=total, seconds=round(secs, 1), resources_per_s=round(total / secs, 1))
    if backend == "postgresql":
        import psycopg
        with psycopg.connect(pg_url, autocommit=True) as c:
            c.execute("VACUUM ANALYZE")
    # SQLite: no ANALYZE -- the store never runs one, so the benchmark measures the plans it really gets
    _marker(backend, clones).write_text(json.dumps(out, indent=2))
    return out


def main() -> None:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--resources", type=int, default=1_000_000)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    a = ap.parse_args()
    clones = clones_for(a.resources)
    data = generate(clones)
    for backend in (["sqlite", "postgresql"] if a.backend == "both" else [a.backend]):
        if backend == "sqlite":
            load("sqlite", clones, data)
        else:
            cl = pg_cluster_class()(pg_root(clones), pg_port(clones)).start()
            try:
                load("postgresql", clones, data, cl.ensure_db("samverka"))
            finally:
                cl.stop()


if __name__ == "__main__":
    main()
