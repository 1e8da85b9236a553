"""The module registry's tables (migration 0011_modules), through the repository's own connection.

Plain SQL with qmark placeholders on `Repository.fetch` and `UnitOfWork.execute`, so both backends run
it unchanged; writes take the caller's unit of work, so a registry change commits together with the
Subscription resources and the audit record it belongs to.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ..store import Repository, UnitOfWork

ACTIVE, STANDBY, DISABLED, REPLACED = "active", "standby", "disabled", "replaced"


@dataclass(frozen=True)
class ModuleRow:
    id: str
    role: str
    state: str
    client_id: str
    manifest: dict[str, Any]
    created: int
    updated: int
    replaced_by: str | None
    replaces: str | None


@dataclass(frozen=True)
class SubscriptionRow:
    """One Subscription a module owns; predecessor/after_event/after_seq: where a replacement starts."""

    module_id: str
    position: int
    subscription: str
    topic: str
    predecessor: str | None = None
    after_event: int | None = None
    after_seq: int | None = None

    def handover(self) -> dict[str, Any] | None:
        if self.predecessor is None:
            return None
        return {"predecessor": f"Subscription/{self.predecessor}", "afterEvent": self.after_event,
                "afterSequence": self.after_seq}


_COLS = "id, role, state, client_id, manifest, created, updated, replaced_by, replaces"
_SUB_COLS = "module_id, position, subscription, topic, predecessor, after_event, after_seq"


def now() -> int:
    return int(time.time())


def _module(row: tuple[Any, ...]) -> ModuleRow:
    id_, role, state, client_id, manifest, created, updated, replaced_by, replaces = row
    return ModuleRow(id_, role, state, client_id, json.loads(manifest), int(created), int(updated), replaced_by,
                     replaces)


def _opt(v: Any) -> int | None:
    return int(v) if v is not None else None


def _sub(row: tuple[Any, ...]) -> SubscriptionRow:
    m, pos, sub, topic, pred, ev, seq = row
    return SubscriptionRow(m, int(pos), sub, topic, pred, _opt(ev), _opt(seq))


def get(repo: Repository | UnitOfWork, module_id: str) -> ModuleRow | None:
    rows = repo.fetch(f"SELECT {_COLS} FROM modules WHERE id = ?", (module_id,))
    return _module(rows[0]) if rows else None


def list_all(repo: Repository) -> list[ModuleRow]:
    return [_module(r) for r in repo.fetch(f"SELECT {_COLS} FROM modules ORDER BY role, created, id", ())]


def role_holder(repo: Repository | UnitOfWork, role: str) -> ModuleRow | None:
    """The module that holds `role` (active or disabled; not standby, not replaced)."""
    rows = repo.fetch(f"SELECT {_COLS} FROM modules WHERE role = ? AND state IN (?, ?) ORDER BY created LIMIT 1",
                      (role, ACTIVE, DISABLED))
    return _module(rows[0]) if rows else None


def subscriptions(repo: Repository | UnitOfWork, module_id: str) -> list[SubscriptionRow]:
    return [_sub(r) for r in repo.fetch(f"SELECT {_SUB_COLS} FROM module_subscriptions WHERE module_id = ?"
                                        " ORDER BY position", (module_id,))]


def insert(uow: UnitOfWork, m: ModuleRow) -> None:
    uow.execute(f"INSERT INTO modules ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (m.id, m.role, m.state, m.client_id, json.dumps(m.manifest), m.created, m.updated, m.replaced_by,
                 m.replaces))


def set_state(uow: UnitOfWork, module_id: str, state: str, replaced_by: str | None = None,
              replaces: str | None = None) -> None:
    uow.execute("UPDATE modules SET state = ?, updated = ?, replaced_by = COALESCE(?, replaced_by),"
                " replaces = COALESCE(?, replaces) WHERE id = ?", (state, now(), replaced_by, replaces, module_id))


def add_subscription(uow: UnitOfWork, s: SubscriptionRow) -> None:
    uow.execute(f"INSERT INTO module_subscriptions ({_SUB_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (s.module_id, s.position, s.subscription, s.topic, s.predecessor, s.after_event, s.after_seq))
