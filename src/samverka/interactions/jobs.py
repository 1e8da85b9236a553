"""Who runs a background job (`$reindex`, `$export`), and whether that runner may still be at work.

A job row records its runner as `host:pid:thread` and a heartbeat. A runner in a dead process on this
host is known at once; one on another host is presumed dead when it has not reported for `STALE_US`.
Whoever finds a job whose runner is gone may claim it (an UPDATE that names the old runner) and go on.
"""

from __future__ import annotations

import os
import socket
import threading

from ..fhir.instant import now_us

STALE_US = 60_000_000  # a runner on another host that has not reported for this long is presumed dead


def owner() -> str:
    """This thread, as a job's runner."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def alive(runner: str | None, heartbeat: int) -> bool:
    """Whether the job's runner may still be at work."""
    if not runner:
        return False
    host, pid, thread = runner.rsplit(":", 2)
    if host == socket.gethostname():
        if int(pid) == os.getpid():
            return any(str(t.ident) == thread for t in threading.enumerate())
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return now_us() - heartbeat < STALE_US
