"""The audit log's patient and entity index, written behind the chain in batches.

The chain (`chain.append_prepared`) stores each record as one sequential row of `audit_log`. The rows
that let auditors search by patient and by entity (`audit_patient`, `audit_entity`: one per patient and
per resource a record names, https://hl7.org/fhir/R4/auditevent.html#search) are derived from the
record's AuditEvent, and writing them one record at a time cost a read of a 50-result search more than
the search itself: about a hundred randomly placed index entries per commit. They are written here
instead, for many records per transaction, behind a watermark (`audit_indexed.pos`: every record up to
it is indexed, none after it):

- the committing thread of read records (`groupcommit.GroupCommit`) indexes small chunks when no reads
  are waiting, every `TICK` seconds and whenever `EAGER` reads are behind;
- every query of the log (`query.search`, `read`, `report`) first calls `catch_up`, so an auditor never
  misses a record that is committed but not indexed yet;
- `chain.verify` checks the rows up to the watermark against their records, and that none exist after it.

The watermark moves under the same lock as its rows (SQLite's write lock, PostgreSQL `FOR UPDATE`), so
processes never index a record twice; `ON CONFLICT DO NOTHING` makes a repeated chunk harmless anyway.
The chain head is read before the records, and appends commit in position order, so every record up to
it is committed.
"""

from __future__ import annotations

import orjson

from ..store import Repository, UnitOfWork
from .model import columns

CHUNK = 16  # records per background transaction at most: a read committing behind a chunk waits for it,
ROW_BUDGET = 256  # so it stays small -- and ends after the record that brings this many index rows. A
#                   50-result search's record names ~100 entities, each a random place in a large index:
#                   16 such records took 20-60 ms on the 1M benchmark store (1 GB audit file), and the reads
#                   behind them showed as bursts of 30-60 ms searches; 256 rows take ~5 ms
EAGER = 128  # reads committed since the last chunk that start one without waiting for the tick
CATCH_UP = 2000  # records per transaction when a query catches up
TICK = 0.5  # seconds: the committing thread indexes (also what others appended) at least this often
_ROWS = 250  # (value, pos) pairs per multi-row INSERT


def backlog(repo: Repository) -> int:
    """Records committed but not indexed yet (an unlocked read: a hint, exact once nothing is appending)."""
    rows = repo.fetch("SELECT (SELECT pos FROM audit_head WHERE one = 1) - (SELECT pos FROM audit_indexed"
                      " WHERE one = 1)", ())
    return int(rows[0][0] or 0) if rows else 0


def _insert(uow: UnitOfWork, table: str, col: str, rows: list[tuple[str, int]]) -> None:
    for start in range(0, len(rows), _ROWS):
        chunk = rows[start:start + _ROWS]
        uow.execute(f"INSERT INTO {table} ({col}, pos) VALUES " + ", ".join(["(?, ?)"] * len(chunk))
                    + f" ON CONFLICT ({col}, pos) DO NOTHING", [v for row in chunk for v in row])


def index_chunk(uow: UnitOfWork, dialect: str, limit: int, max_rows: int | None = None) -> tuple[int, bool]:
    """Index up to `limit` records after the watermark inside the open transaction, stopping after the
    record that brings the index rows to `max_rows`; returns how many records, and whether more wait."""
    lock = " FOR UPDATE" if dialect == "postgresql" else ""
    mark = int(uow.execute(f"SELECT pos FROM audit_indexed WHERE one = 1{lock}", ())[0][0])
    head = int(uow.execute("SELECT pos FROM audit_head WHERE one = 1", ())[0][0])
    if head <= mark:
        return 0, False
    rows = uow.execute("SELECT pos, data FROM audit_log WHERE pos > ? AND pos <= ? ORDER BY pos",
                       (mark, min(head, mark + limit)))
    patients: list[tuple[str, int]] = []
    refs: list[tuple[str, int]] = []
    done = 0
    for pos, data in rows:
        c = columns(orjson.loads(data))
        patients += [(p, int(pos)) for p in c.patients]
        refs += [(r, int(pos)) for r in c.refs]
        done += 1
        if max_rows is not None and len(patients) + len(refs) >= max_rows:
            break
    rows = rows[:done]
    # sorted by key: neighbouring entries share index pages, written once per transaction
    _insert(uow, "audit_patient", "patient", sorted(set(patients)))
    _insert(uow, "audit_entity", "ref", sorted(set(refs)))
    if not rows:
        return 0, False
    last = int(rows[-1][0])
    uow.execute("UPDATE audit_indexed SET pos = ? WHERE one = 1", (last,))
    return len(rows), last < head


def catch_up(repo: Repository, limit: int | None = None, chunk: int = CATCH_UP) -> int:
    """Index the records after the watermark (at most `limit` of them), `chunk` per transaction."""
    done = 0
    if backlog(repo) <= 0:  # an unlocked hint: no write transaction when nothing waits
        return 0
    while limit is None or done < limit:
        step = chunk if limit is None else min(chunk, limit - done)
        with repo.transaction() as uow:
            n, more = index_chunk(uow, repo.dialect, step)
        done += n
        if not more:
            break
    return done


def watermark(repo: Repository) -> int:
    return int(repo.fetch("SELECT pos FROM audit_indexed WHERE one = 1", ())[0][0])
