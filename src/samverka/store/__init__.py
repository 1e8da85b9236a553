"""Storage: the Repository protocol and its backends. `open_repository` picks one from configuration."""

from __future__ import annotations

from pathlib import Path

from .base import Current, HistoryEntry, HistoryQuery, IndexRows, Repository, UnitOfWork, Version, Write

__all__ = [
    "Current", "HistoryEntry", "HistoryQuery", "IndexRows", "Repository", "UnitOfWork", "Version", "Write",
    "open_repository",
]


def open_repository(data_dir: Path | str | None = None, database: str | None = None) -> Repository:
    """SQLite in `data_dir` (the default), or PostgreSQL when `database` is a postgresql:// URL."""
    if database:
        if not database.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"unsupported database URL scheme: {database.split(':', 1)[0]}")
        from .postgres import PostgresRepository

        return PostgresRepository(database)
    from .sqlite import SqliteRepository

    return SqliteRepository(Path(data_dir or "samverka-data") / "samverka.sqlite")
