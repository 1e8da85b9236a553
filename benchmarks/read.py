"""Read-by-id benchmarks with wrk (2 threads, 16 connections, 30 s) against random ids of the store,
and the raw HTTP ceiling: a minimal Starlette `async def` route reading the same SQLite rows inline.
"""

from __future__ import annotations

import random
import re
import sqlite3
from pathlib import Path
from typing import Any

from common import HERE, PY, run

LUA = """
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local n = #paths
local seeded = false
request = function()
  if not seeded then
    math.randomseed(os.time() + math.floor(os.clock() * 1000000) + tonumber(tostring(paths):sub(-6), 16))
    seeded = true
  end
  return wrk.format("GET", paths[math.random(n)], {["Accept"] = "application/fhir+json"})
end
"""


def write_id_list(ids: list[tuple[str, str]], work: Path, tag: str, prefix: str = "/fhir",
                  sample: int = 200_000, seed: int = 7) -> Path:
    rnd = random.Random(seed)
    pick = rnd.sample(ids, min(sample, len(ids)))
    paths = work / f"ids-{tag}.txt"
    paths.write_text("".join(f"{prefix}/{t}/{i}\n" for t, i in pick))
    lua = work / f"read-{tag}.lua"
    lua.write_text(LUA % {"paths": paths})
    return lua


def ids_sqlite(db: Path) -> list[tuple[str, str]]:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = c.execute("SELECT type, id FROM resources WHERE deleted = 0").fetchall()
    c.close()
    return rows


def ids_postgres(url: str) -> list[tuple[str, str]]:
    import psycopg

    with psycopg.connect(url) as c:
        return c.execute("SELECT type, id FROM resources WHERE deleted = 0").fetchall()  # type: ignore[return-value]


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            res[f"p{pct}_ms"] = round(_ms(m.group(1)), 2)
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = m.group(1).strip() if m else None
    return res


def wrk(port: int, lua: Path, logs: Path, tag: str, seconds: int = 30, connections: int = 16,
        threads: int = 2) -> dict[str, Any]:
    rc, out, _ = run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
                      "-s", str(lua), f"http://127.0.0.1:{port}"], logs / f"wrk-{tag}.log", timeout=seconds + 60)
    if rc != 0:
        raise RuntimeError(f"wrk failed: {out[-1500:]}")
    return parse_wrk(out)


def warmup(port: int, lua: Path, logs: Path, tag: str) -> None:
    wrk(port, lua, logs, f"{tag}-warmup", seconds=5)


CEILING_APP = '''
"""The HTTP ceiling for a read by id: Starlette + uvicorn, an async def route, stdlib sqlite3 inline."""
import os, sqlite3
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

_conn = None

def conn():
    global _conn
    if _conn is None:
        _conn = sqlite3.connect(os.environ["CEILING_DB"], check_same_thread=False)
        _conn.execute("PRAGMA mmap_size = 268435456")
    return _conn

async def read(request):
    row = conn().execute(
        "SELECT h.data FROM resources r JOIN history h ON h.seq = r.seq WHERE r.type = ? AND r.id = ?",
        (request.path_params["type"], request.path_params["id"])).fetchone()
    if row is None:
        return Response(b"", status_code=404)
    return Response(bytes(row[0]), media_type="application/fhir+json")

async def ok(request):
    return Response(b"{}", media_type="application/json")

app = Starlette(routes=[Route("/fhir/metadata", ok), Route("/fhir/{type}/{id}", read)])
'''


def ceiling_server(db: Path, port: int, logs: Path, workers: int = 2):
    from common import Server

    app_dir = HERE / ".work" / "ceiling"
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "ceiling_app.py").write_text(CEILING_APP)
    return Server([PY, "-m", "uvicorn", "--app-dir", str(app_dir), "ceiling_app:app", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
                  port, logs / "server-ceiling.log", env={"CEILING_DB": str(db)})
