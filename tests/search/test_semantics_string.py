"""String search semantics: accent- and case-insensitive starts-with, :exact, :contains, Swedish letters.

https://hl7.org/fhir/R4/search.html#string -- by default a string matches when the target starts with
the value, ignoring case and accents (so `ostlund` finds Östlund and `Å` finds Åsa).
"""

from __future__ import annotations

import pytest

from support.semantics import Seeded


@pytest.fixture(scope="module")
def db(store: Seeded) -> Seeded:
    def p(id_: str, family: str, *given: str) -> dict[str, object]:
        return {"resourceType": "Patient", "id": id_, "name": [{"family": family, "given": list(given)}]}

    store.put(
        p("ostlund", "Östlund", "Åsa"), p("asplund", "Asplund", "Anders"), p("oberg", "Öberg", "Örjan"),
        p("smith", "Smith", "John"), p("vander", "van der Berg", "Lise"), p("pct", "100%_Sure", "Eve"),
        {"resourceType": "Patient", "id": "nameless"},
    )
    return store


@pytest.mark.parametrize(("query", "expected"), [
    ("name=ostlund", {"ostlund"}),
    ("name=ÖSTLUND", {"ostlund"}),
    ("name=Å", {"ostlund", "asplund"}),
    ("name=ö", {"ostlund", "oberg"}),
    ("given=asa", {"ostlund"}),
    ("family=van", {"vander"}),
    ("family=der", set()),
    ("family=van der", {"vander"}),
    ("name=smith,oberg", {"smith", "oberg"}),
    ("given=John&family=Smith", {"smith"}),
    ("given=John&family=Öberg", set()),
    ("name=100%_", {"pct"}),
    ("name=1%", set()),
])
def test_string_default_is_accent_and_case_insensitive_starts_with(db: Seeded, query: str, expected: set[str]) -> None:
    """The default string match ignores case and diacritics and anchors at the start."""
    assert db.ids("Patient", query) == expected


@pytest.mark.parametrize(("query", "expected"), [
    ("name:exact=Östlund", {"ostlund"}),
    ("name:exact=östlund", set()),
    ("name:exact=Ostlund", set()),
    ("name:exact=Östl", set()),
    ("family:exact=van der Berg", {"vander"}),
    ("name:contains=lund", {"ostlund", "asplund"}),
    ("name:contains=BER", {"oberg", "vander"}),
    ("family:contains=der", {"vander"}),
    ("name:contains=%_", {"pct"}),
    ("name:contains=_", {"pct"}),
    ("name:contains=rj", {"oberg"}),
])
def test_string_exact_and_contains(db: Seeded, query: str, expected: set[str]) -> None:
    """:exact compares the whole string case- and accent-sensitively; :contains matches anywhere."""
    assert db.ids("Patient", query) == expected


def test_string_missing(db: Seeded) -> None:
    """:missing=true finds the Patient without a name."""
    assert db.ids("Patient", "name:missing=true") == {"nameless"}
    assert "nameless" not in db.ids("Patient", "name:missing=false")


@pytest.mark.parametrize("query", ["name:below=x", "name:text=x", "name:foo=x"])
def test_unknown_string_modifiers_are_rejected(db: Seeded, query: str) -> None:
    """A modifier strings do not have is a 400 naming the parameter."""
    assert db.error("Patient", query).issues[0].expression == query.split("=")[0]
