"""The PostgreSQL backend (psycopg 3, pooled connections): the SqliteRepository contract for many processes.

A unit of work is one transaction on one pooled connection. Writers lock a head with
`SELECT ... FOR UPDATE`, so versions stay contiguous under concurrent writers; two creates of the same
new (type, id) meet at the unique constraint and the loser gets a CONFLICT.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.adapt import Loader
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import Category, FhirError
from ..fhir.instant import format_instant
from . import integrity
from .base import Current, Dialect, Head, HistoryEntry, HistoryQuery, IndexRows, Version, Write
from .hashing import h64
from .schema import (
    INDEX_TABLE_NAMES,
    INDEX_TABLES,
    REF_MIGRATION,
    backfill_refs,
    history_sql,
    index_rows_with_res,
    insert_index_sql,
    migrations,
)

MIGRATION_LOCK_KEY = 0x73616D76_6D696772  # "samvmigr": serialises concurrent startups per database
PARAMS_LOCK_KEY = 0x73616D76_70617261  # "samvpara": writers share it, a SearchParameter change takes it alone

_VERSION_COLS = "h.version, h.last_updated, h.method, h.data"
_DELETE_INDEX_ROWS = "WITH " + ", ".join(
    f"d{i} AS (DELETE FROM {table} WHERE res = %(pk)s)" for i, table in enumerate(INDEX_TABLE_NAMES)
) + " SELECT 1"
# A new head and its first history row in one statement: the head takes the history seq up front.
_CREATE = (
    "WITH r AS (INSERT INTO resources (type, id, version, seq, deleted, last_updated, compartment, ref)"
    " VALUES (%(type)s, %(id)s, %(version)s, nextval(pg_get_serial_sequence('history', 'seq')),"
    " %(deleted)s, %(lu)s, %(compartment)s, %(ref)s) RETURNING pk, seq)"
    " INSERT INTO history (seq, pk, type, version, last_updated, method, data)"
    " SELECT seq, pk, %(type)s, %(version)s, %(lu)s, %(method)s, %(data)s::jsonb FROM r RETURNING pk"
)
_UPDATE = (
    "WITH r AS (UPDATE resources SET version = %(version)s,"
    " seq = nextval(pg_get_serial_sequence('history', 'seq')), deleted = %(deleted)s,"
    " last_updated = %(lu)s, compartment = %(compartment)s WHERE pk = %(pk)s RETURNING pk, seq)"
    " INSERT INTO history (seq, pk, type, version, last_updated, method, data)"
    " SELECT seq, pk, %(type)s, %(version)s, %(lu)s, %(method)s, %(data)s::jsonb FROM r RETURNING pk"
)


@functools.lru_cache(maxsize=4096)
def to_pyformat(sql: str) -> str:
    """qmark (`?`) placeholders as psycopg's `%s`; literal `%` doubled. No `?` may appear in literals."""
    return sql.replace("%", "%%").replace("?", "%s")


_INSERT = {field: to_pyformat(sql) for field, sql in insert_index_sql("postgresql").items()}
_COPY = {field: f"COPY {table} ({', '.join((*cols, 'res'))}) FROM STDIN" for field, table, cols in INDEX_TABLES}
# The primary key of each index row: every column, except references (param, ref, res).
_KEY: dict[str, Callable[[tuple[object, ...]], tuple[object, ...]]] = {
    field: (lambda r: (r[0], r[1], r[-1])) if field == "references" else (lambda r: r)
    for field, _t, _c in INDEX_TABLES
}
COPY_MIN_ROWS = 64  # below this many buffered index rows, pipelined INSERTs beat COPY (fewer round trips)


class _RawJsonbLoader(Loader):
    """jsonb arrives as the UTF-8 bytes of its text form: the store never parses resources."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("jsonb", _RawJsonbLoader)
    # psycopg prepares a statement after a few runs, and PostgreSQL then may switch to a generic plan
    # that ignores the values: a search that is selective for one code and broad for another went from
    # 4 ms to 1.2 s that way. Search SQL is built per query, so plan each execution for its values.
    conn.execute("SET plan_cache_mode = force_custom_plan")


def _version(type_: str, id_: str, row: Sequence[Any]) -> Version:
    version, ts, method, data = row
    return Version(type_, id_, version, format_instant(ts), method, data)


def _read(conn: psycopg.Connection[Any], type_: str, id_: str) -> Version | None:
    row = conn.execute(
        f"SELECT {_VERSION_COLS} FROM resources r JOIN history h ON h.seq = r.seq"
        " WHERE r.type = %s AND r.id = %s",
        (type_, id_),
    ).fetchone()
    return _version(type_, id_, row) if row else None


def _backfill(conn: psycopg.Connection[Any]) -> None:
    cur = conn.cursor()
    backfill_refs(lambda sql, ps: cur.execute(sql.replace("?", "%s"), ps).fetchall(),
                  lambda sql, rows: cur.executemany(sql.replace("?", "%s"), rows))


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Apply every migration not yet in `schema_migrations`, under a session advisory lock."""
    conn.execute("SELECT pg_advisory_lock(%s::bigint)", (MIGRATION_LOCK_KEY,))
    try:
        with conn.transaction():
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}
        for version, script in migrations("postgresql"):
            if version in applied:
                continue
            with conn.transaction():
                conn.execute(script.encode())  # several statements, no parameters
                if version == REF_MIGRATION:
                    _backfill(conn)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied.add(version)
        return max(applied, default=0)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s::bigint)", (MIGRATION_LOCK_KEY,))


class PostgresUnitOfWork:
    """The UnitOfWork of one open transaction on one pooled connection.

    Index rows are buffered and written in bulk before any statement that could read them (`fetch`)
    and before commit: a handful with pipelined INSERTs, a bundle's worth with one COPY per table.
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._c = conn
        self._pending: dict[str, list[tuple[object, ...]]] = {}
        self._pending_pks: set[int] = set()
        self._generation: int | None = None

    def current(self, type: str, id: str) -> Current | None:
        row = self._c.execute(
            "SELECT pk, version, deleted FROM resources WHERE type = %s AND id = %s FOR UPDATE", (type, id)
        ).fetchone()
        return Current(row[0], row[1], bool(row[2])) if row else None

    def read(self, type: str, id: str) -> Version | None:
        return _read(self._c, type, id)

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        self.flush()
        return self._c.execute(to_pyformat(sql), params).fetchall()

    def lock(self, key: int) -> None:
        self._c.execute("SELECT pg_advisory_xact_lock(%s::bigint)", (key,))

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        cur = self._c.execute(to_pyformat(sql), params)
        return cur.fetchall() if cur.description else []

    def param_generation(self, bump: bool = False) -> int:
        """The lock comes first, in its own statement: the read then sees any change that held it."""
        if bump:
            with self._c.pipeline():
                self._c.execute("SELECT pg_advisory_xact_lock(%s::bigint)", (PARAMS_LOCK_KEY,))
                cur = self._c.execute("UPDATE search_state SET generation = generation + 1 RETURNING generation")
            self._generation = int(cur.fetchone()[0])  # type: ignore[index]
        elif self._generation is None:
            with self._c.pipeline():
                self._c.execute("SELECT pg_advisory_xact_lock_shared(%s::bigint)", (PARAMS_LOCK_KEY,))
                cur = self._c.execute("SELECT generation FROM search_state")
            self._generation = int(cur.fetchone()[0])  # type: ignore[index]
        return self._generation

    def heads(self, after_pk: int, max_pk: int, limit: int, types: Sequence[str] | None) -> list[Head]:
        """Lock first, then read in a new statement: it sees what a writer we waited for committed."""
        self.flush()
        where = " AND type = ANY(%s)" if types else ""
        args: list[Any] = [after_pk, max_pk, *([list(types)] if types else []), limit]
        pks = [r[0] for r in self._c.execute(
            f"SELECT pk FROM resources WHERE pk > %s AND pk <= %s{where} ORDER BY pk LIMIT %s FOR UPDATE", args
        ).fetchall()]
        if not pks:
            return []
        rows = self._c.execute(
            "SELECT r.pk, r.type, r.id, h.data FROM resources r JOIN history h ON h.seq = r.seq"
            " WHERE r.pk = ANY(%s) ORDER BY r.pk", (pks,),
        ).fetchall()
        return [Head(pk, t, i, d) for pk, t, i, d in rows]

    def replace_index(self, params: Sequence[int], rows: Sequence[tuple[int, IndexRows]]) -> None:
        self.flush()
        pks = [pk for pk, _ in rows]
        with self._c.pipeline():
            for table in INDEX_TABLE_NAMES:
                self._c.execute(f"DELETE FROM {table} WHERE param = ANY(%s) AND res = ANY(%s)", (list(params), pks))
        for pk, index in rows:
            for field, with_res in index_rows_with_res(index, pk):
                self._pending.setdefault(field, []).extend(with_res)
        self.flush()

    def write(self, w: Write) -> None:
        args = {
            "type": w.type, "id": w.id, "version": w.version, "deleted": int(w.data is None),
            "lu": w.last_updated_us, "compartment": w.compartment, "method": w.method,
            "ref": h64(f"{w.type}/{w.id}"),
            "data": w.data.decode("utf-8") if w.data is not None else None, "pk": w.previous_pk,
        }
        c = self._c
        try:
            if w.previous_pk is None:
                row = c.execute(_CREATE, args).fetchone()
            else:
                if w.previous_pk in self._pending_pks:
                    self.flush()  # its rows from earlier in this transaction must go before the DELETE
                with c.pipeline():
                    c.execute(_DELETE_INDEX_ROWS, args)
                    row = c.execute(_UPDATE, args).fetchone()
        except pgerrors.UniqueViolation as exc:
            raise FhirError.of(
                Category.CONFLICT, f"{w.type}/{w.id} version {w.version} was written concurrently; try again"
            ) from exc
        if row is None:
            raise FhirError.of(Category.CONFLICT, f"{w.type}/{w.id} disappeared during the write")
        if w.index is not None:
            for field, rows in index_rows_with_res(w.index, row[0]):
                self._pending.setdefault(field, []).extend(rows)
            self._pending_pks.add(row[0])

    def flush(self) -> None:
        """Write the buffered index rows."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        self._pending_pks.clear()
        c = self._c
        if sum(len(rows) for rows in pending.values()) < COPY_MIN_ROWS:
            with c.pipeline(), c.cursor() as cur:
                for field, rows in pending.items():
                    cur.executemany(_INSERT[field], rows)
            return
        with c.cursor() as cur:
            for field, rows in pending.items():
                key = _KEY[field]
                unique = {key(row): row for row in reversed(rows)}  # first wins, like ON CONFLICT DO NOTHING
                with cur.copy(_COPY[field]) as copy:
                    for row in unique.values():
                        copy.write_row(row)


class PostgresRepository:
    """A Repository on a PostgreSQL database. Thread-safe; each call borrows a pooled connection."""

    dialect: Dialect = "postgresql"

    def __init__(self, url: str, min_size: int = 1, max_size: int = 8, timeout: float = 30.0,
                 session: dict[str, str] | None = None) -> None:
        self.url = url
        settings = dict(session or {})  # SET for every connection (the URL's own `options` stay in force)

        def configure(conn: psycopg.Connection[Any]) -> None:
            _configure(conn)
            for name, value in settings.items():
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))

        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url, min_size=min_size, max_size=max_size, timeout=timeout, open=False,
            kwargs={"autocommit": True}, configure=configure, name="samverka",
        )
        self._pool.open(wait=True, timeout=timeout)
        try:
            with self._pool.connection() as conn:
                migrate(conn)
        except BaseException:
            self._pool.close()
            raise

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise FhirError.of(Category.BUSY, "no database connection available; try again") from exc

    @contextmanager
    def transaction(self) -> Iterator[PostgresUnitOfWork]:
        with self._connection() as conn:
            try:
                with conn.transaction():
                    uow = PostgresUnitOfWork(conn)
                    yield uow
                    uow.flush()
            except (pgerrors.DeadlockDetected, pgerrors.LockNotAvailable) as exc:
                raise FhirError.of(Category.BUSY, "the database is busy; try again") from exc

    def read(self, type: str, id: str) -> Version | None:
        with self._connection() as conn:
            return _read(conn, type, id)

    def vread(self, type: str, id: str, version: int) -> Version | None:
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {_VERSION_COLS} FROM resources r JOIN history h ON h.pk = r.pk"
                " WHERE r.type = %s AND r.id = %s AND h.version = %s",
                (type, id, version),
            ).fetchone()
        return _version(type, id, row) if row else None

    def history(self, q: HistoryQuery) -> list[HistoryEntry]:
        sql, params, _count_sql, _count_params = history_sql(q, _VERSION_COLS)
        with self._connection() as conn:
            rows = conn.execute(to_pyformat(sql), params).fetchall()
        return [HistoryEntry(r[0], _version(r[1], r[2], r[3:])) for r in rows]

    def history_count(self, q: HistoryQuery) -> int:
        _sql, _params, sql, params = history_sql(q, _VERSION_COLS)
        with self._connection() as conn:
            row = conn.execute(to_pyformat(sql), params).fetchone()
        return int(row[0]) if row else 0

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(to_pyformat(sql), params).fetchall()

    def iter_current(self, batch: int = 1000) -> Iterator[Version]:
        last = 0
        while True:
            with self._connection() as conn:
                rows = conn.execute(
                    f"SELECT r.pk, r.type, r.id, {_VERSION_COLS} FROM resources r"
                    " JOIN history h ON h.seq = r.seq WHERE r.pk > %s AND r.deleted = 0"
                    " ORDER BY r.pk LIMIT %s",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            for r in rows:
                yield _version(r[1], r[2], r[3:])
            last = rows[-1][0]

    def check(self) -> list[str]:
        return integrity.check(self)

    def close(self) -> None:
        self._pool.close()
