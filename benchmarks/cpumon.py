"""Side monitor for a shared machine: every 2 s, the CPU seconds (utime+stime) of each process under
--root, and the whole machine's busy jiffies, as JSON lines. Ends when --root exits (or after --max-s).

    python benchmarks/cpumon.py --root <run.py pid> --out benchmarks/.work/cpumon.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import time

from common import tree

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> tuple[str, float, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")[:160]
    except OSError:
        return None
    f = stat.rsplit(")", 1)[1].split()
    return cmd, (int(f[11]) + int(f[12])) / TICK, int(f[1])  # cmdline, CPU seconds, ppid


def postmasters() -> list[int]:
    """The benchmark's own PostgreSQL cluster(s): pg_ctl daemonises them, so they are not under --root."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as fh:
                    cmd = fh.read()
            except OSError:
                continue
            if b"samverka-bench-pg-" in cmd and b"postgres" in cmd and b"pg_ctl" not in cmd:
                out.append(int(d))
    return out


def machine() -> tuple[int, int]:
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-s", type=float, default=3 * 3600)
    a = ap.parse_args()
    t_end = time.time() + a.max_s
    with open(a.out, "a") as out:
        while time.time() < t_end and os.path.exists(f"/proc/{a.root}"):
            busy, total = machine()
            procs = {}
            roots = [a.root, *postmasters()]
            pids = [p for r in roots for p in tree(r)]
            for pid in pids:
                c = cpu_of(pid)
                if c:
                    procs[pid] = c
            out.write(json.dumps({"t": round(time.time(), 1), "busy": busy, "total": total,
                                  "load1": float(open("/proc/loadavg").read().split()[0]), "procs": procs}) + "\n")
            out.flush()
            time.sleep(2)


if __name__ == "__main__":
    main()
