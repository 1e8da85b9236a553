"""Custom SearchParameters on both backends (https://hl7.org/fhir/R4/searchparameter.html)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from samverka.config import Settings
from samverka.errors import Category, FhirError
from samverka.integrity import full_check
from samverka.interactions import create, delete, reindex, search, update
from samverka.interactions.context import Services
from samverka.search.custom import LiveParams
from samverka.validation import Validator
from support.postgres_cluster import SessionDatabase

EXT = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
URL = "http://example.org/fhir/SearchParameter/birthplace"


def birthplace_sp(expression: str = f"Patient.extension('{EXT}').value.city", status: str = "active",
                  url: str = URL) -> dict[str, Any]:
    return {"resourceType": "SearchParameter", "id": "birthplace", "url": url, "name": "birthplace",
            "status": status, "description": "The city of birth", "code": "birthplace", "base": ["Patient"],
            "type": "string", "expression": expression}


def patient(city: str, id_: str | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"resourceType": "Patient", "extension": [{"url": EXT, "valueAddress": {"city": city}}]}
    if id_:
        p["id"] = id_
    return p


def services(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Services:
    if backend == "sqlite":
        settings = Settings(data_dir=tmp_path)
    else:
        session: SessionDatabase = request.getfixturevalue("pg_session")
        settings = Settings(database=session.fresh())
    from samverka.store import open_repository

    repo = open_repository(settings.data_dir, settings.database)
    live = LiveParams(repo)
    return Services(repo, live.registry(), Validator.default(), settings, live)


@pytest.fixture
def svc(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Services]:
    s = services(backend, tmp_path, request)
    try:
        yield s
    finally:
        s.repo.close()


def ids(svc: Services, pairs: list[tuple[str, str]], type_: str = "Patient") -> set[str]:
    bundle = search.search(svc, "http://x/fhir", type_, [*pairs, ("_count", "1000")], strict=True).resource
    assert bundle is not None
    return {e["resource"]["id"] if isinstance(e["resource"], dict) else _id(e) for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") == "match"}


def _id(entry: dict[str, Any]) -> str:
    return str(entry["fullUrl"]).rsplit("/", 1)[1]


def reindex_all(svc: Services, batch: int = 7) -> reindex.Job:
    job = reindex.start(svc)
    assert job is not None
    done = reindex.run(svc, job, batch)
    assert done is not None and done.status == "done"
    return done


def load(svc: Services, cities: list[str]) -> dict[str, str]:
    out = {}
    for city in cities:
        r = create.create(svc, "Patient", patient(city))
        assert r.version is not None
        out[r.version.id] = city
    return out


def test_an_expression_that_cannot_be_compiled_is_a_422_at_the_expression(svc: Services) -> None:
    for bad in ("Patient.extension(", "Patient.name.nosuchfunction()", "Patient.nosuchelement", "Patient..name"):
        with pytest.raises(FhirError) as err:
            update.update(svc, "SearchParameter", "birthplace", birthplace_sp(bad))
        assert err.value.category is Category.UNPROCESSABLE, bad
        assert err.value.issues[0].expression == "SearchParameter.expression", bad
    assert svc.repo.read("SearchParameter", "birthplace") is None
    # a retired one is only stored: it is never compiled
    update.update(svc, "SearchParameter", "birthplace", birthplace_sp("Patient.nosuchelement", status="retired"))


def test_not_ready_until_reindexed_then_right_answers(svc: Services) -> None:
    before = load(svc, ["Uppsala", "Lund", "Uppsala", "Malmö", "Umeå"] * 5)
    update.update(svc, "SearchParameter", "birthplace", birthplace_sp())
    with pytest.raises(FhirError) as err:
        ids(svc, [("birthplace", "uppsala")])
    assert err.value.category is Category.INVALID and "being reindexed" in err.value.message
    assert err.value.issues[0].expression == "birthplace"
    with pytest.raises(FhirError):  # not even in lenient mode: dropping the criterion would widen the answer
        search.search(svc, "http://x/fhir", "Patient", [("birthplace", "uppsala")], strict=False)
    with pytest.raises(FhirError):  # nor as a conditional create's criteria
        create.create(svc, "Patient", patient("Uppsala"), "birthplace=Uppsala")
    after = load(svc, ["Uppsala", "Kiruna"])  # written after the parameter: indexed at once
    job = reindex_all(svc)
    assert job.total == 25 + 2 and job.percent == 100
    everyone = before | after
    assert ids(svc, [("birthplace", "uppsala")]) == {i for i, c in everyone.items() if c == "Uppsala"}
    assert ids(svc, [("birthplace", "umea")]) == {i for i, c in everyone.items() if c == "Umeå"}
    assert ids(svc, [("birthplace:exact", "Kiruna")]) == {i for i, c in after.items() if c == "Kiruna"}
    assert full_check(svc)[0] == []
    assert reindex.start(svc) is None  # nothing left to do


def test_empty_store_parameter_is_ready_at_once(svc: Services) -> None:
    update.update(svc, "SearchParameter", "birthplace", birthplace_sp())
    made = load(svc, ["Visby"])
    assert ids(svc, [("birthplace", "visby")]) == set(made)


def test_changed_expression_and_retirement(svc: Services) -> None:
    made = load(svc, ["Uppsala", "Lund"])
    update.update(svc, "SearchParameter", "birthplace", birthplace_sp())
    reindex_all(svc)
    # a new expression: not ready again; after the reindex the old rows are gone
    update.update(svc, "SearchParameter", "birthplace",
                  birthplace_sp(f"Patient.extension('{EXT}').value.country | Patient.extension('{EXT}').value.city"))
    with pytest.raises(FhirError):
        ids(svc, [("birthplace", "lund")])
    reindex_all(svc)
    assert ids(svc, [("birthplace", "lund")]) == {i for i, c in made.items() if c == "Lund"}
    assert full_check(svc)[0] == []
    # retired: no longer searchable (an unknown parameter), and its rows are purged by a reindex
    update.update(svc, "SearchParameter", "birthplace", birthplace_sp(status="retired"))
    with pytest.raises(FhirError) as err:
        ids(svc, [("birthplace", "lund")])
    assert "unknown" in err.value.message or "reindexed" in err.value.message
    assert full_check(svc)[0] != []  # stale rows until the purge
    reindex_all(svc)
    assert full_check(svc)[0] == []
    with pytest.raises(FhirError) as err:
        ids(svc, [("birthplace", "lund")])
    assert "unknown" in err.value.message


def test_deleting_the_search_parameter_removes_it(svc: Services) -> None:
    load(svc, ["Uppsala"])
    update.update(svc, "SearchParameter", "birthplace", birthplace_sp())
    reindex_all(svc)
    delete.delete(svc, "SearchParameter", "birthplace")
    reindex_all(svc)
    assert full_check(svc)[0] == []
    assert svc.searchable(force=True).get("Patient", "birthplace") is None


def test_a_second_process_registry_picks_up_the_parameter(backend: str, tmp_path: Path,
                                                           request: pytest.FixtureRequest, svc: Services) -> None:
    other = Services(svc.repo, svc.registry, None, svc.settings, LiveParams(svc.repo, interval=3600))
    assert other.registry.get("Patient", "birthplace") is None
    made = load(svc, ["Lund", "Visby"])
    update.update(svc, "SearchParameter", "birthplace", birthplace_sp())
    # the long interval does not matter: an unknown parameter forces a generation check
    with pytest.raises(FhirError) as err:
        ids(other, [("birthplace", "lund")])
    assert "being reindexed" in err.value.message
    reindex_all(svc)
    assert ids(other, [("birthplace", "lund")]) == {i for i, c in made.items() if c == "Lund"}
    # writes through the other process index the parameter: checked inside the write's transaction
    r = create.create(other, "Patient", patient("Lund"))
    assert r.version is not None and r.version.id in ids(svc, [("birthplace", "lund")])


def test_two_search_parameters_may_not_share_a_url(svc: Services) -> None:
    update.update(svc, "SearchParameter", "birthplace", birthplace_sp())
    twin = birthplace_sp() | {"id": "twin"}
    with pytest.raises(FhirError) as err:
        update.update(svc, "SearchParameter", "twin", twin)
    assert err.value.category is Category.CONFLICT
