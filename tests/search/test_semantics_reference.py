"""Reference and uri search semantics: id, Type/id, absolute URL, :[type], :identifier, chains, :missing;
uri exact, :above, :below.

https://hl7.org/fhir/R4/search.html#reference and #uri
"""

from __future__ import annotations

from typing import Any

import pytest

from support.semantics import Seeded


def _obs(id_: str, subject: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Observation", "id": id_, "status": "final", "code": {"text": "x"}}
    if subject is not None:
        body["subject"] = subject
    return body


def _vs(id_: str, url: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "ValueSet", "id": id_, "status": "active"}
    if url:
        body["url"] = url
    return body


@pytest.fixture(scope="module")
def db(store: Seeded) -> Seeded:
    store.put(
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Öberg"}]},
        {"resourceType": "Patient", "id": "p2", "name": [{"family": "Smith"}]},
        _obs("r-p1", {"reference": "Patient/p1"}), _obs("r-p2", {"reference": "Patient/p2/_history/3"}),
        _obs("r-abs", {"reference": "https://other.example/fhir/Patient/p1"}),
        _obs("r-group", {"reference": "Group/g1"}),
        _obs("r-ident", {"identifier": {"system": "urn:pnr", "value": "191212121212"}}), _obs("r-none"),
        _vs("u1", "http://acme.org/fhir/ValueSet/123"), _vs("u2", "http://acme.org/fhir/ValueSet/123/sub"),
        _vs("u3", "http://acme.org/fhir/ValueSetX"), _vs("u4", "urn:oid:1.2.3"), _vs("u5", "http://acme.org/fhir"),
        _vs("u6", None),
    )
    return store


@pytest.mark.parametrize(("query", "expected"), [
    ("subject=Patient/p1", {"r-p1"}),
    ("subject=p1", {"r-p1"}),
    ("subject=Patient/p2", {"r-p2"}),
    ("subject=Patient/p2/_history/3", {"r-p2"}),
    ("subject=https://other.example/fhir/Patient/p1", {"r-abs"}),
    ("subject:Patient=p1", {"r-p1"}),
    ("subject:Group=g1", {"r-group"}),
    ("subject:Patient=g1", set()),
    ("subject=Patient/p1,Group/g1", {"r-p1", "r-group"}),
    ("patient=p1", {"r-p1"}),
    ("subject:identifier=urn:pnr|191212121212", {"r-ident"}),
    ("subject:identifier=urn:pnr|1", set()),
    ("subject:missing=true", {"r-none"}),
    ("subject:missing=false", {"r-p1", "r-p2", "r-abs", "r-group", "r-ident"}),
    ("subject:Patient.name=oberg", {"r-p1"}),
    ("subject:Patient.name=smith&subject=Patient/p2", {"r-p2"}),
    ("subject.name=smi", {"r-p2"}),
])
def test_reference_forms(db: Seeded, query: str, expected: set[str]) -> None:
    """id, Type/id (history ignored), absolute URLs, type modifiers, identifiers, chains and :missing."""
    assert db.ids("Observation", query) == expected


@pytest.mark.parametrize("query", ["subject:Foo=1", "subject:Medication=1", "subject=Patient/"])
def test_bad_reference_values_are_rejected(db: Seeded, query: str) -> None:
    """A type modifier that is no target type, or an empty id, is a 400 naming the parameter."""
    assert db.error("Observation", query).issues[0].expression == query.split("=")[0]


@pytest.mark.parametrize(("query", "expected"), [
    ("url=http://acme.org/fhir/ValueSet/123", {"u1"}),
    ("url=http://acme.org/fhir/valueset/123", set()),
    ("url=http://acme.org/fhir/ValueSet", set()),
    ("url:below=http://acme.org/fhir/ValueSet", {"u1", "u2"}),
    ("url:below=http://acme.org/fhir", {"u1", "u2", "u3", "u5"}),
    ("url:below=http://acme.org/fhir/", {"u1", "u2", "u3", "u5"}),
    ("url:above=http://acme.org/fhir/ValueSet/123/sub/more", {"u1", "u2", "u5"}),
    ("url:above=http://acme.org/fhir/ValueSet/123", {"u1", "u5"}),
    ("url=urn:oid:1.2.3", {"u4"}),
    ("url:missing=true", {"u6"}),
])
def test_uri_exact_above_below(db: Seeded, query: str, expected: set[str]) -> None:
    """uri: exact and case-sensitive; :below on path boundaries; :above the uri and its parent paths."""
    assert db.ids("ValueSet", query) == expected
