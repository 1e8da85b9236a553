"""The PDL policy in-process on both backends: the bound-list and the subquery form of the care-relationship
filter select the same rows (the subquery is what a unit with more than `pdl.MAX_BOUND` patients gets)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from pdlkit import (
    DOCTOR,
    ORTO,
    OTHER_PROVIDER,
    OTHER_UNIT,
    RECORDED_AT_PROVIDER,
    VC,
    consent,
    encounter,
    observation,
    org,
    patient,
)

from samverka.auth.access import Access, Need
from samverka.config import Settings
from samverka.errors import Category, FhirError
from samverka.generate.region import build_region
from samverka.interactions import search, transaction
from samverka.interactions.context import Services
from samverka.search.params import Registry
from samverka.store.base import Repository


def _services(repo: Repository) -> Services:
    return Services(repo, Registry.default(), None, Settings(data_dir=Path("unused")))


def _ids(svc: Services, type_: str, pairs: list[tuple[str, str]]) -> list[str]:
    bundle = search.search(svc, "http://x/fhir", type_, pairs).resource
    assert bundle is not None
    return sorted(e["fullUrl"].rsplit("/", 1)[1] for e in bundle.get("entry", []) if e["search"]["mode"] == "match")


def test_bound_and_subquery_relationship_filters_agree(repo: Repository) -> None:
    svc = _services(repo)
    resources: list[dict[str, Any]] = [
        patient("a"), encounter("a-enc", "a", VC.id), observation("a-obs", "a", "a-enc"),
        patient("b"), encounter("b-enc", "b", ORTO.id), observation("b-obs", "b", "b-enc"),
        patient("e"), {"resourceType": "EpisodeOfCare", "id": "e-eoc", "status": "active",
                       "patient": {"reference": "Patient/e"}, "managingOrganization": org(VC.id)},
        patient("g"), encounter("g-own", "g", VC.id), observation("g-obs-own", "g", "g-own"),
        encounter("g-orto", "g", ORTO.id), observation("g-obs-orto", "g", "g-orto"),
        consent("g-block", "g", "deny", [ORTO.id]),
    ]
    entries = [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
               for r in [*[e["resource"] for e in build_region().bundle["entry"]], *resources]]
    transaction.transaction(svc, "http://x/fhir", {"resourceType": "Bundle", "type": "transaction",
                                                   "entry": entries}, False)
    access = Access.from_claims({"client_id": "c", "scope": "user/*.rs", "user_hsa_id": DOCTOR.id,
                                 "fhirUser": f"Practitioner/{DOCTOR.id}", "care_unit": VC.id,
                                 "care_provider": build_region().provider_id,
                                 "practitioner_role": f"PractitionerRole/{DOCTOR.role_id}"})
    access.attach_pdl(svc)
    assert access.policy is not None and access.policy.reachable_ids == {"a", "e", "g"}
    bound = access.services(svc)
    access.policy = dataclasses.replace(access.policy, reachable_ids=None)
    subquery = access.services(svc)
    for type_, pairs, expected in [("Patient", [], ["a", "e", "g"]),
                                   ("Observation", [], ["a-obs", "g-obs-own"]),
                                   ("Encounter", [("_total", "accurate")], ["a-enc", "g-own"])]:
        assert _ids(bound, type_, pairs) == expected
        assert _ids(subquery, type_, pairs) == expected


def _put(svc: Services, resources: list[dict[str, Any]]) -> None:
    entries = [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
               for r in resources]
    transaction.transaction(svc, "http://x/fhir", {"resourceType": "Bundle", "type": "transaction",
                                                   "entry": entries}, False)


def _doctor(svc: Services) -> Access:
    access = Access.from_claims({"client_id": "c", "scope": "user/*.rs", "user_hsa_id": DOCTOR.id,
                                 "fhirUser": f"Practitioner/{DOCTOR.id}", "care_unit": VC.id,
                                 "care_provider": build_region().provider_id,
                                 "practitioner_role": f"PractitionerRole/{DOCTOR.role_id}"})
    access.attach_pdl(svc)
    return access


def test_without_other_providers_organisations_the_stamps_alone_decide_until_one_is_written(
        repo: Repository) -> None:
    """`Policy.foreign_orgs`: while no Encounter or EpisodeOfCare names another provider's organisation, the
    policy skips the walk from each row to its Encounter's service provider; the next policy after such a
    write walks again, so another provider's Encounter and what is recorded under it are hidden at once."""
    svc = _services(repo)
    other = {"resourceType": "Organization", "id": OTHER_UNIT, "name": "Privat klinik",
             "identifier": [{"system": "urn:oid:1.2.752.29.4.19", "value": OTHER_UNIT}]}
    stamped = {**observation("s-obs-stamped", "s", None), "meta": {"tag": [
        {"system": RECORDED_AT_PROVIDER, "code": OTHER_PROVIDER}]}}
    _put(svc, [*[e["resource"] for e in build_region().bundle["entry"]], other,
               patient("s"), encounter("s-enc", "s", VC.id), observation("s-obs", "s", "s-enc"), stamped])
    first = _doctor(svc)
    assert first.policy is not None and first.policy.foreign_orgs is False
    walked = dataclasses.replace(first.policy, foreign_orgs=True, _memo={})
    fast, full = first.services(svc), dataclasses.replace(first, policy=walked).services(svc)
    assert "idx_reference w" not in fast.access_filters[-1][0] and "idx_reference w" in full.access_filters[-1][0]
    for view in (fast, full):  # the same answers either way; another provider's stamp still hides its row
        assert _ids(view, "Observation", [("patient", "s")]) == ["s-obs"]
        assert _ids(view, "Encounter", [("patient", "s")]) == ["s-enc"]
    _put(svc, [encounter("s-enc-private", "s", OTHER_UNIT), observation("s-obs-private", "s", "s-enc-private")])
    second = _doctor(svc)
    assert second.policy is not None and second.policy.foreign_orgs is True
    view = second.services(svc)
    assert _ids(view, "Observation", [("patient", "s")]) == ["s-obs"]
    assert _ids(view, "Encounter", [("patient", "s")]) == ["s-enc"]


def test_a_stamp_of_another_provider_written_after_the_policy_hides_its_row_at_once(repo: Repository) -> None:
    """`Policy.stamps_before` (SQLite): no row up to the policy's mark carried another provider's stamp, so
    only rows written since are looked up; an Observation written with such a stamp does not rebuild the
    policy (nothing it is built from changed), yet the very next search and read leave it out."""
    svc = _services(repo)
    _put(svc, [*[e["resource"] for e in build_region().bundle["entry"]],
               patient("t"), encounter("t-enc", "t", VC.id), observation("t-obs", "t", "t-enc")])
    first = _doctor(svc)
    assert first.policy is not None
    if repo.dialect == "sqlite":
        assert first.policy.stamps_before is not None
    else:
        assert first.policy.stamps_before is None  # PostgreSQL's seq is not commit order: always looked up
    stamped = {**observation("t-obs-private", "t", "t-enc"), "meta": {"tag": [
        {"system": RECORDED_AT_PROVIDER, "code": OTHER_PROVIDER}]}}
    own = {**observation("t-obs-own", "t", "t-enc"), "meta": {"tag": [
        {"system": RECORDED_AT_PROVIDER, "code": build_region().provider_id}]}}
    _put(svc, [stamped, own])
    second = _doctor(svc)
    assert second.policy is first.policy  # the cached policy, built before the stamped row was written
    view = second.services(svc)
    assert _ids(view, "Observation", [("patient", "t")]) == ["t-obs", "t-obs-own"]
    with pytest.raises(FhirError) as refused:
        second.require(Need("r", "Observation", "t-obs-private"), repo)
    assert refused.value.category == Category.FORBIDDEN
    second.require(Need("r", "Observation", "t-obs-own"), repo)
    # a policy built now sees the stamp in the index and looks every row up
    from samverka.auth import pdl

    assert pdl._stamps_before(repo, svc.registry, build_region().provider_id) is None
