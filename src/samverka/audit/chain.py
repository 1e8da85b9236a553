"""The append-only, hash-chained audit table: append inside a unit of work, and verify the whole chain.

Tamper evidence for the IHE BALP records (https://profiles.ihe.net/ITI/BALP/): record n stores
`hash_n = sha256("n" LF hash_{n-1} LF data_n)` where `data_n` is the exact AuditEvent JSON. Appends read
and move `audit_head` under the database write lock (SQLite `BEGIN IMMEDIATE`; PostgreSQL
`SELECT ... FOR UPDATE` on the head row), so every process extends one linear chain without gaps.
The rows that index records by patient and entity are written behind the chain (`side`); `verify`
checks them up to its watermark, and that there are none after it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..store import Repository, UnitOfWork
from .model import Columns, columns

GENESIS = "0" * 64
_LOG_COLS = ("pos, id, recorded, action, outcome, subtype, purpose, user_id, unit_id, provider_id, client_id,"
             " data, prev_hash, hash")
_CHUNK = 64  # rows per multi-row INSERT: 64 x 14 values stay far below either backend's parameter limit

Head = tuple[int, str]  # (position, hash) of the newest record
Prepared = tuple[bytes, Columns]  # an AuditEvent's exact JSON and the columns derived from it


def link(pos: int, prev_hash: str, data: bytes) -> str:
    """The chain hash of the record at `pos`."""
    h = hashlib.sha256(f"{pos}\n{prev_hash}\n".encode())
    h.update(data)
    return h.hexdigest()


def serialise(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def prepare(event: dict[str, Any]) -> Prepared:
    """The CPU work of an append, done before (and outside) the head lock."""
    return serialise(event), columns(event)


def _insert(uow: UnitOfWork, table: str, cols: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Multi-row INSERTs: one statement per `_CHUNK` rows rather than one per row."""
    if not rows:
        return
    one = "(" + ", ".join("?" for _ in rows[0]) + ")"
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start:start + _CHUNK]
        uow.execute(f"INSERT INTO {table} ({cols}) VALUES " + ", ".join([one] * len(chunk)),
                    [v for row in chunk for v in row])


def _linked(prepared: Sequence[Prepared], head: Head) -> tuple[list[tuple[Any, ...]], Head]:
    pos, prev = head
    rows = []
    for data, c in prepared:
        pos += 1
        h = link(pos, prev, data)
        rows.append((pos, c.id, c.recorded, c.action, c.outcome, c.subtype, c.purpose, c.user_id, c.unit_id,
                     c.provider_id, c.client_id, data.decode(), prev, h))
        prev = h
    return rows, (pos, prev)


def append_prepared(uow: UnitOfWork, prepared: Sequence[Prepared], dialect: str, head: Head | None = None) -> Head:
    """Append prepared records inside the open transaction; returns the new head.

    `head` is the caller's cached idea of the chain head: the records are linked to it and the head row
    is moved only if it still says exactly that (`UPDATE ... WHERE pos = ? AND hash = ?`, which takes the
    row lock on PostgreSQL and runs under BEGIN IMMEDIATE on SQLite). If another process appended in
    between, nothing matched and the records are linked again to the head read under the lock."""
    moved: Head | None = None
    if head is not None:
        rows, new = _linked(prepared, head)
        if uow.execute("UPDATE audit_head SET pos = ?, hash = ? WHERE one = 1 AND pos = ? AND hash = ? RETURNING pos",
                       (new[0], new[1], head[0], head[1])):
            moved = new
    if moved is None:
        lock = " FOR UPDATE" if dialect == "postgresql" else ""
        row = uow.execute(f"SELECT pos, hash FROM audit_head WHERE one = 1{lock}", ())[0]
        rows, moved = _linked(prepared, (int(row[0]), str(row[1])))
        uow.execute("UPDATE audit_head SET pos = ?, hash = ? WHERE one = 1", moved)
    _insert(uow, "audit_log", _LOG_COLS, rows)  # its patient and entity rows follow (audit.side)
    return moved


_PG_TYPES = ("bigint", "text", "bigint", "text", "text", "text", "text", "text", "text", "text", "text", "text",
             "text", "text")  # the _LOG_COLS in order


def append_one_statement(repo: Repository, prepared: Sequence[Prepared], head: Head) -> Head | None:
    """PostgreSQL: append linked to the cached `head` in one autocommitted statement (one round trip
    instead of BEGIN, UPDATE, INSERT and COMMIT): the head row moves and the records go in only if the head
    still says exactly `head`; otherwise nothing is written and None tells the caller to take the lock."""
    if not prepared or len(prepared) > _CHUNK:
        return None
    rows, new = _linked(prepared, head)
    one = "(" + ", ".join(f"?::{t}" for t in _PG_TYPES) + ")"
    sql = ("WITH h AS (UPDATE audit_head SET pos = ?, hash = ? WHERE one = 1 AND pos = ? AND hash = ? RETURNING pos)"
           f" INSERT INTO audit_log ({_LOG_COLS}) SELECT v.* FROM (VALUES {', '.join([one] * len(rows))}) v"
           " WHERE EXISTS (SELECT 1 FROM h) RETURNING pos")
    done = repo.fetch(sql, [new[0], new[1], head[0], head[1], *(v for row in rows for v in row)])
    return new if len(done) == len(rows) else None


def append(uow: UnitOfWork, events: Sequence[dict[str, Any]], dialect: str) -> int:
    """Append `events` to the chain inside the open transaction; returns the new head position."""
    if not events:
        return -1
    prepared = [prepare(ev) for ev in events]  # CPU work before the head lock
    return append_prepared(uow, prepared, dialect)[0]


def write(repo: Repository, events: Sequence[dict[str, Any]]) -> None:
    """Append `events` in a short transaction of their own."""
    if events:
        with repo.transaction() as uow:
            append(uow, events, repo.dialect)


@dataclass
class Verdict:
    """The result of `verify`: records checked, and the first broken position with the reason."""

    checked: int
    broken_at: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def _rows(repo: Repository, batch: int) -> Iterator[tuple[Any, ...]]:
    last = 0
    while True:
        rows = repo.fetch("SELECT pos, id, recorded, action, outcome, subtype, purpose, user_id, unit_id,"
                          " provider_id, client_id, data, prev_hash, hash FROM audit_log WHERE pos > ?"
                          " ORDER BY pos LIMIT ?", (last, batch))
        if not rows:
            return
        yield from rows
        last = int(rows[-1][0])


def _side(repo: Repository, table: str, col: str, lo: int, hi: int) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for pos, value in repo.fetch(f"SELECT pos, {col} FROM {table} WHERE pos >= ? AND pos <= ?", (lo, hi)):
        out.setdefault(int(pos), set()).add(str(value))
    return out


def _mark(repo: Repository) -> int:
    return int(repo.fetch("SELECT pos FROM audit_indexed WHERE one = 1", ())[0][0])


def _side_rows_match(repo: Repository, pos: int, mark: int, c: Columns, patients: set[str], refs: set[str]) -> bool:
    """Up to the watermark `mark` (read before the rows) a record has exactly its patient and entity rows;
    after it, none yet. Rows an indexer wrote after `mark` was read are read again with the new mark."""
    if pos > mark:
        if not patients and not refs:
            return True
        if pos > _mark(repo):
            return False
        patients = _side(repo, "audit_patient", "patient", pos, pos).get(pos, set())
        refs = _side(repo, "audit_entity", "ref", pos, pos).get(pos, set())
    return patients == set(c.patients) and refs == set(c.refs)


def verify(repo: Repository, batch: int = 2000) -> Verdict:
    """Walk the chain in order; the first edited, deleted, inserted or reordered record breaks it."""
    expected, prev, checked = 1, GENESIS, 0
    buffer: list[tuple[Any, ...]] = []

    def check(rows: list[tuple[Any, ...]]) -> Verdict | None:
        nonlocal expected, prev, checked
        if not rows:
            return None
        lo, hi = int(rows[0][0]), int(rows[-1][0])
        mark = _mark(repo)  # before the rows: what it covers is complete in them
        patients = _side(repo, "audit_patient", "patient", lo, hi)
        refs = _side(repo, "audit_entity", "ref", lo, hi)
        for pos, id_, recorded, action, outcome, subtype, purpose, user, unit, prov, client, data, ph, h in rows:
            pos = int(pos)
            if pos != expected:
                return Verdict(checked, expected, f"record {expected} is missing (found {pos} next)")
            raw = data.encode() if isinstance(data, str) else bytes(data)
            if ph != prev:
                return Verdict(checked, pos, "its prev_hash is not the hash of the record before it")
            if link(pos, prev, raw) != h:
                return Verdict(checked, pos, "its content does not match its hash (edited or moved)")
            try:
                c = columns(orjson.loads(raw))
            except (orjson.JSONDecodeError, KeyError, IndexError, ValueError) as exc:
                return Verdict(checked, pos, f"its AuditEvent cannot be read: {exc}")
            stored = (id_, int(recorded), action, outcome, subtype, purpose, user, unit, prov, client)
            if stored != (c.id, c.recorded, c.action, c.outcome, c.subtype, c.purpose, c.user_id, c.unit_id,
                          c.provider_id, c.client_id):
                return Verdict(checked, pos, "its search columns differ from its AuditEvent")
            if not _side_rows_match(repo, pos, mark, c, patients.get(pos, set()), refs.get(pos, set())):
                return Verdict(checked, pos, "its patient or entity rows differ from its AuditEvent")
            prev, expected, checked = h, expected + 1, checked + 1
        return None

    for row in _rows(repo, batch):
        buffer.append(row)
        if len(buffer) >= batch:
            bad = check(buffer)
            if bad:
                return bad
            buffer = []
    bad = check(buffer)
    if bad:
        return bad
    head = repo.fetch("SELECT pos, hash FROM audit_head WHERE one = 1", ())
    if not head:
        return Verdict(checked, expected, "the chain head (audit_head) is missing")
    if int(head[0][0]) != checked or head[0][1] != prev:
        return Verdict(checked, min(int(head[0][0]), checked) + 1,
                       f"the chain ends at {checked} but its head says {head[0][0]} (records removed at the end?)")
    return Verdict(checked)
