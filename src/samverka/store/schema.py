"""Statements and table maps shared by every SQL backend (qmark placeholders; PostgreSQL rewrites them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from .base import Dialect, HistoryQuery, IndexRows
from .hashing import h64

# IndexRows field -> (table, columns in the field's tuple order); `res` is appended to every row.
INDEX_TABLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("tokens", "idx_token", ("param", "system", "code")),
    ("token_texts", "idx_token_text", ("param", "text")),
    ("strings", "idx_string", ("param", "norm", "exact")),
    ("dates", "idx_date", ("param", "lo", "hi")),
    ("numbers", "idx_number", ("param", "lo", "hi")),
    ("quantities", "idx_quantity", ("param", "system", "code", "lo", "hi")),
    ("references", "idx_reference", ("param", "ref", "target_type", "target")),
    ("uris", "idx_uri", ("param", "uri")),
    ("composites", "idx_composite", ("param", "system1", "code1", "h2", "lo2", "hi2")),
)


def insert_index_sql(dialect: Dialect) -> dict[str, str]:
    """One INSERT per index table, ignoring exact duplicates (a value indexed twice)."""
    out = {}
    for field, table, cols in INDEX_TABLES:
        names = ", ".join((*cols, "res"))
        marks = ", ".join("?" for _ in range(len(cols) + 1))
        if dialect == "sqlite":
            out[field] = f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})"
        else:
            out[field] = f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    return out


def index_rows_with_res(index: IndexRows, res: int) -> list[tuple[str, list[tuple[object, ...]]]]:
    """Each non-empty IndexRows field with `res` appended to its rows."""
    out: list[tuple[str, list[tuple[object, ...]]]] = []
    for field, _table, _cols in INDEX_TABLES:
        rows = getattr(index, field)
        if rows:
            out.append((field, [(*row, res) for row in rows]))
    return out


def migrations(dialect: Dialect) -> list[tuple[int, str]]:
    """The versioned migration scripts of a dialect, in order: [(version, sql)]."""
    folder = resources.files("samverka.store").joinpath("migrations", dialect)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


def history_sql(q: HistoryQuery, version_cols: str) -> tuple[str, list[Any], str, list[Any]]:
    """(page SQL, its params, count SQL, its params) for a history query, with qmark placeholders."""
    where: list[str] = []
    params: list[Any] = []
    if q.type is not None:
        where.append("h.type = ?")
        params.append(q.type)
    if q.id is not None:
        where.append("r.id = ?")
        params.append(q.id)
    if q.since_us is not None:
        where.append("h.last_updated >= ?")
        params.append(q.since_us)
    if q.at_us is not None:
        # the version current at that instant: written before it, and not yet replaced
        where.append("h.last_updated <= ? AND NOT EXISTS (SELECT 1 FROM history n WHERE n.pk = h.pk"
                     " AND n.version > h.version AND n.last_updated <= ?)")
        params += [q.at_us, q.at_us]
    count_where = (" WHERE " + " AND ".join(where)) if where else ""
    count_sql = f"SELECT count(*) FROM history h JOIN resources r ON r.pk = h.pk{count_where}"
    page_params = list(params)
    if q.before_seq is not None:
        where.append("h.seq < ?")
        page_params.append(q.before_seq)
    page_where = (" WHERE " + " AND ".join(where)) if where else ""
    page_sql = (f"SELECT h.seq, r.type, r.id, {version_cols} FROM history h JOIN resources r ON r.pk = h.pk"
                f"{page_where} ORDER BY h.seq DESC LIMIT ?")
    return page_sql, [*page_params, q.count], count_sql, params


REF_MIGRATION = 2  # the migration that adds resources.ref, which only the application can compute


def backfill_refs(fetch: Callable[[str, Sequence[Any]], list[Any]],
                  executemany: Callable[[str, list[tuple[Any, ...]]], Any], batch: int = 10_000) -> int:
    """Fill `resources.ref` (the hash of "Type/id") where a migration added it; returns rows filled."""
    done = 0
    while True:
        rows = fetch("SELECT pk, type, id FROM resources WHERE ref IS NULL ORDER BY pk LIMIT ?", (batch,))
        if not rows:
            return done
        executemany("UPDATE resources SET ref = ? WHERE pk = ?", [(h64(f"{t}/{i}"), pk) for pk, t, i in rows])
        done += len(rows)


INDEX_TABLE_NAMES = tuple(table for _f, table, _c in INDEX_TABLES)
