"""Membership in a large set of strings as one SQL condition with one parameter.

Issue 4 (the cost of authorization): SQLite turns `x IN (?, ?, ...)` with a bound list into a temporary
index on every execution of the statement. With the ~800 patients of a user's care relationships bound
into every search, page and include query, that was the largest part of what Patientdatalagen added to
a patient's search. Here a set is kept in this process under a key and the condition binds only the
key: SQLite tests it with the function `samverka_member(key, value)` that every connection has
(`store.sqlite.connect`), PostgreSQL gets the members as one array parameter (`= ANY`).

A SQLite key names a set of this process only, for as long as its owner (the object the condition was
made for, such as a `auth.pdl.Policy`) lives: conditions that are stored or handed to another process
(a Bulk Data job's filters) must use `portable=True`, a plain `IN` list.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Collection, Sequence
from typing import Any

_sets: dict[int, frozenset[Any]] = {}
_keys = itertools.count(1)


def member(key: int, value: Any) -> int | None:
    """`samverka_member(key, value)`: 1 when `value` is in set `key`, 0 when not, NULL for a NULL value
    (as `NULL IN (...)` is). An unknown key is an error, never an answer."""
    if value is None:
        return None
    try:
        return 1 if value in _sets[key] else 0
    except KeyError:
        raise LookupError(f"samverka_member: no set {key} in this process") from None


def condition(dialect: str, column: str, values: Collection[Any], owner: object,
              portable: bool = False) -> tuple[str, Sequence[Any]]:
    """SQL true when `column` is one of `values`, for as long as `owner` lives (see the module docstring)."""
    if not values:
        return "1 = 0", ()
    if portable or dialect == "postgresql":
        ordered = sorted(values)  # the same text and parameters for the same set
        if portable:
            return f"{column} IN ({', '.join('?' for _ in ordered)})", tuple(ordered)
        return f"{column} = ANY(?)", (ordered,)
    key = next(_keys)
    _sets[key] = frozenset(values)
    weakref.finalize(owner, _sets.pop, key, None)
    return f"samverka_member(?, {column})", (key,)


def live() -> int:
    """How many sets this process holds (for tests: they go with their owners)."""
    return len(_sets)
