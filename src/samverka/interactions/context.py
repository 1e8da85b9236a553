"""What every interaction handler receives (the services) and returns (a `Result`).

Handlers are plain functions of a `Services` and already-parsed arguments, so they run without a
server; `samverka.api` turns HTTP into those arguments and a `Result` back into HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..search.custom import LiveParams
from ..search.params import Registry
from ..search.query import Query, parse
from ..store import Repository, Version
from ..validation import Validator

RECORDED_AT_UNIT = "https://samverka.se/fhir/CodeSystem/recorded-at-unit"
RECORDED_AT_PROVIDER = "https://samverka.se/fhir/CodeSystem/recorded-at-provider"


@dataclass
class Services:
    repo: Repository
    registry: Registry
    validator: Validator | None
    settings: Settings
    live: LiveParams | None = None  # custom SearchParameters, kept current across processes
    # conditions on the resources row `r` that every search, include and count of this request applies:
    # the access policy of the request's token (`samverka.auth.access`), empty when unrestricted
    access_filters: tuple[tuple[str, Sequence[Any]], ...] = ()
    # when set, the filters that select what the policy withholds (a spärr): a search that would match
    # such rows says so in an OperationOutcome entry, without showing them
    withheld_filters: tuple[tuple[str, Sequence[Any]], ...] = ()
    # a user's writes: (care unit HSA-id, care provider HSA-id) stamped on what they record, as `meta.tag`
    # codes of RECORDED_AT_UNIT / RECORDED_AT_PROVIDER (Patientdatalagen: whose information it is)
    recorded_by: tuple[str, str | None] | None = None
    # a user's writes: called by `writes.prepare` with (repo, resource, patient) for a resource in a
    # patient compartment; raises 403 when Patientdatalagen does not let the user record it (auth.pdl_writes)
    write_check: Callable[[Repository, dict[str, Any], str], None] | None = None

    def searchable(self, force: bool = False) -> Registry:
        """The registry, first reloaded if the custom SearchParameters changed (search.custom)."""
        if self.live is not None:
            self.registry = self.live.registry(force)
        return self.registry

    def parse_query(self, type_: str | None, pairs: list[tuple[str, str]]) -> Query:
        """Parse against the current registry; a parameter still being reindexed is a 400."""
        registry = self.searchable()
        query = parse(registry, type_, pairs)
        if (self.live is not None and (query.unknown or self.live.uses_custom(self.live.registry(), query))
                and self.searchable(force=True) is not registry):
            query = parse(self.registry, type_, pairs)
        if self.live is not None:
            self.live.check_ready(self.live.registry(), query)
        return query


@dataclass
class Result:
    """An interaction's answer: status, a body (a resource dict, or a stored version) and headers."""

    status: int
    resource: dict[str, Any] | None = None
    version: Version | None = None  # a stored version; its bytes are sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    outcome: dict[str, Any] | None = None  # an OperationOutcome for Prefer: return=OperationOutcome
    patients: list[str] | None = None  # a search's patient compartments (for its audit record); None: unknown
    file: Path | None = None  # a file sent as it is (a Bulk Data output file), with its media type
    media_type: str | None = None
