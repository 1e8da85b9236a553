"""search at type, system and compartment level: https://hl7.org/fhir/R4/http.html#search

Parsing (`search.query`), planning (`search.plan`) and includes (`search.include`) live in the search
package; this handler decides what the client asked for and assembles the searchset Bundle, with
cursor links (`first`, `previous`, `next`, `last`) that stay stable while resources change.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import Category, FhirError, invalid
from ..search import include, plan
from ..search.query import InCompartment, guarded
from ..store import Version
from .bundles import full_url, link, new_bundle, resource_fragment, url_with
from .context import Result, Services
from .writes import check_type

_PAGING = ("_cursor", "_offset")


def search(svc: Services, base: str, type_: str | None, pairs: list[tuple[str, str]], strict: bool = False,
           compartment: tuple[str, str] | None = None) -> Result:
    if type_ is not None:
        check_type(type_)
    query = svc.parse_query(type_, pairs)
    if _last(query.result, "_contained", "false") != "false":  # contained resources are not indexed
        query.unknown.append("_contained")
    if query.unknown and strict:
        raise invalid(f"unknown or unsupported search parameter(s): {', '.join(query.unknown)}",
                      query.unknown[0], "not-supported")
    filters = list(svc.access_filters)
    query.criteria[:] = [guarded(n, filters) for n in query.criteria]  # a _has sees only what the token may see
    if compartment:  # a criterion the planner can start from (a patient's few resources), not a filter
        query.criteria.insert(0, _in_compartment(svc, compartment, type_))
    count = min(_int(query.result, "_count", svc.settings.default_page_size), svc.settings.max_page_size)
    total_mode = _last(query.result, "_total", "estimate")
    if total_mode not in ("none", "estimate", "accurate"):
        raise invalid(f"_total must be none, estimate or accurate, not {total_mode!r}", "_total")
    summary = _last(query.result, "_summary", "")
    used = [(k, v) for k, v in pairs if k not in query.unknown and k not in _PAGING]
    path = "/".join(compartment) + f"/{type_}" if compartment else (type_ or "")
    specs = include.parse_specs(svc.registry, query.result)
    p = plan.build(svc.repo, svc.registry, query, filters)
    if summary == "count" or count == 0:
        bundle = new_bundle("searchset", plan.count(svc.repo, p))
        bundle["link"] = [link("self", url_with(base, path, used))]
        return Result(200, resource=bundle)
    direction, cursor = _cursor(query.result, len(p.sort))
    pg = plan.page(svc.repo, p, count, cursor, backwards=direction in ("prev", "last"))
    total: int | None = None
    whole = cursor is None and direction == "next" and not pg.more  # the first page holds every match
    if whole and total_mode != "none":
        total = len(pg.versions)
    elif total_mode == "accurate":
        total = plan.count(svc.repo, p)
    bundle = new_bundle("searchset", total)
    bundle["link"] = _links(base, path, used, direction, cursor, pg)
    entries: list[dict[str, Any]] = [
        {"fullUrl": full_url(base, v), "resource": resource_fragment(v), "search": {"mode": "match"}}
        for v in pg.versions
    ]
    added: list[Version] = []
    if specs:
        added, truncated = include.resolve(svc.repo, specs, pg.versions, filters)
        entries += [{"fullUrl": full_url(base, v), "resource": resource_fragment(v), "search": {"mode": "include"}}
                    for v in added]
        if truncated:
            query.unknown.append(f"(included resources truncated at {include.MAX_INCLUDED})")
    issues = [{"severity": "warning", "code": "not-supported",
               "diagnostics": f"ignored unknown or unsupported search parameter {name!r}", "expression": [name]}
              for name in query.unknown]
    if svc.withheld_filters and plan.page(svc.repo, plan.build(svc.repo, svc.registry, query, svc.withheld_filters),
                                          1, None).versions:
        issues.append({"severity": "information", "code": "suppressed",
                       "diagnostics": "information matching this search exists that is blocked (spärr) for you; "
                                      "it is not shown"})
    if _last(query.result, "_explain", "false") == "true":
        issues.append({"severity": "information", "code": "informational",
                       "diagnostics": orjson.dumps(plan.explain(svc.repo, svc.repo.dialect, p, count)).decode()})
    if issues:
        entries.append({"resource": {"resourceType": "OperationOutcome", "issue": issues},
                        "search": {"mode": "outcome"}})
    bundle["entry"] = entries
    patients = sorted({v.compartment for v in [*pg.versions, *added] if v.compartment})
    return Result(200, resource=bundle, patients=patients)


def _links(base: str, path: str, used: list[tuple[str, str]], direction: str, cursor: list[Any] | None,
           pg: plan.Page) -> list[dict[str, str]]:
    def at(kind: str, key: list[Any] | None = None) -> str:
        extra = [("_cursor", plan.encode_cursor([kind, *(key or [])]))] if kind != "first" else []
        return url_with(base, path, [*used, *extra])

    current = [*used] if cursor is None and direction == "next" else [
        *used, ("_cursor", plan.encode_cursor([direction, *(cursor or [])]))]
    links = [link("self", url_with(base, path, current)), link("first", at("first")), link("last", at("last"))]
    if direction == "next":
        has_before, has_after = cursor is not None, pg.more
    else:  # a page reached backwards: from "previous" there is always a later page; from "last" none
        has_before, has_after = pg.more, direction == "prev"
    has_before = has_before and pg.first_key is not None
    has_after = has_after and pg.last_key is not None
    if has_before:
        links.append(link("previous", at("prev", pg.first_key)))
    if has_after:
        links.append(link("next", at("next", pg.last_key)))
    return links


def _cursor(result: dict[str, list[str]], n: int) -> tuple[str, list[Any] | None]:
    """(direction, sort key) from `_cursor`: next/prev carry the key of a boundary row; last none."""
    raw = _last(result, "_cursor", "")
    if not raw:
        return "next", None
    values = plan.decode_cursor(raw)
    if values == ["last"]:
        return "last", None
    if len(values) != n + 1 or values[0] not in ("next", "prev"):
        raise invalid("_cursor does not belong to this search", "_cursor")
    return values[0], values[1:]


def _in_compartment(svc: Services, compartment: tuple[str, str], type_: str | None) -> InCompartment:
    """`Patient/123/Observation`: the Observations referring to Patient/123 through the parameters the R4
    Patient CompartmentDefinition names for Observation (subject, performer)."""
    from ..fhir.definitions import compartment_definition
    from ..store.hashing import h64

    ctype, cid = compartment
    if ctype != "Patient":
        raise FhirError.of(Category.UNSUPPORTED, f"the {ctype} compartment is not supported; use Patient")
    ids: list[int] = []
    for res in compartment_definition("Patient").get("resource", []):
        if res["code"] == type_:
            ids = [p.id for c in res.get("param") or [] if (p := svc.registry.get(res["code"], c)) is not None]
    return InCompartment(tuple(ids), h64(f"Patient/{cid}"), cid, f"Patient/{cid}")


def _last(result: dict[str, list[str]], name: str, default: str) -> str:
    values = result.get(name)
    return values[-1] if values else default


def _int(result: dict[str, list[str]], name: str, default: int) -> int:
    raw = _last(result, name, "")
    if not raw:
        return default
    if not raw.isdigit():
        raise invalid(f"{name} must be a non-negative integer, not {raw!r}", name)
    return int(raw)
