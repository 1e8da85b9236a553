"""Who used the CPU during each phase of a run (from cpumon.py's samples): the machine is shared, so
besides resources/s this gives the cores our processes actually got and resources per CPU-second.

    python benchmarks/cpu_report.py benchmarks/.work/cpumon.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def classify(cmd: str) -> str:
    if "ingest.py client" in cmd:
        return "client"
    if "samverka serve" in cmd:
        return "server_pg" if "--database" in cmd else "server_sqlite"
    if "samverka load" in cmd:
        return "load_pg" if "--database" in cmd else "load_sqlite"
    if cmd.startswith("wrk"):
        return "wrk"
    if "ceiling_app" in cmd:
        return "server_ceiling"
    if "samverka-bench-pg" in cmd or cmd.startswith("postgres"):
        return "postgres"
    if "run.py" in cmd:
        return "orchestrator"
    return "other"


def main(path: str) -> None:
    samples = [json.loads(line) for line in open(path)]
    ppid: dict[str, int] = {}
    cmds: dict[str, str] = {}
    for s in samples:
        for pid, v in s["procs"].items():
            cmds[pid] = v[0]
            if len(v) > 2:
                ppid[pid] = v[2]

    def category(pid: str) -> str:
        chain = [pid]
        for _ in range(20):  # bounded walk up the recorded ancestry
            p = str(ppid.get(chain[-1], 0))
            if p not in cmds:
                break
            chain.append(p)
        for p in chain:  # the nearest ancestor (or self) with a recognised command line decides
            c = classify(cmds[p])
            if c not in ("other", "orchestrator"):
                return c
        return classify(cmds[chain[-1]])

    cat = {pid: category(pid) for pid in cmds}
    # phases: consecutive samples in which a marker category is alive
    markers = {"client": "HTTP ingest", "load_sqlite": "load sqlite", "load_pg": "load pg", "wrk": "wrk reads"}
    phases: list[tuple[str, int, int]] = []
    cur, start = None, 0
    for i, s in enumerate(samples):
        alive = {cat[p] for p in s["procs"]}
        m = next((k for k in markers if k in alive), None)
        if m is None:
            m = "in-process (profile / raw inserts)"
        if m == "wrk":
            srv = next((c for c in ("server_sqlite", "server_pg", "server_ceiling") if c in alive), "?")
            m = f"wrk:{srv}"
        elif m == "client":
            srv = next((c for c in ("server_sqlite", "server_pg") if c in alive), "?")
            m = f"client:{srv}"
        if m != cur:
            if cur is not None:
                phases.append((cur, start, i - 1))
            cur, start = m, i
    if cur is not None:
        phases.append((cur, start, len(samples) - 1))
    print("| phase | wall s | machine busy % (2 cores) | load avg | CPU cores used by: server / client or wrk / postgres / orchestrator |")
    print("|---|---|---|---|---|")
    for name, a, b in phases:
        if b <= a:
            continue
        sa, sb = samples[a], samples[b]
        wall = sb["t"] - sa["t"]
        used: dict[str, float] = defaultdict(float)
        for pid, v in sb["procs"].items():
            c0 = sa["procs"].get(pid, [None, 0.0])[1]
            used[cat[pid]] += v[1] - c0
        busy = 100 * (sb["busy"] - sa["busy"]) / max(1, sb["total"] - sa["total"])
        load = sum(s["load1"] for s in samples[a:b + 1]) / (b - a + 1)
        cores = {k: round(v / wall, 2) for k, v in sorted(used.items()) if v / wall >= 0.01}
        print(f"| {name} | {wall:.0f} | {busy:.0f} | {load:.1f} | {cores} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/.work/cpumon.jsonl")
