"""Quantity search semantics: number|system|code, number||code, prefixes, :missing.

https://hl7.org/fhir/R4/search.html#quantity -- the number follows the number rules; the unit matches
Quantity.code (or Quantity.unit when there is no code) and the system Quantity.system.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.semantics import Seeded

UCUM = "http://unitsofmeasure.org"


def _obs(id_: str, **value: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": id_, "status": "final", "code": {"text": "x"}, **value}


@pytest.fixture(scope="module")
def db(store: Seeded) -> Seeded:
    store.put(
        _obs("mg", valueQuantity={"value": 5.4, "unit": "mg", "system": UCUM, "code": "mg"}),
        _obs("mg-unit-only", valueQuantity={"value": 5.4, "unit": "mg"}),
        _obs("g", valueQuantity={"value": 0.0054, "unit": "g", "system": UCUM, "code": "g"}),
        _obs("bp120", valueQuantity={"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}),
        _obs("bp130", valueQuantity={"value": 130, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}),
        _obs("text", valueString="high"),
    )
    return store


@pytest.mark.parametrize(("query", "expected"), [
    (f"value-quantity=5.4|{UCUM}|mg", {"mg"}),
    ("value-quantity=5.4||mg", {"mg", "mg-unit-only"}),
    ("value-quantity=5.4", {"mg", "mg-unit-only"}),
    (f"value-quantity=5.4|{UCUM}|g", set()),
    (f"value-quantity=gt100|{UCUM}|mm[Hg]", {"bp120", "bp130"}),
    ("value-quantity=gt120||mm[Hg]", {"bp130"}),
    ("value-quantity=ge120||mm[Hg]", {"bp120", "bp130"}),
    ("value-quantity=le120", {"mg", "mg-unit-only", "g", "bp120"}),
    ("value-quantity=lt1", {"g"}),
    ("value-quantity=ne5.4||mg", set()),
    ("value-quantity=ne120||mm[Hg]", {"bp130"}),
    ("value-quantity=ap125||mm[Hg]", {"bp120", "bp130"}),
    ("value-quantity=0.0054|http://unitsofmeasure.org|g,130||mm[Hg]", {"g", "bp130"}),
])
def test_quantity_number_system_and_code(db: Seeded, query: str, expected: set[str]) -> None:
    """The number, the optional system and the optional code must all match."""
    assert db.ids("Observation", query) == expected


def test_quantity_and_across_repeats(db: Seeded) -> None:
    """Two quantity criteria on one parameter are both required."""
    assert db.ids("Observation", "value-quantity=gt100&value-quantity=lt125") == {"bp120"}


def test_quantity_missing(db: Seeded) -> None:
    """:missing=true finds the Observation whose value is a string."""
    assert db.ids("Observation", "value-quantity:missing=true") == {"text"}
    assert db.ids("Observation", "value-quantity:missing=false") == {"mg", "mg-unit-only", "g", "bp120", "bp130"}


@pytest.mark.parametrize("value", ["abc", "5.4|a", "5.4|a|b|c", "abc|s|c", "gt|s|c", "1e99999999||mg"])
def test_malformed_quantities_are_rejected_naming_the_parameter(db: Seeded, value: str) -> None:
    """A value that is not number[|system|code] is a 400 with the parameter as expression."""
    assert db.error("Observation", f"value-quantity={value}").issues[0].expression == "value-quantity"
