"""Where the audit chains live: write records in the store, read records beside it on SQLite.

A write's AuditEvent is appended inside the write's own transaction (`recorder.Auditing`), so it must
live in the store's database. A read's record is appended by `groupcommit.GroupCommit` in a transaction of
its own anyway, and on SQLite every such commit to the store's file made every other connection to that
file drop its page cache: under a steady read load each search paid for re-reading its pages (measured on
the 1M-resource search store: 20-25% of a search's HTTP latency). So on SQLite the read and failure
records form a second chain in `samverka-audit-reads.sqlite` next to the store (`SqliteRepository.sibling`),
with the same tables and the same hash chaining; PostgreSQL has no such effect and keeps one chain. The
store anchors that chain (`audit_anchor`, migration 0016: the read committer moves it to the chain's head
about every `side.TICK`), so deleting, replacing or truncating the file breaks `verify`.

Every reader of the log goes through `chains`: the AuditEvent search merges the chains newest first (its
`_cursor` then holds one position per chain), reports and exports take them all in time order, and
`samverka audit verify` checks each chain on its own. A store from before the split keeps its earlier
read records in the first chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..fhir.instant import now_us
from ..store import Repository
from . import chain

READS = "audit-reads"  # the SQLite file of the read chain: <data dir>/samverka-audit-reads.sqlite
ANCHOR_SQL = ("INSERT INTO audit_anchor (chain, pos, hash, at) VALUES (?, ?, ?, ?) ON CONFLICT (chain) DO UPDATE"
              " SET pos = excluded.pos, hash = excluded.hash, at = excluded.at WHERE excluded.pos > audit_anchor.pos")


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
    """`chain.verify` of every chain, and a chain kept in another file against the store's anchor of it."""
    out = []
    for c in chains(repo):
        v = chain.verify(c.repo)
        if v.ok and c.repo is not repo:
            v = _anchored(repo, c, v)
        out.append((c, v))
    return out


def _anchored(store: Repository, c: Chain, v: chain.Verdict) -> chain.Verdict:
    rows = store.fetch("SELECT pos, hash FROM audit_anchor WHERE chain = ?", (c.name,))
    if not rows:
        return v
    pos, hash_ = int(rows[0][0]), str(rows[0][1])
    held = c.repo.fetch("SELECT hash FROM audit_log WHERE pos = ?", (pos,))
    if held and held[0][0] == hash_:
        return v
    what = "does not hold" if not held else "holds with another hash"
    return chain.Verdict(v.checked, pos, f"the store anchors this chain at record {pos}, which the file {what}"
                                         " (deleted, replaced by another copy or truncated)")


def anchor(store: Repository, reads: Repository, after: int = 0) -> int:
    """Move the store's anchor of the read chain to that chain's head when it is past `after` (the position
    last anchored); the anchored position."""
    pos, hash_ = reads.fetch("SELECT pos, hash FROM audit_head WHERE one = 1", ())[0]
    if int(pos) > after:
        with store.transaction() as uow:
            uow.execute(ANCHOR_SQL, ("reads", int(pos), str(hash_), now_us()))
    return int(pos)
