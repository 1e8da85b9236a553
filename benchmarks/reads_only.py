"""Read by id against a store that is already loaded (the same wrk workload as `run.py`'s read step).

    python benchmarks/reads_only.py --database postgresql://... [--repeats 3] [--seconds 30]
    python benchmarks/reads_only.py --data-dir DIR

For re-measuring reads without re-ingesting 1M resources, e.g. on the search benchmark's 1M
PostgreSQL store when the ingest run's reads were taken on a loaded machine. Starts
`samverka serve --workers 2 --auth off` on the store, picks every resource id from it, warms up,
then runs wrk -t2 -c16 `--repeats` times; prints the runs, the medians, the server's memory and the
machine's load average, and writes them to `benchmarks/.work/reads-only-<tag>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from common import free_port, log, samverka_serve
from read import ids_postgres, ids_sqlite, write_id_list
from run import WORK, reads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--database")
    where.add_argument("--data-dir", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--tag", default=None)
    args = ap.parse_args()
    tag = args.tag or ("pg" if args.database else "sqlite")
    logs = WORK / f"logs-reads-only-{tag}"
    logs.mkdir(parents=True, exist_ok=True)
    if args.database:
        ids = ids_postgres(args.database)
        store = ["--database", args.database]
    else:
        ids = ids_sqlite(args.data_dir / "samverka.sqlite")
        store = ["--data-dir", str(args.data_dir)]
    log(f"{len(ids):,} ids")
    lua = write_id_list(ids, WORK, f"reads-only-{tag}")
    port = free_port()
    server = samverka_serve(port, store, logs / "server.log").start()
    load_before = os.getloadavg()
    try:
        out = reads(port, lua, logs, f"reads-only-{tag}", args.repeats, args.seconds, server.pid)
    finally:
        server.stop()
    out["load_avg_before_after"] = [load_before, os.getloadavg()]
    out["resources"] = len(ids)
    (WORK / f"reads-only-{tag}.json").write_text(json.dumps(out, indent=1))
    log(json.dumps({k: v for k, v in out.items() if k != "runs"}))


if __name__ == "__main__":
    main()
