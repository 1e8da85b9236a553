"""Repeated criteria on one parameter (`code=A&code=B`, `date=ge..&date=lt..`) checked per candidate of a
driven plan: on PostgreSQL one lookup of the resource's index rows tests them all (`sql.merged_exists`),
and each criterion may still be met by a different value, exactly as separate EXISTS conditions say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from samverka.config import Settings
from samverka.interactions import search, transaction
from samverka.interactions.context import Services
from samverka.search.params import Registry
from samverka.store.base import Repository


def _obs(oid: str, codes: list[str], when: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Observation", "id": oid, "status": "final",
                            "subject": {"reference": "Patient/p"},
                            "code": {"coding": [{"system": "http://loinc.org", "code": c} for c in codes]}}
    if len(when) == 1:
        body["effectiveDateTime"] = when[0]
    else:
        body["effectivePeriod"] = {"start": when[0], "end": when[1]}
    return body


def _search(svc: Services, pairs: list[tuple[str, str]]) -> tuple[list[str], str]:
    bundle = search.search(svc, "http://x/fhir", "Observation", [*pairs, ("_explain", "true")]).resource
    assert bundle is not None
    ids = sorted(e["fullUrl"].rsplit("/", 1)[1] for e in bundle["entry"] if e["search"]["mode"] == "match")
    outcome = next(e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome")
    return ids, orjson.loads(outcome["issue"][-1]["diagnostics"])["sql"]


def test_repeated_criteria_on_one_parameter_each_match_some_value(repo: Repository) -> None:
    svc = Services(repo, Registry.default(), None, Settings(data_dir=Path("unused")))
    resources = [
        {"resourceType": "Patient", "id": "p"},
        _obs("both-codes", ["1-1", "2-2"], ["2014-07-10"]),
        _obs("one-code", ["1-1"], ["2014-07-11"]),
        _obs("other-code", ["2-2"], ["2014-07-12"]),
        _obs("july", ["1-1"], ["2014-07-20"]),
        _obs("june", ["1-1"], ["2014-06-20"]),
        _obs("spans-june-to-august", ["1-1"], ["2014-06-01", "2014-08-30"]),
    ]
    transaction.transaction(svc, "http://x/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]},
        False)
    ids, sql = _search(svc, [("subject", "Patient/p"), ("code", "1-1"), ("code", "2-2"), ("code", "2-2,3-3")])
    assert ids == ["both-codes"]  # the criteria met by two codings of one resource
    ids, sql = _search(svc, [("subject", "Patient/p"), ("date", "ge2014-07-01"), ("date", "lt2014-08-01")])
    assert ids == ["both-codes", "july", "one-code", "other-code", "spans-june-to-august"]
    if repo.dialect == "postgresql":  # the open date ranges do not drive: both are checked with one lookup
        assert "max(CASE WHEN" in sql, sql
    ids, _sql = _search(svc, [("subject", "Patient/p"), ("code", "1-1"), ("code", "9-9")])
    assert ids == []
