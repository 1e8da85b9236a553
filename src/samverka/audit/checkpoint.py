"""WAL checkpoints of the files the audit's committing thread writes, taken off that thread (SQLite).

https://www.sqlite.org/wal.html#checkpointing -- by default the connection whose commit takes the WAL
past 1,000 pages copies it back into the database file, fsync included, inside that commit. The
committing thread (`groupcommit.GroupCommit`) writes the patient and entity index of read records: rows at
random places of large indexes, ~1 MB of WAL per chunk. So every few chunks one of them ran a checkpoint
(20-60 ms on the 1M benchmark store), and the reads whose records waited behind it showed as bursts of
30-60 ms searches. Here a thread of its own runs a PASSIVE checkpoint every `INTERVAL` seconds, which
never blocks the writer; the writer's own automatic checkpoint stays only as a backstop (`BACKSTOP_PAGES`),
should this thread fall behind.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ..store import Repository

log = logging.getLogger(__name__)

INTERVAL = 0.5  # seconds between checkpoints
BACKSTOP_PAGES = 16_000  # the writer checkpoints itself past this many WAL pages (64 MiB)


class Checkpointer:
    """One thread checkpointing the files `add`ed to it, until `close`."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-checkpoint", daemon=True)
        self._thread.start()

    def add(self, path: Path) -> None:
        """Checkpoint `path` too, from the next round on."""
        if path not in self.paths:
            self.paths = [*self.paths, path]  # a new list: the thread iterates over the one it read

    def _run(self) -> None:
        from ..store.sqlite import SqliteRepository

        repos: dict[Path, Repository] = {}
        try:
            while not self._stop.wait(INTERVAL):
                for path in self.paths:
                    repo = repos.get(path)
                    if repo is None:
                        repo = repos[path] = SqliteRepository(path)
                    # (busy, WAL pages, pages checkpointed); busy when another process checkpoints
                    repo.fetch("PRAGMA wal_checkpoint(PASSIVE)", ())
                self.runs += 1
        except Exception:  # the writers' backstop checkpoints go on; say why this thread stopped
            log.exception("audit checkpoint thread stopped")
        finally:
            for repo in repos.values():
                repo.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def hand_over(writer: Repository) -> None:
    """The writer connection leaves checkpoints to a `Checkpointer`, except past `BACKSTOP_PAGES`."""
    writer.fetch(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}", ())
