"""Token search semantics: code, system|code, |code, system|; Identifier, ContactPoint, boolean, code;
:not, :text, :of-type and :missing.

https://hl7.org/fhir/R4/search.html#token -- `:not` also matches resources with no value at all;
`:of-type` takes `type-system|type-code|value` of an Identifier.
"""

from __future__ import annotations

import pytest

from support.semantics import Seeded

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@pytest.fixture(scope="module")
def db(store: Seeded) -> Seeded:
    store.put(
        {"resourceType": "Patient", "id": "a", "gender": "female", "active": True,
         "identifier": [{"system": "urn:sys:a", "value": "123",
                         "type": {"coding": [{"system": V2, "code": "MR"}], "text": "Medical record number"}}],
         "telecom": [{"system": "phone", "value": "0812345"}]},
        {"resourceType": "Patient", "id": "b", "gender": "male", "active": False,
         "identifier": [{"system": "urn:sys:b", "value": "123"}], "telecom": [{"system": "email", "value": "b@x.se"}]},
        {"resourceType": "Patient", "id": "c", "gender": "female", "identifier": [{"value": "123"}]},
        {"resourceType": "Patient", "id": "d"},
        {"resourceType": "Patient", "id": "e", "gender": "other",
         "identifier": [{"system": "urn:pnr", "value": "191212121212",
                         "type": {"coding": [{"system": V2, "code": "SB"}]}}]},
    )
    return store


@pytest.mark.parametrize(("query", "expected"), [
    ("identifier=123", {"a", "b", "c"}),
    ("identifier=urn:sys:a|123", {"a"}),
    ("identifier=|123", {"c"}),
    ("identifier=urn:sys:b|", {"b"}),
    ("identifier=urn:sys:a|999", set()),
    ("identifier=urn:sys:a|123,urn:sys:b|123", {"a", "b"}),
    ("identifier=123&gender=female", {"a", "c"}),
    ("gender=female", {"a", "c"}),
    ("gender=FEMALE", set()),
    ("active=true", {"a"}),
    ("active=false", {"b"}),
    ("telecom=0812345", {"a"}),
    ("email=b@x.se", {"b"}),
    ("phone=b@x.se", set()),
    ("_id=a,e", {"a", "e"}),
])
def test_token_code_and_system_forms(db: Seeded, query: str, expected: set[str]) -> None:
    """code alone matches any system; |code only system-less values; system| any code of that system."""
    assert db.ids("Patient", query) == expected


@pytest.mark.parametrize(("query", "expected"), [
    ("gender:not=female", {"b", "d", "e"}),
    ("gender:not=female,male", {"d", "e"}),
    ("identifier:not=urn:sys:a|123", {"b", "c", "d", "e"}),
    ("_id:not=a", {"b", "c", "d", "e"}),
    ("active:missing=true", {"c", "d", "e"}),
    ("active:missing=false", {"a", "b"}),
    ("identifier:missing=true", {"d"}),
    ("identifier:text=medical", {"a"}),
    ("identifier:text=record", set()),
    (f"identifier:of-type={V2}|MR|123", {"a"}),
    (f"identifier:of-type={V2}|MR|999", set()),
    (f"identifier:of-type={V2}|SB|191212121212", {"e"}),
    (f"identifier:of-type={V2}|SB|123", set()),
])
def test_token_modifiers(db: Seeded, query: str, expected: set[str]) -> None:
    """:not includes resources with no value, :text searches type text, :of-type the Identifier type."""
    assert db.ids("Patient", query) == expected


def test_of_type_rows_do_not_leak_into_plain_identifier_searches(db: Seeded) -> None:
    """The :of-type index rows never match a system|value search for the type's system."""
    assert db.ids("Patient", f"identifier={V2}|") == set()
    assert db.ids("Patient", f"identifier={V2}|MR") == set()


@pytest.mark.parametrize("query", ["identifier:of-type=MR|123", "identifier:of-type=a|b|c|d",
                                   f"identifier:of-type={V2}||123", "gender:exact=female", "gender:contains=f",
                                   "identifier:below=123"])
def test_bad_token_modifier_values_are_rejected(db: Seeded, query: str) -> None:
    """An :of-type value without three parts, or a string modifier on a token, is a 400."""
    assert db.error("Patient", query).issues[0].expression == query.split("=")[0]
