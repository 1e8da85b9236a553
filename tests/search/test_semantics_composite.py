"""Composite search semantics: code-value-quantity, code-value-concept, component and combo variants.

https://hl7.org/fhir/R4/search.html#composite -- `token$value`: both components must match the same
Observation (or the same component); the value component uses its own type's rules and prefixes.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.semantics import Seeded

LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"


def _code(code: str) -> dict[str, Any]:
    return {"coding": [{"system": LOINC, "code": code}]}


def _mmhg(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}


@pytest.fixture(scope="module")
def db(store: Seeded) -> Seeded:
    base = {"resourceType": "Observation", "status": "final"}
    store.put(
        {**base, "id": "sys120", "code": _code("8480-6"), "valueQuantity": _mmhg(120)},
        {**base, "id": "sys95", "code": _code("8480-6"), "valueQuantity": _mmhg(95)},
        {**base, "id": "pulse", "code": _code("8867-4"),
         "valueQuantity": {"value": 72, "unit": "/min", "system": UCUM, "code": "/min"}},
        {**base, "id": "panel", "code": _code("85354-9"), "component": [
            {"code": _code("8480-6"), "valueQuantity": _mmhg(140)},
            {"code": _code("8462-4"), "valueQuantity": _mmhg(90)}]},
        {**base, "id": "smoker", "code": _code("72166-2"),
         "valueCodeableConcept": {"coding": [{"system": SCT, "code": "266919005"}]}},
    )
    return store


@pytest.mark.parametrize(("query", "expected"), [
    (f"code-value-quantity={LOINC}|8480-6$gt100", {"sys120"}),
    ("code-value-quantity=8480-6$lt100", {"sys95"}),
    (f"code-value-quantity={LOINC}|8480-6$gt100|{UCUM}|mm[Hg]", {"sys120"}),
    (f"code-value-quantity={LOINC}|8480-6$gt100||/min", set()),
    (f"code-value-quantity={LOINC}|8867-4$72", {"pulse"}),
    (f"code-value-quantity={LOINC}|8867-4$120", set()),
    (f"code-value-quantity={LOINC}|8480-6$gt100,{LOINC}|8867-4$72", {"sys120", "pulse"}),
    (f"component-code-value-quantity={LOINC}|8480-6$gt130", {"panel"}),
    (f"component-code-value-quantity={LOINC}|8462-4$gt130", set()),
    (f"combo-code-value-quantity={LOINC}|8480-6$gt100", {"sys120", "panel"}),
    (f"code-value-concept={LOINC}|72166-2${SCT}|266919005", {"smoker"}),
    (f"code-value-concept={LOINC}|72166-2$266919005", {"smoker"}),
    (f"code-value-concept={LOINC}|72166-2$8517006", set()),
    ("code-value-quantity:missing=true", {"panel", "smoker"}),
])
def test_composite_components_match_together(db: Seeded, query: str, expected: set[str]) -> None:
    """The token and the value must both match, on the same element."""
    assert db.ids("Observation", query) == expected


def test_composite_and_across_repeats(db: Seeded) -> None:
    """Two composite criteria on combo must both hold (the panel has both components)."""
    q = f"combo-code-value-quantity={LOINC}|8480-6$gt130&combo-code-value-quantity={LOINC}|8462-4$lt100"
    assert db.ids("Observation", q) == {"panel"}


@pytest.mark.parametrize("value", ["8480-6", "a$b$c", "8480-6$gtabc", "$5", "8480-6$", "8480-6$5|x"])
def test_malformed_composites_are_rejected_naming_the_parameter(db: Seeded, value: str) -> None:
    """A value that is not token$value (with a valid value) is a 400 naming the parameter."""
    assert db.error("Observation", f"code-value-quantity={value}").issues[0].expression == "code-value-quantity"
