"""What every interaction handler receives (the services) and returns (a `Result`).

Handlers are plain functions of a `Services` and already-parsed arguments, so they run without a
server; `samverka.api` turns HTTP into those arguments and a `Result` back into HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from ..search.params import Registry
from ..store import Repository, Version
from ..validation import Validator


@dataclass
class Services:
    repo: Repository
    registry: Registry
    validator: Validator | None
    settings: Settings


@dataclass
class Result:
    """An interaction's answer: status, a body (a resource dict, or a stored version) and headers."""

    status: int
    resource: dict[str, Any] | None = None
    version: Version | None = None  # a stored version; its bytes are sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    outcome: dict[str, Any] | None = None  # an OperationOutcome for Prefer: return=OperationOutcome
