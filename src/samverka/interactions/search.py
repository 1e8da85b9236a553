"""search at type and system level: https://hl7.org/fhir/R4/http.html#search

The search issue completes this (chains, includes, sort, snapshot paging); this handler already
pages, counts, reports unknown parameters, and honours `Prefer: handling=strict`.
"""

from __future__ import annotations

from typing import Any

from ..errors import invalid
from ..search import engine
from ..search.query import parse
from .bundles import full_url, link, new_bundle, resource_fragment, url_with
from .context import Result, Services
from .writes import check_type


def search(svc: Services, base: str, type_: str | None, pairs: list[tuple[str, str]],
           strict: bool = False) -> Result:
    if type_ is not None:
        check_type(type_)
    query = parse(svc.registry, type_, pairs)
    if query.unknown and strict:
        raise invalid(f"unknown or unsupported search parameter(s): {', '.join(query.unknown)}",
                      query.unknown[0], "not-supported")
    count = _int(query.result, "_count", svc.settings.default_page_size)
    count = min(count, svc.settings.max_page_size)
    offset = _int(query.result, "_offset", 0)
    total_mode = (query.result.get("_total") or ["estimate"])[-1]
    summary = (query.result.get("_summary") or [""])[-1]
    used = [(k, v) for k, v in pairs if k.partition(":")[0].partition(".")[0] not in query.unknown
            and k not in query.unknown]
    path = type_ or ""
    if summary == "count" or count == 0:
        bundle = new_bundle("searchset", engine.count(svc.repo, query))
        bundle["link"] = [link("self", url_with(base, path, used))]
        return Result(200, resource=bundle)
    rows = engine.page(svc.repo, query, count + 1, offset)
    has_more = len(rows) > count
    rows = rows[:count]
    total: int | None = None
    if total_mode == "accurate" or (total_mode != "none" and not has_more):
        total = offset + len(rows) if not has_more else engine.count(svc.repo, query)
    bundle = new_bundle("searchset", total)
    keep = [(k, v) for k, v in used if k != "_offset"]
    links = [link("self", url_with(base, path, used)),
             link("first", url_with(base, path, keep))]
    if offset > 0:
        links.append(link("previous", url_with(base, path, [*keep, ("_offset", str(max(0, offset - count)))])))
    if has_more:
        links.append(link("next", url_with(base, path, [*keep, ("_offset", str(offset + count))])))
    bundle["link"] = links
    entries: list[dict[str, Any]] = [
        {"fullUrl": full_url(base, v), "resource": resource_fragment(v), "search": {"mode": "match"}}
        for v in rows
    ]
    if query.unknown:
        entries.append({"resource": {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "warning", "code": "not-supported",
                       "diagnostics": f"ignored unknown or unsupported search parameter {name!r}",
                       "expression": [name]} for name in query.unknown]},
            "search": {"mode": "outcome"}})
    bundle["entry"] = entries
    return Result(200, resource=bundle)


def _int(result: dict[str, list[str]], name: str, default: int) -> int:
    values = result.get(name)
    if not values:
        return default
    raw = values[-1]
    if not raw.isdigit():
        raise invalid(f"{name} must be a non-negative integer, not {raw!r}", name)
    return int(raw)
