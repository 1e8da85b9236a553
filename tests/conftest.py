"""Shared fixtures: a PostgreSQL server per session (SAMVERKA_TEST_PG or a throwaway cluster) and `repo`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from samverka.store.base import Repository
from support.postgres_cluster import LocalCluster, SessionDatabase, find_bindir

PG_ENV = "SAMVERKA_TEST_PG"


def _unavailable(reason: str) -> None:
    """CI must exercise both backends: there a missing server fails; elsewhere it skips."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason} (set {PG_ENV} to a postgresql:// URL)")


@pytest.fixture(scope="session")
def _pg_session() -> Iterator[SessionDatabase | str]:
    """A fresh database for this session, or the reason there is none (reported by `pg_session`)."""
    cluster: LocalCluster | None = None
    server_url = os.environ.get(PG_ENV)
    if not server_url:
        bindir = find_bindir()
        if bindir is None:
            yield "no PostgreSQL server binaries (initdb, pg_ctl) found"
            return
        cluster = LocalCluster(bindir)
        try:
            cluster.start()
        except Exception as exc:
            cluster.stop()
            yield f"could not start a throwaway cluster: {exc}"
            return
        server_url = cluster.url
    try:
        db = SessionDatabase(server_url)
    except Exception as exc:
        if cluster is not None:
            cluster.stop()
        yield f"could not create a test database on {server_url}: {exc}"
        return
    try:
        yield db
    finally:
        try:
            db.drop()
        finally:
            if cluster is not None:
                cluster.stop()


@pytest.fixture(scope="session")
def pg_session(_pg_session: SessionDatabase | str) -> SessionDatabase:
    if isinstance(_pg_session, str):
        _unavailable(_pg_session)
        raise AssertionError("unreachable")
    return _pg_session


@pytest.fixture(scope="session")
def pg_url(pg_session: SessionDatabase) -> str:
    """The URL of this session's own (fresh) database."""
    return pg_session.url


@pytest.fixture
def pg_fresh_url(pg_session: SessionDatabase) -> str:
    """A URL that looks like a brand-new, empty database (its own schema on the session database)."""
    return pg_session.fresh()


def open_backend(backend: str, tmp_path: Path, pg_session: SessionDatabase | None) -> Repository:
    if backend == "sqlite":
        from samverka.store.sqlite import SqliteRepository

        return SqliteRepository(tmp_path / "samverka.sqlite")
    from samverka.store.postgres import PostgresRepository

    assert pg_session is not None
    return PostgresRepository(pg_session.fresh())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test."""
    return str(request.param)


@pytest.fixture
def repo(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Repository]:
    """A fresh, empty repository on each backend."""
    session = request.getfixturevalue("pg_session") if backend == "postgresql" else None
    r = open_backend(backend, tmp_path, session)
    try:
        yield r
    finally:
        r.close()
