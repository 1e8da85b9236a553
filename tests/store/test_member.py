"""store.member: a set bound as one parameter (SQLite: a key to a set of this process; PostgreSQL: an array),
on both backends, against the plain IN list it replaces (the PDL care-relationship set, issue 4)."""

from __future__ import annotations

import gc
import sqlite3

import pytest
from test_contract import put

from samverka.store import Repository, member


class Owner:
    """Stands for what a condition is made for (an auth.pdl.Policy)."""


def _ids(repo: Repository, cond: str, params: tuple[object, ...] | list[object]) -> list[str]:
    return [r[0] for r in repo.fetch(f"SELECT r.id FROM resources r WHERE {cond} ORDER BY r.id", params)]


@pytest.fixture
def stored(repo: Repository) -> Repository:
    for i in range(30):
        put(repo, "Patient", f"p{i:02d}")
    return repo


def test_bound_set_selects_the_same_rows_as_the_plain_in_list(stored: Repository) -> None:
    wanted = {f"p{i:02d}" for i in range(0, 30, 3)} | {"not-stored"}
    owner = Owner()
    fast = member.condition(stored.dialect, "r.id", wanted, owner)
    plain = member.condition(stored.dialect, "r.id", wanted, owner, portable=True)
    assert "IN (" in plain[0] and len(plain[1]) == len(wanted)
    assert len(fast[1]) == 1  # one parameter, whatever the set's size
    expected = sorted(wanted - {"not-stored"})
    assert _ids(stored, fast[0], fast[1]) == expected == _ids(stored, plain[0], plain[1])
    assert _ids(stored, f"NOT {fast[0]}", fast[1]) == sorted({f"p{i:02d}" for i in range(30)} - wanted)


def test_empty_set_matches_nothing(stored: Repository) -> None:
    cond, params = member.condition(stored.dialect, "r.id", set(), Owner())
    assert _ids(stored, cond, params) == []


def test_null_is_neither_in_nor_out_of_the_set(stored: Repository) -> None:
    cond, params = member.condition(stored.dialect, "r.compartment", {"p01"}, Owner())
    # Patients have no compartment value here: NULL IN (...) is NULL, and so is its negation
    assert _ids(stored, cond, params) == []
    assert _ids(stored, f"NOT {cond}", params) == []
    assert _ids(stored, f"({cond}) IS NULL", params) == [f"p{i:02d}" for i in range(30)]


def test_a_sqlite_set_goes_with_its_owner_and_its_key_then_fails_loudly(repo: Repository) -> None:
    if repo.dialect != "sqlite":
        pytest.skip("PostgreSQL binds the members themselves")
    put(repo, "Patient", "p1")
    before = member.live()
    owner = Owner()
    cond, params = member.condition("sqlite", "r.id", {"p1"}, owner)
    assert member.live() == before + 1
    assert _ids(repo, cond, params) == ["p1"]
    del owner
    gc.collect()
    assert member.live() == before
    with pytest.raises(sqlite3.OperationalError, match="user-defined function raised exception"):
        _ids(repo, cond, params)  # never an answer from a set that is gone
