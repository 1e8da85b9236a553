"""Where the audit chains live: write records in the store, read records beside it on SQLite.

A write's AuditEvent is appended inside the write's own transaction (`recorder.Auditing`), so it must
live in the store's database. A read's record is appended by `recorder.GroupCommit` in a transaction of
its own anyway, and on SQLite every such commit to the store's file made every other connection to that
file drop its page cache: under a steady read load each search paid for re-reading its pages (measured on
the 1M-resource search store: 20-25% of a search's HTTP latency). So on SQLite the read and failure
records form a second chain in `audit-reads.sqlite` next to the store (`SqliteRepository.sibling`), with
the same tables and the same hash chaining; PostgreSQL has no such effect and keeps one chain.

Every reader of the log goes through `chains`: the AuditEvent search merges the chains newest first (its
`_cursor` then holds one position per chain), reports and exports take them all in time order, and
`samverka audit verify` checks each chain on its own. A store from before the split keeps its earlier
read records in the first chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..store import Repository
from . import chain

READS = "audit-reads"  # the SQLite file of the read chain: <data dir>/audit-reads.sqlite


@dataclass(frozen=True)
class Chain:
    name: str  # "log" when the store has one chain, else "writes" or "reads"
    repo: Repository


def reads_repo(repo: Repository) -> Repository:
    """Where read and failure records are appended: the sibling file on SQLite, else the store itself."""
    sibling = getattr(repo, "sibling", None)
    if getattr(repo, "dialect", None) == "sqlite" and callable(sibling):
        found: Any = sibling(READS)
        return found
    return repo


def chains(repo: Repository) -> list[Chain]:
    """Every chain of the store's audit log, the store's own first."""
    reads = reads_repo(repo)
    if reads is repo:
        return [Chain("log", repo)]
    return [Chain("writes", repo), Chain("reads", reads)]


def verify(repo: Repository) -> list[tuple[Chain, chain.Verdict]]:
    """`chain.verify` of every chain."""
    return [(c, chain.verify(c.repo)) for c in chains(repo)]
