"""Opaque, stored handles of the authorization-code flow (migration 0007): https://www.rfc-editor.org/rfc/rfc6749#section-10.10

Pending authorization requests, authorization codes, EHR launch contexts and refresh tokens are
random strings handed out once; the table keeps only their SHA-256, so a database dump gives no
usable code or refresh token. Consuming a handle is one conditional UPDATE, so two racing uses of a
code or refresh token cannot both succeed; a second use is reported as a replay.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from ..store import Repository
from .store import now

REQUEST, CODE, LAUNCH, REFRESH = "request", "code", "launch", "refresh"


def digest(handle: str) -> str:
    return hashlib.sha256(handle.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class Handle:
    """A stored handle's state; `data` is what the flow attached to it."""

    kind: str
    client_id: str | None
    family: str | None
    data: dict[str, Any]
    exp: int
    used: int | None
    revoked: int | None


_COLS = "kind, client_id, family, data, exp, used, revoked"


def _handle(row: tuple[Any, ...]) -> Handle:
    kind, client_id, family, data, exp, used, revoked = row
    return Handle(kind, client_id, family, json.loads(data), int(exp), None if used is None else int(used),
                  None if revoked is None else int(revoked))


def create(repo: Repository, kind: str, data: dict[str, Any], lifetime: int, client_id: str | None = None,
           family: str | None = None) -> str:
    """Store a new handle and return it (the only time it exists in clear)."""
    handle = secrets.token_urlsafe(32)
    t = now()
    with repo.transaction() as uow:
        uow.execute("DELETE FROM auth_handles WHERE exp < ?", (t - 60,))
        uow.execute(f"INSERT INTO auth_handles (id, {_COLS}) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                    (digest(handle), kind, client_id, family, json.dumps(data), t + lifetime))
    return handle


def get(repo: Repository, kind: str, handle: str) -> Handle | None:
    """The handle when it is live: not expired, used or revoked."""
    rows = repo.fetch(f"SELECT {_COLS} FROM auth_handles WHERE id = ? AND kind = ? AND used IS NULL"
                      " AND revoked IS NULL AND exp > ?", (digest(handle), kind, now()))
    return _handle(rows[0]) if rows else None


def update(repo: Repository, kind: str, handle: str, data: dict[str, Any]) -> bool:
    """Replace a live handle's data; False when it is no longer live."""
    with repo.transaction() as uow:
        rows = uow.execute("UPDATE auth_handles SET data = ? WHERE id = ? AND kind = ? AND used IS NULL"
                           " AND revoked IS NULL AND exp > ? RETURNING id",
                           (json.dumps(data), digest(handle), kind, now()))
    return bool(rows)


def consume(repo: Repository, kind: str, handle: str) -> tuple[Handle | None, Handle | None]:
    """Use a handle once: (the handle, None) the first time; (None, the stored handle) on a replay of a
    used one (so its grant can be revoked); (None, None) when it is unknown, expired or revoked."""
    key, t = digest(handle), now()
    with repo.transaction() as uow:
        rows = uow.execute(f"UPDATE auth_handles SET used = ? WHERE id = ? AND kind = ? AND used IS NULL"
                           f" AND revoked IS NULL AND exp > ? RETURNING {_COLS}", (t, key, kind, t))
        if rows:
            return _handle(rows[0]), None
        rows = uow.execute(f"SELECT {_COLS} FROM auth_handles WHERE id = ? AND kind = ?", (key, kind))
    if rows and rows[0][5] is not None:
        return None, _handle(rows[0])
    return None, None


def set_data(repo: Repository, kind: str, handle: str, data: dict[str, Any]) -> None:
    """Replace a handle's data whatever its state (e.g. remember the access token a code was exchanged for)."""
    with repo.transaction() as uow:
        uow.execute("UPDATE auth_handles SET data = ? WHERE id = ? AND kind = ?", (json.dumps(data), digest(handle),
                                                                                   kind))


def find(repo: Repository, kind: str, handle: str) -> Handle | None:
    """The stored handle in any state (for revocation)."""
    rows = repo.fetch(f"SELECT {_COLS} FROM auth_handles WHERE id = ? AND kind = ?", (digest(handle), kind))
    return _handle(rows[0]) if rows else None


def revoke_family(repo: Repository, family: str) -> list[Handle]:
    """Revoke every handle of one grant (its code and refresh tokens); returns them."""
    with repo.transaction() as uow:
        rows = uow.execute(f"UPDATE auth_handles SET revoked = COALESCE(revoked, ?) WHERE family = ?"
                           f" RETURNING {_COLS}", (now(), family))
    return [_handle(r) for r in rows]
