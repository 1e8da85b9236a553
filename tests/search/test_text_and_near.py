"""The R4 search parameters without a FHIRPath expression to index: `_content`, `_text`, `_query`, and the
special `near` on Location (https://hl7.org/fhir/R4/search.html#content, location.html#positional).

On both stores: matches written by hand, Swedish letters folded the same way on SQLite (Python functions)
and PostgreSQL (SQL functions), LIKE metacharacters taken literally, and bad input refused with 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_custom_params import ids, services

from samverka.errors import FhirError
from samverka.interactions import update
from samverka.interactions.context import Services

DIV = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'


def _put(svc: Services, resource: dict[str, Any]) -> None:
    update.update(svc, resource["resourceType"], resource["id"], resource)


@pytest.fixture
def svc(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Services]:
    s = services(backend, tmp_path, request)
    _put(s, {"resourceType": "Patient", "id": "karin", "name": [{"family": "Öberg", "given": ["Karin"]}],
             "text": {"status": "generated", "div": DIV.format("Karin Öberg: <b>diabetes</b> typ 2 &amp; astma")}})
    _put(s, {"resourceType": "Patient", "id": "asa", "name": [{"family": "Ström", "given": ["Åsa"]}],
             "address": [{"city": "Västerås", "line": ["Storgatan 1"]}]})
    _put(s, {"resourceType": "Patient", "id": "pct", "name": [{"family": "Procent"}],
             "text": {"status": "generated", "div": DIV.format("rabatt 100% på_allt")}})
    for lid, lat, lon in (("akademiska", 59.8497, 17.6381), ("karolinska", 59.3496, 18.0326),
                          ("sus", 55.5896, 13.0029), ("kiruna", 67.8558, 20.2253)):
        _put(s, {"resourceType": "Location", "id": lid, "name": lid, "position": {"latitude": lat, "longitude": lon}})
    _put(s, {"resourceType": "Location", "id": "nowhere", "name": "no position"})
    try:
        yield s
    finally:
        s.repo.close()


@pytest.mark.parametrize(("pairs", "expected"), [
    ([("_content", "oberg")], {"karin"}),  # Ö folds to o
    ([("_content", "ÖBERG")], {"karin"}),
    ([("_content", "västerås")], {"asa"}),
    ([("_content", "vasteras")], {"asa"}),
    ([("_content", "asa strom")], {"asa"}),  # every word must occur
    ([("_content", "asa oberg")], set()),
    ([("_content", "asa,oberg")], {"asa", "karin"}),  # comma: OR
    ([("_content", '"storgatan 1"')], {"asa"}),  # a phrase
    ([("_content", '"1 storgatan"')], set()),
    ([("_content", "family")], set()),  # element names are not content
    ([("_content", "diabetes")], {"karin"}),  # the narrative is a string value too
    ([("_text", "diabetes")], {"karin"}),
    ([("_text", "DIAB astma")], {"karin"}),
    ([("_text", "västerås")], set()),  # not in any narrative
    ([("_text", "&")], {"karin"}),  # entities decoded
    ([("_text", "xhtml")], set()),  # tags and attributes are not text
    ([("_text", "div")], set()),
    ([("_text", "100%")], {"pct"}),
    ([("_text", "%")], {"pct"}),  # LIKE metacharacters are literal
    ([("_text", "_")], {"pct"}),
    ([("_content", "100_")], set()),
    ([("_text:missing", "true")], {"asa"}),
    ([("_text:missing", "false")], {"karin", "pct"}),
    ([("_content", "karin"), ("family", "öberg")], {"karin"}),
])
def test_content_and_text(svc: Services, pairs: list[tuple[str, str]], expected: set[str]) -> None:
    assert ids(svc, pairs) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("59.85|17.64|5|km", {"akademiska"}),
    ("59.85|17.64|5", {"akademiska"}),
    ("59.85|17.64", {"akademiska"}),  # the default distance, 5 km
    ("59.85|17.64|70|km", {"akademiska", "karolinska"}),  # Uppsala-Stockholm is ~57 km
    ("59.85|17.64|50|km", {"akademiska"}),
    ("59.85|17.64|70000|m", {"akademiska", "karolinska"}),
    ("59.85|17.64|40|[mi_i]", {"akademiska", "karolinska"}),  # 64 km
    ("59.85|17.64|30|[mi_i]", {"akademiska"}),
    ("55.59|13.0|1|km,67.86|20.23|1|km", {"sus", "kiruna"}),
    ("0|0|100|km", set()),
    ("59.85|17.64|20000|km", {"akademiska", "karolinska", "sus", "kiruna"}),
])
def test_near(svc: Services, value: str, expected: set[str]) -> None:
    assert ids(svc, [("near", value)], "Location") == expected


def test_near_missing(svc: Services) -> None:
    assert ids(svc, [("near:missing", "true")], "Location") == {"nowhere"}
    assert ids(svc, [("near:missing", "false")], "Location") == {"akademiska", "karolinska", "sus", "kiruna"}


@pytest.mark.parametrize(("type_", "pairs", "words"), [
    ("Location", [("near", "91|0")], "latitude"),
    ("Location", [("near", "59|181")], "longitude"),
    ("Location", [("near", "59")], "[latitude]|[longitude]"),
    ("Location", [("near", "59|17|x")], "distance"),
    ("Location", [("near", "59|17|-1")], "distance"),
    ("Location", [("near", "59|17|1|parsec")], "units"),
    ("Location", [("near", "nan|17")], "latitude"),
    ("Location", [("near:exact", "59|17")], "not supported"),
    ("Patient", [("_content", "   ")], "at least one word"),
    ("Patient", [("_content:exact", "x")], "not supported"),
    ("Patient", [("_query", "mine")], "named queries"),
])
def test_bad_input(svc: Services, type_: str, pairs: list[tuple[str, str]], words: str) -> None:
    with pytest.raises(FhirError) as caught:
        ids(svc, pairs, type_)
    issue = caught.value.issues[0]
    assert words in issue.diagnostics and issue.expression == pairs[0][0]


def test_a_store_from_before_near_was_indexed_reindexes_it_first(backend: str, tmp_path: Path,
                                                                  request: pytest.FixtureRequest) -> None:
    """Migration 0019: Locations stored before `near` had index rows make it pending until a reindex ends."""
    from samverka.interactions import reindex
    from samverka.search.params import Registry

    s = services(backend, tmp_path, request)
    near_id = Registry.default().get("Location", "near").id  # type: ignore[union-attr]
    _put(s, {"resourceType": "Location", "id": "akademiska", "position": {"latitude": 59.85, "longitude": 17.64}})
    with s.repo.transaction() as uow:  # as the store was before schema v19: no rows for near
        uow.execute("DELETE FROM idx_number WHERE param = ?", (near_id,))
        uow.execute("DELETE FROM schema_migrations WHERE version = 19", ())
    database = s.settings.database
    s.repo.close()
    s = services(backend, tmp_path, request) if database is None else _reopen(s)
    try:
        with pytest.raises(FhirError, match="being reindexed"):
            ids(s, [("near", "59.85|17.64|1")], "Location")
        [job] = [j for j in reindex.jobs(s) if j.status == "running"]
        assert job.params == ["http://hl7.org/fhir/SearchParameter/Location-near"]
        reindex.run(s, job)
        assert ids(s, [("near", "59.85|17.64|1")], "Location") == {"akademiska"}
    finally:
        s.repo.close()


def _reopen(old: Services) -> Services:
    from samverka.search.custom import LiveParams
    from samverka.store import open_repository
    from samverka.validation import Validator

    repo = open_repository(old.settings.data_dir, old.settings.database)
    live = LiveParams(repo)
    return Services(repo, live.registry(), Validator.default(), old.settings, live)


def test_contained_true_is_reported_not_ignored(svc: Services) -> None:
    from samverka.interactions import search

    with pytest.raises(FhirError, match="_contained"):
        search.search(svc, "http://x/fhir", "Patient", [("_contained", "true")], strict=True)
    bundle = search.search(svc, "http://x/fhir", "Patient", [("_contained", "both")]).resource
    assert bundle is not None
    [outcome] = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome["issue"][0]["expression"] == ["_contained"]
    assert ids(svc, [("_contained", "false")]) == {"karin", "asa", "pct"}
