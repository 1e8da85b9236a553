"""Schema migrations: idempotent on both backends, safe under concurrent PostgreSQL startups, same layout."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest

from samverka.fhir.instant import format_instant
from samverka.store.base import IndexRows, Repository, Write
from samverka.store.postgres import PostgresRepository
from samverka.store.schema import INDEX_TABLES, migrations
from samverka.store.sqlite import SqliteRepository

LATEST = migrations("sqlite")[-1][0]


def _open(backend: str, where: str) -> Repository:
    return SqliteRepository(where) if backend == "sqlite" else PostgresRepository(where)


@pytest.fixture
def location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where a repository lives: a SQLite file path or an empty PostgreSQL database URL."""
    if backend == "sqlite":
        return str(tmp_path / "db.sqlite")
    return str(request.getfixturevalue("pg_fresh_url"))


def _schema_version(backend: str, where: str) -> list[int]:
    if backend == "sqlite":
        with sqlite3.connect(where) as conn:
            return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    with psycopg.connect(where) as pg:
        return [r[0] for r in pg.execute("SELECT version FROM schema_migrations ORDER BY version")]


def test_migrations_are_numbered_alike_on_both_dialects() -> None:
    """Every schema version exists for SQLite and PostgreSQL, so a version number means one layout."""
    assert [v for v, _ in migrations("sqlite")] == [v for v, _ in migrations("postgresql")]


def test_reopening_applies_no_migration_twice(backend: str, location: str) -> None:
    """Opening an existing store again keeps its data and records each migration once."""
    first = _open(backend, location)
    with first.transaction() as uow:
        uow.write(Write("Patient", "p1", 1, format_instant(0), 0, "POST", b'{"resourceType":"Patient"}',
                        IndexRows(tokens=[(1, 2, 3)])))
    first.close()
    again = _open(backend, location)
    try:
        v = again.read("Patient", "p1")
        assert v is not None and v.version == 1
        assert again.check() == []
    finally:
        again.close()
    assert _schema_version(backend, location) == [v for v, _ in migrations(backend)]
    if backend == "sqlite":
        with sqlite3.connect(location) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST


def test_sqlite_applies_a_lower_numbered_migration_merged_late(tmp_path: Path) -> None:
    """A store that has later versions but lacks an earlier one (0010 merged after 0011 had been applied)
    gets it on the next open."""
    where = tmp_path / "db.sqlite"
    SqliteRepository(str(where)).close()
    with sqlite3.connect(where) as conn:
        conn.execute("DROP INDEX resources_type_updated")
        conn.execute("DELETE FROM schema_migrations WHERE version = 10")
    SqliteRepository(str(where)).close()
    with sqlite3.connect(where) as conn:
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'resources_type_updated'").fetchone()
    assert _schema_version("sqlite", str(where)) == [v for v, _ in migrations("sqlite")]


def test_sqlite_store_from_before_the_table_keeps_its_versions(tmp_path: Path) -> None:
    """A store that only knew `user_version` has every version up to it recorded, and nothing re-run."""
    where = tmp_path / "db.sqlite"
    SqliteRepository(str(where)).close()
    with sqlite3.connect(where) as conn:
        conn.execute("DROP TABLE schema_migrations")
    SqliteRepository(str(where)).close()
    assert _schema_version("sqlite", str(where)) == [v for v, _ in migrations("sqlite")]


@pytest.mark.postgres
def test_concurrent_startups_migrate_once(pg_fresh_url: str) -> None:
    """Several processes starting at once on an empty database: one migrates, all come up."""
    opened: list[PostgresRepository] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(6)

    def start() -> None:
        try:
            gate.wait()
            opened.append(PostgresRepository(pg_fresh_url, min_size=1, max_size=2))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert len(opened) == 6
        assert _schema_version("postgresql", pg_fresh_url) == [v for v, _ in migrations("postgresql")]
        assert all(r.check() == [] for r in opened)
    finally:
        for r in opened:
            r.close()


@pytest.mark.postgres
def test_postgres_tables_match_the_sqlite_layout(tmp_path: Path, pg_fresh_url: str) -> None:
    """Both dialects create the same tables, columns (in order) and primary keys."""
    SqliteRepository(tmp_path / "s.sqlite").close()
    PostgresRepository(pg_fresh_url).close()
    tables = ["resources", "history", *(t for _f, t, _c in INDEX_TABLES)]
    with sqlite3.connect(tmp_path / "s.sqlite") as lite, psycopg.connect(pg_fresh_url) as pg:
        for table in tables:
            info = lite.execute(f"PRAGMA table_info({table})").fetchall()
            lite_cols = [r[1] for r in info]
            lite_pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
            pg_cols = [r[0] for r in pg.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                " AND table_schema = current_schema() ORDER BY ordinal_position", (table,))]
            pg_pk = [r[0] for r in pg.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary"
                " ORDER BY array_position(i.indkey::int2[], a.attnum)", (table,))]
            assert (table, pg_cols, pg_pk) == (table, lite_cols, lite_pk)
        lite_idx = {r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'index'"
                                               " AND name NOT LIKE 'sqlite_%'")}
        pg_idx = {r[0] for r in pg.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            " AND indexname NOT LIKE '%pkey' AND indexname <> 'resources_type_id'")}
        assert pg_idx == lite_idx
