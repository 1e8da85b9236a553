"""Searches that other interactions run internally (conditional create, update, delete, patch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .params import Registry
from .plan import Fetcher, build, page
from .query import Query


def matching_ids(db: Fetcher, registry: Registry, query: Query, limit: int,
                 filters: Sequence[tuple[str, Sequence[Any]]] = ()) -> list[str]:
    """Ids of up to `limit` current resources matching the query (and the access `filters`), in key order."""
    return [v.id for v in page(db, build(db, registry, query, filters), limit, None).versions]
