"""The authorization server's tables (migration 0004_auth), through the repository's own connection.

Plain SQL with qmark placeholders on `Repository.fetch` and `UnitOfWork.execute`, so both backends
run it unchanged. No HTTP here: the endpoints in `auth.endpoints` call these functions.
https://hl7.org/fhir/smart-app-launch/backend-services.html
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ..store import Repository, UnitOfWork

KEY_LOCK = 0x73616D76_6B657973  # "samvkeys": one key rotation at a time (PostgreSQL advisory lock)


def now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Client:
    """A registered client (RFC 7591 metadata plus its state)."""

    client_id: str
    name: str
    auth_method: str
    scope: str
    grant_types: tuple[str, ...]
    jwks: dict[str, Any] | None
    jwks_uri: str | None
    metadata: dict[str, Any]
    created: int
    revoked: int | None

    def public(self) -> dict[str, Any]:
        """What the admin API shows: the metadata, the id and the state, never anything secret."""
        return {**self.metadata, "client_id": self.client_id, "client_id_issued_at": self.created,
                "revoked": self.revoked is not None}


_CLIENT_COLS = "client_id, name, auth_method, scope, grant_types, jwks, jwks_uri, metadata, created, revoked"


def _client(row: tuple[Any, ...]) -> Client:
    cid, name, method, scope, grants, jwks, uri, meta, created, revoked = row
    return Client(cid, name, method, scope, tuple(grants.split()), json.loads(jwks) if jwks else None, uri,
                  json.loads(meta), int(created), int(revoked) if revoked is not None else None)


def add_client(repo: Repository, c: Client) -> None:
    with repo.transaction() as uow:
        uow.execute(
            f"INSERT INTO auth_clients ({_CLIENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (c.client_id, c.name, c.auth_method, c.scope, " ".join(c.grant_types),
             json.dumps(c.jwks) if c.jwks is not None else None, c.jwks_uri, json.dumps(c.metadata),
             c.created, c.revoked),
        )


def get_client(repo: Repository, client_id: str) -> Client | None:
    rows = repo.fetch(f"SELECT {_CLIENT_COLS} FROM auth_clients WHERE client_id = ?", (client_id,))
    return _client(rows[0]) if rows else None


def list_clients(repo: Repository) -> list[Client]:
    return [_client(r) for r in repo.fetch(f"SELECT {_CLIENT_COLS} FROM auth_clients ORDER BY created, client_id",
                                           ())]


def revoke_client(repo: Repository, client_id: str) -> bool:
    """Mark a client revoked (its tokens stop working at once); False when there is no such client."""
    with repo.transaction() as uow:
        return revoke_client_in(uow, client_id)


def revoke_client_in(uow: UnitOfWork, client_id: str) -> bool:
    """`revoke_client` inside the caller's transaction."""
    rows = uow.execute("UPDATE auth_clients SET revoked = COALESCE(revoked, ?) WHERE client_id = ?"
                       " RETURNING client_id", (now(), client_id))
    return bool(rows)


def set_client_disabled(uow: UnitOfWork, client_id: str, disabled: bool) -> bool:
    """Disable a client (no tokens; its tokens refused) or enable it again (tokens issued before now stay
    refused), inside the caller's transaction; revoking stays final. False when there is no such client."""
    t = now()
    if disabled:
        rows = uow.execute("UPDATE auth_clients SET disabled = COALESCE(disabled, ?) WHERE client_id = ?"
                           " RETURNING client_id", (t, client_id))
    else:
        # tokens issued from the enable on are good; one issued before the disable in the same second is not
        rows = uow.execute("UPDATE auth_clients SET valid_after = CASE WHEN disabled IS NULL THEN valid_after"
                           " WHEN disabled + 1 > ? THEN disabled + 1 ELSE ? END, disabled = NULL"
                           " WHERE client_id = ? RETURNING client_id", (t, t, client_id))
    return bool(rows)


def enable_delay(repo: Repository, client_id: str) -> float:
    """Seconds to wait before enabling a disabled client. Token `iat`s are whole seconds, so an enable in
    the second of the disable could not tell tokens issued after it from those issued before the disable:
    `set_client_disabled` would refuse both until the next second. Waiting for it (at most 1 s) makes every
    token issued from the enable on good."""
    disabled = _disabled_at(repo, client_id)
    return 0.0 if disabled is None else max(0.0, disabled + 1 - time.time())


def client_disabled(repo: Repository, client_id: str) -> bool:
    return _disabled_at(repo, client_id) is not None


def _disabled_at(repo: Repository, client_id: str) -> int | None:
    rows = repo.fetch("SELECT disabled FROM auth_clients WHERE client_id = ?", (client_id,))
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def use_assertion(repo: Repository, client_id: str, jti: str, exp: int) -> bool:
    """Record a client assertion's jti until it expires; False when it was used before (a replay)."""
    t = now()
    with repo.transaction() as uow:
        uow.execute("DELETE FROM auth_assertions WHERE exp < ?", (t - 60,))
        rows = uow.execute("INSERT INTO auth_assertions (client_id, jti, exp) VALUES (?, ?, ?)"
                           " ON CONFLICT (client_id, jti) DO NOTHING RETURNING jti", (client_id, jti, exp))
    return bool(rows)


def revoke_token(repo: Repository, jti: str, exp: int) -> None:
    with repo.transaction() as uow:
        uow.execute("DELETE FROM auth_revoked WHERE exp < ?", (now() - 60,))
        uow.execute("INSERT INTO auth_revoked (jti, exp) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING", (jti, exp))


def token_withdrawn(repo: Repository, jti: str, client_id: str, iat: int = 0) -> bool:
    """True when the token was revoked, or its client was revoked or is disabled, or the token was issued
    before the client was last enabled (`iat` < valid_after): one indexed lookup per request."""
    return token_state(repo, jti, client_id, iat)[0]


def token_state(repo: Repository, jti: str, client_id: str, iat: int = 0) -> tuple[bool, int, int]:
    """(`token_withdrawn`, the Patientdatalagen change marker `auth.pdl_cache.changes` reads, the store's write
    mark) in one statement: every request with a user's token needs them, and each statement on the event
    loop is a GIL hand-off. The write mark is the last history `seq`: it moves with every committed write
    (on SQLite in commit order, which `auth.pdl.Policy.check` relies on to reuse a decision)."""
    rows = repo.fetch("SELECT (SELECT count(*) FROM auth_revoked WHERE jti = ?)"
                      " + (SELECT count(*) FROM auth_clients WHERE client_id = ? AND (revoked IS NOT NULL"
                      " OR disabled IS NOT NULL OR valid_after > ?)),"
                      f" ({PDL_MARKER_SQL}), ({WRITE_MARK_SQL})", (jti, client_id, iat))
    return bool(rows[0][0]), int(rows[0][1]), int(rows[0][2])


# the store's write mark: the last history `seq` (commit order on SQLite)
WRITE_MARK_SQL = "SELECT COALESCE(max(seq), 0) FROM history"

# the PDL policies' change marker (migration 0013): triggers only ever add to the counters, so their sum
# changes with every write a policy depends on
PDL_MARKER_SQL = "SELECT COALESCE(sum(n), 0) FROM pdl_changes"


@dataclass(frozen=True)
class KeyRow:
    kid: str
    alg: str
    private_jwk: dict[str, Any]
    public_jwk: dict[str, Any]
    created: int
    retired: int | None


def published_keys(repo: Repository, retired_after: int) -> list[KeyRow]:
    """Keys still in use or retired after `retired_after`, newest first."""
    rows = repo.fetch("SELECT kid, alg, private_jwk, public_jwk, created, retired FROM auth_keys"
                      " WHERE retired IS NULL OR retired > ? ORDER BY created DESC, kid", (retired_after,))
    return [KeyRow(k, a, json.loads(p), json.loads(q), int(c), int(r) if r is not None else None)
            for k, a, p, q, c, r in rows]


def install_key(repo: Repository, key: KeyRow, rotate_if_older_than: int | None, forget_before: int) -> bool:
    """Make `key` the signing key, retiring the current one, unless (with `rotate_if_older_than`) a
    key created after that time is already active: concurrent workers then keep that one. Keys
    retired before `forget_before` are deleted. True when `key` was installed."""
    with repo.transaction() as uow:
        uow.lock(KEY_LOCK)
        if rotate_if_older_than is not None:
            fresh = uow.execute("SELECT count(*) FROM auth_keys WHERE retired IS NULL AND created > ?",
                                (rotate_if_older_than,))
            if fresh and fresh[0][0]:
                return False
        t = now()
        uow.execute("UPDATE auth_keys SET retired = ? WHERE retired IS NULL", (t,))
        uow.execute("DELETE FROM auth_keys WHERE retired IS NOT NULL AND retired < ?", (forget_before,))
        uow.execute("INSERT INTO auth_keys (kid, alg, private_jwk, public_jwk, created, retired)"
                    " VALUES (?, ?, ?, ?, ?, NULL)",
                    (key.kid, key.alg, json.dumps(key.private_jwk), json.dumps(key.public_jwk), key.created))
    return True
