"""The embedded SQLite backend (stdlib sqlite3, WAL mode): one file, nothing else to run.

Writers take the database write lock up front (`BEGIN IMMEDIATE`), so a unit of work sees a stable
head for every resource it touches and versions stay contiguous across processes.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import Category, FhirError
from ..fhir.instant import format_instant
from ..fhir.text import content_text, narrative_text
from . import integrity, member
from .base import Current, Dialect, Head, HistoryEntry, HistoryQuery, IndexRows, Version, Write
from .hashing import h64
from .schema import (
    INDEX_TABLE_NAMES,
    REF_MIGRATION,
    backfill_refs,
    history_sql,
    index_rows_with_res,
    insert_index_sql,
    migrations,
)

_INSERT = insert_index_sql("sqlite")
_VERSION_COLS = "h.version, h.last_updated, h.method, h.data"


def _version(type_: str, id_: str, row: Sequence[Any]) -> Version:
    version, ts, method, data = row
    return Version(type_, id_, version, format_instant(ts), method, bytes(data) if data is not None else None)


def connect(path: Path, busy_timeout_ms: int = 30_000) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("PRAGMA cache_size = -32768")  # 32 MiB per connection (one per worker)
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA mmap_size = 67108864")  # 64 MiB: mapped pages count in every worker's RSS
    # `_content` and `_text` match against these (fhir.text; PostgreSQL has SQL functions of the same names)
    conn.create_function("samverka_content", 1, content_text, deterministic=True)
    conn.create_function("samverka_narrative", 1, narrative_text, deterministic=True)
    # sets bound by key instead of as long IN lists (store.member: the PDL care-relationship set)
    conn.create_function("samverka_member", 2, member.member, deterministic=True)
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration not yet recorded in `schema_migrations`; return the highest version.

    Versions are recorded one by one (as on PostgreSQL), so a migration merged with a lower number
    than one already applied still runs. A database from before that table existed has its versions
    up to `user_version` recorded as applied. `user_version` keeps the highest version, for tools.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
                            ).fetchone():
            conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL"
                         " DEFAULT CURRENT_TIMESTAMP)")
            before = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.executemany("INSERT INTO schema_migrations (version) VALUES (?)",
                             [(v,) for v, _sql in migrations("sqlite") if v <= before])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    for version, sql in migrations("sqlite"):
        if version in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
                conn.execute("COMMIT")  # another process applied it meanwhile
                applied.add(version)
                continue
            for statement in sql.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            if version == REF_MIGRATION:
                backfill_refs(lambda q, ps: conn.execute(q, ps).fetchall(), conn.executemany)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
            top = max(applied | {version})
            conn.execute(f"PRAGMA user_version = {int(top)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.add(version)
    return max(applied, default=0)


class SqliteUnitOfWork:
    """Index rows are buffered and inserted per table before any read and at commit: one
    `executemany` per table per transaction instead of one per table per resource."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn
        self._pending: dict[str, list[tuple[object, ...]]] = {}
        self._generation: int | None = None

    def flush(self) -> None:
        for field, rows in self._pending.items():
            self._c.executemany(_INSERT[field], rows)
        self._pending.clear()

    def current(self, type: str, id: str) -> Current | None:
        row = self._c.execute(
            "SELECT pk, version, deleted FROM resources WHERE type = ? AND id = ?", (type, id)
        ).fetchone()
        return Current(row[0], row[1], bool(row[2])) if row else None

    def read(self, type: str, id: str) -> Version | None:
        return _read(self._c, type, id)

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        self.flush()
        return self._c.execute(sql, params).fetchall()

    def lock(self, key: int) -> None:
        """Nothing to do: BEGIN IMMEDIATE already serialises every writer."""

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._c.execute(sql, params).fetchall()

    def param_generation(self, bump: bool = False) -> int:
        """No lock to take: BEGIN IMMEDIATE already orders this transaction after every other writer."""
        if bump:
            self._generation = int(self._c.execute(
                "UPDATE search_state SET generation = generation + 1 RETURNING generation").fetchone()[0])
        elif self._generation is None:
            self._generation = int(self._c.execute("SELECT generation FROM search_state").fetchone()[0])
        return self._generation

    def heads(self, after_pk: int, max_pk: int, limit: int, types: Sequence[str] | None) -> list[Head]:
        self.flush()
        where = f" AND r.type IN ({', '.join('?' for _ in types)})" if types else ""
        rows = self._c.execute(
            "SELECT r.pk, r.type, r.id, h.data FROM resources r JOIN history h ON h.seq = r.seq"
            f" WHERE r.pk > ? AND r.pk <= ?{where} ORDER BY r.pk LIMIT ?",
            (after_pk, max_pk, *(types or ()), limit),
        ).fetchall()
        return [Head(pk, t, i, bytes(d) if d is not None else None) for pk, t, i, d in rows]

    def replace_index(self, params: Sequence[int], rows: Sequence[tuple[int, IndexRows]]) -> None:
        self.flush()
        c = self._c
        for chunk in range(0, len(rows), 500):
            pks = [pk for pk, _ in rows[chunk:chunk + 500]]
            marks = ", ".join("?" for _ in pks)
            pmarks = ", ".join("?" for _ in params)
            for table in INDEX_TABLE_NAMES:
                c.execute(f"DELETE FROM {table} WHERE param IN ({pmarks}) AND res IN ({marks})", (*params, *pks))
        for pk, index in rows:
            for field, with_res in index_rows_with_res(index, pk):
                self._pending.setdefault(field, []).extend(with_res)
        self.flush()

    def write(self, w: Write) -> None:
        c = self._c
        pk = w.previous_pk
        if pk is None:
            try:
                cur = c.execute(
                    "INSERT INTO resources (type, id, version, seq, deleted, last_updated, compartment, ref)"
                    " VALUES (?, ?, ?, 0, ?, ?, ?, ?)",
                    (w.type, w.id, w.version, w.data is None, w.last_updated_us, w.compartment,
                     h64(f"{w.type}/{w.id}")),
                )
            except sqlite3.IntegrityError as exc:  # a create for an id that exists: same as PostgreSQL
                raise FhirError.of(Category.CONFLICT, f"{w.type}/{w.id} exists already") from exc
            pk = cur.lastrowid
            assert pk is not None
        else:
            self.flush()  # earlier buffered rows of this resource must not survive the delete below
            for table in INDEX_TABLE_NAMES:
                c.execute(f"DELETE FROM {table} WHERE res = ?", (pk,))
        try:
            seq = c.execute(
                "INSERT INTO history (pk, type, version, last_updated, method, data) VALUES (?, ?, ?, ?, ?, ?)",
                (pk, w.type, w.version, w.last_updated_us, w.method, w.data),
            ).lastrowid
        except sqlite3.IntegrityError as exc:  # a stale writer reusing a version number
            raise FhirError.of(Category.CONFLICT, f"{w.type}/{w.id} version {w.version} exists already") from exc
        c.execute(
            "UPDATE resources SET version = ?, seq = ?, deleted = ?, last_updated = ?, compartment = ?"
            " WHERE pk = ?",
            (w.version, seq, w.data is None, w.last_updated_us, w.compartment, pk),
        )
        if w.index is not None:
            for field, rows in index_rows_with_res(w.index, pk):
                self._pending.setdefault(field, []).extend(rows)


def _read(c: sqlite3.Connection, type_: str, id_: str) -> Version | None:
    row = c.execute(
        f"SELECT {_VERSION_COLS} FROM resources r JOIN history h ON h.seq = r.seq"
        " WHERE r.type = ? AND r.id = ?",
        (type_, id_),
    ).fetchone()
    return _version(type_, id_, row) if row else None


class SqliteRepository:
    """A Repository on one SQLite file. Safe to share between threads (calls are serialised)."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(self.path)
        self._lock = threading.RLock()
        # Writers in other processes queue on this file lock instead of SQLite's busy handler, which
        # sleeps in steps of up to 100 ms; the kernel wakes the next writer the moment one commits.
        # The lock dies with its process, so a kill -9 can never leave it held.
        self._writer_fd = os.open(f"{self.path}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
        migrate(self._conn)
        self._siblings: dict[str, SqliteRepository] = {}

    def sibling(self, name: str) -> SqliteRepository:
        """The repository of the database file `<stem>-<name>.sqlite` beside this one (same schema), opened
        once and closed with this one. A commit to one SQLite file makes every other connection to that
        file drop its page cache; appends that need no atomicity with this file's writes go there instead."""
        repo = self._siblings.get(name)
        if repo is not None:
            return repo
        # opened (and migrated, which may wait for another process) outside this store's lock
        opened = SqliteRepository(self.path.with_name(f"{self.path.stem}-{name}.sqlite"))
        with self._lock:
            repo = self._siblings.setdefault(name, opened)
        if repo is not opened:
            opened.close()
        return repo

    @contextmanager
    def transaction(self) -> Iterator[SqliteUnitOfWork]:
        with self._lock:
            fcntl.flock(self._writer_fd, fcntl.LOCK_EX)
            try:
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if "locked" in str(exc) or "busy" in str(exc):
                        raise FhirError.of(Category.BUSY, "the database is busy; try again") from exc
                    raise
                uow = SqliteUnitOfWork(self._conn)
                try:
                    yield uow
                    uow.flush()
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:  # also when COMMIT itself failed (disk full, I/O error)
                        self._conn.execute("ROLLBACK")
                    raise
            finally:
                fcntl.flock(self._writer_fd, fcntl.LOCK_UN)

    def read(self, type: str, id: str) -> Version | None:
        with self._lock:
            return _read(self._conn, type, id)

    def vread(self, type: str, id: str, version: int) -> Version | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_VERSION_COLS} FROM resources r JOIN history h ON h.pk = r.pk"
                " WHERE r.type = ? AND r.id = ? AND h.version = ?",
                (type, id, version),
            ).fetchone()
        return _version(type, id, row) if row else None

    def history(self, q: HistoryQuery) -> list[HistoryEntry]:
        sql, params, _count_sql, _count_params = history_sql(q, _VERSION_COLS)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [HistoryEntry(r[0], _version(r[1], r[2], r[3:])) for r in rows]

    def history_count(self, q: HistoryQuery) -> int:
        _sql, _params, sql, params = history_sql(q, _VERSION_COLS)
        with self._lock:
            row = self._conn.execute(sql, params).fetchone()
        return int(row[0])

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def iter_current(self, batch: int = 1000) -> Iterator[Version]:
        last = 0
        while True:
            rows = self.fetch(
                f"SELECT r.pk, r.type, r.id, {_VERSION_COLS} FROM resources r JOIN history h ON h.seq = r.seq"
                " WHERE r.pk > ? AND r.deleted = 0 ORDER BY r.pk LIMIT ?",
                (last, batch),
            )
            if not rows:
                return
            for r in rows:
                yield _version(r[1], r[2], r[3:])
            last = rows[-1][0]

    def check(self) -> list[str]:
        return integrity.check(self)

    def close(self) -> None:
        with self._lock:
            for repo in self._siblings.values():
                repo.close()
            self._siblings.clear()
            self._conn.close()
            os.close(self._writer_fd)
