"""`samverka check`: the store's structural checks plus a re-extraction of every index row.

Lives above `store` because re-extracting needs the search-parameter registry.
"""

from __future__ import annotations

from collections import Counter

import orjson

from .interactions.context import Services
from .search.extract import extract
from .store.schema import INDEX_TABLES


def full_check(svc: Services) -> tuple[list[str], int]:
    """(problems, resources checked). Index rows are compared per table, in total and per resource type."""
    problems = list(svc.repo.check())
    expected: Counter[str] = Counter()
    last_updated = svc.registry.get("Resource", "_lastUpdated")
    checked = 0
    for v in svc.repo.iter_current():
        checked += 1
        assert v.data is not None
        try:
            resource = orjson.loads(v.data)
        except orjson.JSONDecodeError:
            problems.append(f"{v.type}/{v.id} version {v.version}: stored JSON does not parse")
            continue
        meta = resource.get("meta") or {}
        if resource.get("id") != v.id or resource.get("resourceType") != v.type:
            problems.append(f"{v.type}/{v.id}: stored resource says {resource.get('resourceType')}/"
                            f"{resource.get('id')}")
        if meta.get("versionId") != str(v.version):
            problems.append(f"{v.type}/{v.id}: meta.versionId {meta.get('versionId')!r} but version {v.version}")
        rows = extract(resource, svc.registry)
        if last_updated is not None:
            rows.dates = [d for d in rows.dates if d[0] != last_updated.id]
            rows.dates.append((last_updated.id, 0, 0))
        for field, table, _cols in INDEX_TABLES:
            expected[table] += len(set(getattr(rows, field)))
    for _field, table, _cols in INDEX_TABLES:
        stored = int(svc.repo.fetch(f"SELECT count(*) FROM {table}", ())[0][0])
        if stored != expected[table]:
            problems.append(f"{table}: {stored} rows stored, but the current resources yield {expected[table]}")
    return problems, checked
