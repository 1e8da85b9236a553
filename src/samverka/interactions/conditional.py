"""Conditional interactions' criteria: https://hl7.org/fhir/R4/http.html#ccreate (and cupdate, cdelete).

Criteria are matched inside the write's own transaction, after taking a per-type lock, so two
concurrent conditional creates with the same criteria cannot both create.
"""

from __future__ import annotations

from ..errors import invalid
from ..search.engine import matching_ids
from ..search.query import guarded, parse_pairs
from ..store import UnitOfWork
from ..store.hashing import h64
from .context import Services


def matches(svc: Services, uow: UnitOfWork, type_: str, criteria: str, what: str) -> list[str]:
    """Ids (at most 2: enough to tell zero, one and many) of resources matching `criteria`."""
    pairs = parse_pairs(criteria.lstrip("?"))
    if not pairs:
        raise invalid(f"{what} has no search criteria", what)
    query = svc.parse_query(type_, pairs)
    if query.unknown:
        raise invalid(f"{what}: unknown or unsupported search parameter(s): {', '.join(query.unknown)}", what)
    if query.result:
        raise invalid(f"{what}: result parameters are not allowed: {', '.join(query.result)}", what)
    uow.lock(h64(f"conditional:{type_}"))
    # only what the token may see (its access filters, e.g. Patientdatalagen for a user) can match, also in a _has
    query.criteria[:] = [guarded(n, svc.access_filters) for n in query.criteria]
    return matching_ids(uow, svc.registry, query, 2, svc.access_filters)
