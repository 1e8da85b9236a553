"""The physical limit: the same rows Samverka wrote, re-inserted raw into the same schema.

Source: a SQLite store Samverka loaded (resources, history and every idx_* row). The rows are cut into
transactions of the same sizes as the generated Bundles (in pk order, which is write order for a fresh
load), read into memory chunk by chunk *outside* the timed section, and inserted with `executemany`,
one transaction per Bundle: no JSON parsing, no validation, no extraction, no HTTP.
Target: a fresh database with Samverka's own migration (same schema, same pragmas / settings).
"""

from __future__ import annotations

import bisect
import sqlite3
import time
from pathlib import Path
from typing import Any

from common import log

from samverka.store.schema import INDEX_TABLE_NAMES

RES_COLS = ("pk", "type", "id", "version", "seq", "deleted", "last_updated", "compartment")
HIST_COLS = ("seq", "pk", "type", "version", "last_updated", "method", "data")
CHUNK_RESOURCES = 60_000  # rows held in memory at once (pre-computed, untimed)


def _cols(src: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in src.execute(f"PRAGMA table_info({table})")]


def source_counts(src_path: Path) -> dict[str, int]:
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
    out = {t: src.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("resources", "history",
                                                                              *INDEX_TABLE_NAMES)}
    src.close()
    out["index_rows"] = sum(out[t] for t in INDEX_TABLE_NAMES)
    return out


def _chunks(src: sqlite3.Connection, sizes: list[int]):
    """Yield lists of bundles; each bundle = {table: rows}. pk ranges follow `sizes` in order."""
    pks = [r[0] for r in src.execute("SELECT pk FROM resources ORDER BY pk")]
    cols = {t: _cols(src, t) for t in INDEX_TABLE_NAMES}
    bounds: list[tuple[int, int]] = []  # (first pk, last pk) of each bundle
    i = 0
    for n in sizes:
        if i >= len(pks):
            break
        j = min(i + n, len(pks)) - 1
        bounds.append((pks[i], pks[j]))
        i = j + 1
    if i < len(pks):  # rows beyond the Bundle sizes (should not happen): one more transaction
        bounds.append((pks[i], pks[-1]))
    k = 0
    while k < len(bounds):  # bounded by len(bounds)
        group, count = [], 0
        while k < len(bounds) and count < CHUNK_RESOURCES:
            group.append(bounds[k])
            count += bounds[k][1] - bounds[k][0] + 1
            k += 1
        lo, hi = group[0][0], group[-1][1]
        tables: dict[str, list[tuple[Any, ...]]] = {
            "resources": src.execute(f"SELECT {', '.join(RES_COLS)} FROM resources WHERE pk BETWEEN ? AND ?"
                                     " ORDER BY pk", (lo, hi)).fetchall(),
            "history": src.execute(f"SELECT {', '.join(HIST_COLS)} FROM history WHERE pk BETWEEN ? AND ?"
                                   " ORDER BY seq", (lo, hi)).fetchall(),
        }
        for t in INDEX_TABLE_NAMES:
            tables[t] = src.execute(f"SELECT {', '.join(cols[t])} FROM {t} WHERE res BETWEEN ? AND ?",
                                    (lo, hi)).fetchall()
        # split per bundle by pk range (res / pk column)
        bundles: list[dict[str, list[tuple[Any, ...]]]] = [{} for _ in group]
        for t, rows in tables.items():
            pos = 1 if t == "history" else (0 if t == "resources" else cols[t].index("res"))
            rows.sort(key=lambda r: r[pos])
            keys = [r[pos] for r in rows]
            for b, (b_lo, b_hi) in zip(bundles, group, strict=False):
                b[t] = rows[bisect.bisect_left(keys, b_lo):bisect.bisect_right(keys, b_hi)]
        yield bundles, {t: (cols[t] if t in cols else list(RES_COLS if t == "resources" else HIST_COLS))
                        for t in tables}


def raw_sqlite(src_path: Path, dest_path: Path, sizes: list[int]) -> dict[str, Any]:
    from samverka.store.sqlite import connect, migrate

    for p in dest_path.parent.glob(dest_path.name + "*"):
        p.unlink()
    dest = connect(dest_path)
    migrate(dest)
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
    timed = 0.0
    resources = index_rows = txns = 0
    for bundles, cols in _chunks(src, sizes):
        sqls = {t: f"INSERT INTO {t} ({', '.join(c)}) VALUES ({', '.join('?' * len(c))})" for t, c in cols.items()}
        t0 = time.perf_counter()
        for b in bundles:
            dest.execute("BEGIN IMMEDIATE")
            for t, rows in b.items():
                if rows:
                    dest.executemany(sqls[t], rows)
            dest.execute("COMMIT")
        timed += time.perf_counter() - t0
        txns += len(bundles)
        resources += sum(len(b["resources"]) for b in bundles)
        index_rows += sum(len(b[t]) for b in bundles for t in INDEX_TABLE_NAMES)
        log(f"  raw sqlite: {resources} resources, {resources / timed:,.0f}/s")
    src.close()
    dest.close()
    return {"resources": resources, "index_rows": index_rows, "transactions": txns, "seconds": round(timed, 2),
            "resources_per_s": round(resources / timed, 1)}


def raw_postgres(src_path: Path, url: str, sizes: list[int], method: str = "executemany") -> dict[str, Any]:
    import psycopg

    from samverka.store.postgres import migrate

    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
    timed = 0.0
    resources = index_rows = txns = 0
    with psycopg.connect(url) as conn:
        for bundles, cols in _chunks(src, sizes):
            # history.data: the JSON text, cast to jsonb by the server (as Samverka's write does)
            for b in bundles:
                b["history"] = [(*r[:6], bytes(r[6]).decode() if r[6] is not None else None) for r in b["history"]]
            sqls = {}
            for t, c in cols.items():
                marks = ", ".join("%s::jsonb" if (t == "history" and col == "data") else "%s" for col in c)
                sqls[t] = f"INSERT INTO {t} ({', '.join(c)}) VALUES ({marks})"
            t0 = time.perf_counter()
            for b in bundles:
                with conn.transaction(), conn.cursor() as cur:
                    for t, rows in b.items():
                        if not rows:
                            continue
                        if method == "copy":
                            with cur.copy(f"COPY {t} ({', '.join(cols[t])}) FROM STDIN") as cp:
                                for r in rows:
                                    cp.write_row(r)
                        else:
                            cur.executemany(sqls[t], rows)
            timed += time.perf_counter() - t0
            txns += len(bundles)
            resources += sum(len(b["resources"]) for b in bundles)
            index_rows += sum(len(b[t]) for b in bundles for t in INDEX_TABLE_NAMES)
            log(f"  raw postgresql ({method}): {resources} resources, {resources / timed:,.0f}/s")
    src.close()
    return {"method": method, "resources": resources, "index_rows": index_rows, "transactions": txns,
            "seconds": round(timed, 2), "resources_per_s": round(resources / timed, 1)}


def sizes_from_store(src_path: Path) -> list[int]:
    """Transaction sizes as the store saw them: one last_updated per transaction, in pk order."""
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
    sizes = [r[1] for r in src.execute(
        "SELECT last_updated, count(*) FROM resources GROUP BY last_updated ORDER BY min(pk)")]
    src.close()
    return sizes
