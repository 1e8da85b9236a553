"""Token :in, :not-in, :above and :below against value sets and code systems, shipped and stored.

https://hl7.org/fhir/R4/search.html#token -- `:in` matches codes in the ValueSet's expansion (built here
from compose: concepts, whole code systems, is-a filters, imports, excludes); `:below`/`:above` follow
the code system's hierarchy, and are an exact match when the hierarchy is unknown (SNOMED CT here).
"""

from __future__ import annotations

from typing import Any

import pytest

from support.semantics import Seeded

VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
SCT = "http://snomed.info/sct"


def _cond(id_: str, status: str | None = None, code: tuple[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Condition", "id": id_, "subject": {"reference": "Patient/x"}}
    if status:
        body["verificationStatus"] = {"coding": [{"system": VER, "code": status}]}
    if code:
        body["code"] = {"coding": [{"system": code[0], "code": code[1]}]}
    return body


@pytest.fixture(scope="module")
def db(store: Seeded) -> Seeded:
    store.put(
        _cond("unconf", "unconfirmed"), _cond("prov", "provisional"), _cond("diff", "differential"),
        _cond("conf", "confirmed"), _cond("none"), _cond("diabetes", code=(SCT, "44054006")),
        _cond("asthma", code=(SCT, "195967001")), _cond("a1", code=("urn:cs:local", "A1")),
        _cond("a11", code=("urn:cs:local", "A11")), _cond("b", code=("urn:cs:local", "B")),
        {"resourceType": "CodeSystem", "id": "local", "url": "urn:cs:local", "status": "active",
         "content": "complete", "concept": [
             {"code": "A", "concept": [{"code": "A1", "concept": [{"code": "A11"}]}]}, {"code": "B"}]},
        {"resourceType": "ValueSet", "id": "unsure", "url": "urn:vs:unsure", "status": "active",
         "compose": {"include": [{"system": VER, "filter": [
             {"property": "concept", "op": "is-a", "value": "unconfirmed"}]}]}},
        {"resourceType": "ValueSet", "id": "listed", "url": "urn:vs:listed", "status": "active",
         "compose": {"include": [{"system": VER, "concept": [{"code": "confirmed"}, {"code": "refuted"}]}]}},
        {"resourceType": "ValueSet", "id": "imported", "url": "urn:vs:imported", "status": "active",
         "compose": {"include": [{"valueSet": ["urn:vs:listed"]}]}},
        {"resourceType": "ValueSet", "id": "snomed", "url": "urn:vs:snomed-but-asthma", "status": "active",
         "compose": {"include": [{"system": SCT}], "exclude": [{"system": SCT, "concept": [{"code": "195967001"}]}]}},
        {"resourceType": "ValueSet", "id": "local-a", "url": "urn:vs:local-below-a", "status": "active",
         "compose": {"include": [{"system": "urn:cs:local",
                                  "filter": [{"property": "concept", "op": "descendent-of", "value": "A"}]}]}},
        {"resourceType": "ValueSet", "id": "expanded", "url": "urn:vs:expanded", "status": "active",
         "expansion": {"timestamp": "2024-01-01", "contains": [{"system": "urn:cs:local", "code": "B"}]}},
    )
    return store


@pytest.mark.parametrize(("query", "expected"), [
    (f"verification-status:below={VER}|unconfirmed", {"unconf", "prov", "diff"}),
    (f"verification-status:below={VER}|confirmed", {"conf"}),
    (f"verification-status:above={VER}|provisional", {"prov", "unconf"}),
    ("code:below=urn:cs:local|A", {"a1", "a11"}),
    ("code:below=urn:cs:local|A1", {"a1", "a11"}),
    ("code:above=urn:cs:local|A11", {"a1", "a11"}),
    ("code:above=urn:cs:local|A1", {"a1"}),
    ("code:below=urn:cs:local|B", {"b"}),
    (f"code:below={SCT}|44054006", {"diabetes"}),
    (f"code:above={SCT}|44054006", {"diabetes"}),
])
def test_above_and_below_follow_the_code_system_hierarchy(db: Seeded, query: str, expected: set[str]) -> None:
    """Shipped (condition-ver-status) and stored (urn:cs:local) hierarchies; SNOMED is an exact match."""
    assert db.ids("Condition", query) == expected


@pytest.mark.parametrize(("query", "expected"), [
    ("verification-status:in=http://hl7.org/fhir/ValueSet/condition-ver-status", {"unconf", "prov", "diff", "conf"}),
    ("verification-status:not-in=http://hl7.org/fhir/ValueSet/condition-ver-status",
     {"none", "diabetes", "asthma", "a1", "a11", "b"}),
    ("verification-status:in=urn:vs:unsure", {"unconf", "prov", "diff"}),
    ("verification-status:in=urn:vs:listed", {"conf"}),
    ("verification-status:in=urn:vs:imported", {"conf"}),
    ("verification-status:in=urn:vs:listed,urn:vs:unsure", {"conf", "unconf", "prov", "diff"}),
    ("code:in=urn:vs:snomed-but-asthma", {"diabetes"}),
    ("code:in=urn:vs:local-below-a", {"a1", "a11"}),
    ("code:in=urn:vs:expanded", {"b"}),
    ("code:not-in=urn:vs:local-below-a", {"unconf", "prov", "diff", "conf", "none", "diabetes", "asthma", "b"}),
])
def test_in_and_not_in_expand_value_sets(db: Seeded, query: str, expected: set[str]) -> None:
    """:in matches codes of the expansion; :not-in everything else, including resources without the code."""
    assert db.ids("Condition", query) == expected


def test_in_on_a_code_element_without_system(store: Seeded) -> None:
    """Patient.gender is a code (no system in the index): :in administrative-gender still finds it."""
    store.put({"resourceType": "Patient", "id": "g-f", "gender": "female"}, {"resourceType": "Patient", "id": "g-n"})
    assert store.ids("Patient", "gender:in=http://hl7.org/fhir/ValueSet/administrative-gender") == {"g-f"}
    assert store.ids("Patient", "gender:not-in=http://hl7.org/fhir/ValueSet/administrative-gender") == {"g-n"}


@pytest.mark.parametrize("query", ["code:in=urn:vs:nope", "code:below=44054006", "code:above=|A1"])
def test_unknown_value_sets_and_codes_without_system_are_rejected(db: Seeded, query: str) -> None:
    """An unknown ValueSet, or :above/:below without system|code, is a 400 naming the parameter."""
    assert db.error("Condition", query).issues[0].expression == query.split("=")[0]
