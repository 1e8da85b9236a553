"""history at instance, type and system level: https://hl7.org/fhir/R4/http.html#history

Newest first, with `_since`, `_at`, `_count` and cursor paging (`_cursor` is the sequence number
of the last entry on the previous page, so pages stay stable while new versions arrive).
"""

from __future__ import annotations

from typing import Any

from ..errors import invalid, not_found
from ..fhir.instant import parse_instant
from ..store import HistoryQuery
from .bundles import full_url, link, new_bundle, resource_fragment, url_with
from .context import Result, Services
from .writes import check_id, check_type, etag

_STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}
_ALLOWED = {"_count", "_since", "_at", "_cursor", "_format", "_pretty", "_summary", "_elements"}


def history(svc: Services, base: str, type_: str | None, id_: str | None,
            pairs: list[tuple[str, str]]) -> Result:
    if type_ is not None:
        check_type(type_)
    if id_ is not None:
        assert type_ is not None
        check_id(id_)
        if svc.repo.read(type_, id_) is None:
            raise not_found(f"{type_}/{id_} is not known")
    params = dict(pairs)
    for name in params:
        if name not in _ALLOWED:
            raise invalid(f"unknown history parameter {name!r}", name)
    count = _int(params, "_count", svc.settings.default_page_size)
    count = max(1, min(count, svc.settings.max_page_size))
    cursor = _int(params, "_cursor", 0) or None
    q = HistoryQuery(type_, id_, _instant(params, "_since"), _instant(params, "_at"), count + 1, cursor)
    entries = svc.repo.history(q)
    has_more = len(entries) > count
    entries = entries[:count]
    total = svc.repo.history_count(q) if id_ is not None else None
    bundle = new_bundle("history", total)
    path = "/".join(p for p in (type_, id_, "_history") if p)
    keep = [(k, v) for k, v in pairs if k not in ("_cursor",)]
    bundle["link"] = [link("self", url_with(base, path, pairs))]
    if has_more:
        bundle["link"].append(link("next", url_with(base, path, [*keep, ("_cursor", str(entries[-1].seq))])))
    out: list[dict[str, Any]] = []
    for e in entries:
        v = e.version
        entry: dict[str, Any] = {"fullUrl": full_url(base, v)}
        if v.data is not None:
            entry["resource"] = resource_fragment(v)
        entry["request"] = {"method": v.method, "url": v.type if v.method == "POST" else f"{v.type}/{v.id}"}
        entry["response"] = {"status": _STATUS.get(v.method, "200 OK"), "etag": etag(v.version),
                             "lastModified": v.last_updated}
        out.append(entry)
    bundle["entry"] = out
    return Result(200, resource=bundle)


def _int(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise invalid(f"{name} must be a non-negative integer, not {raw!r}", name)
    return int(raw)


def _instant(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return parse_instant(raw)
    except ValueError as exc:
        raise invalid(f"{name} must be an instant such as 2026-01-31T12:00:00Z, not {raw!r}", name) from exc
