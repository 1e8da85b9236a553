"""Date search semantics: implicit ranges by precision, Period, Timing, time zones and every prefix.

https://hl7.org/fhir/R4/search.html#date -- a value stands for the whole range of its precision; the
prefixes follow the spec's range table (eq: the search range contains the target range; gt: the range
above the search value overlaps the target; ge: gt or eq; sa/eb: wholly after/before).
"""

from __future__ import annotations

import pytest

from support.semantics import Seeded


def _obs(id_: str, **effective: object) -> dict[str, object]:
    return {"resourceType": "Observation", "id": id_, "status": "final", "code": {"text": "x"}, **effective}


@pytest.fixture(scope="module")
def db(store: Seeded) -> Seeded:
    store.put(
        _obs("y1990", effectiveDateTime="1990-06-15"),
        _obs("y2012", effectiveDateTime="2012"),
        _obs("jan", effectiveDateTime="2013-01"),
        _obs("jan14", effectiveDateTime="2013-01-14"),
        _obs("jan14t", effectiveDateTime="2013-01-14T10:00:00Z"),
        _obs("instant", effectiveInstant="2013-01-14T10:00:00.5Z"),
        _obs("jan31last", effectiveDateTime="2013-01-31T23:59:59.999Z"),
        _obs("febtz", effectiveDateTime="2013-02-01T00:30:00+01:00"),  # 2013-01-31T23:30Z
        _obs("feb1", effectiveDateTime="2013-02-01T00:00:00Z"),
        _obs("open", effectivePeriod={"start": "2013-01-10"}),
        _obs("period", effectivePeriod={"start": "2013-01-10", "end": "2013-01-20"}),
        _obs("to14", effectivePeriod={"start": "2013-01-10", "end": "2013-01-14"}),
        _obs("timing", effectiveTiming={"event": ["2014-06-01"]}),
        _obs("bounds", effectiveTiming={"repeat": {"boundsPeriod": {"start": "2015-03-02", "end": "2015-03-09"}}}),
        _obs("none"),
    )
    return store


ALL = {"y1990", "y2012", "jan", "jan14", "jan14t", "instant", "jan31last", "febtz", "feb1", "open", "period",
       "to14", "timing", "bounds"}


@pytest.mark.parametrize(("query", "expected"), [
    ("date=2013-01", {"jan", "jan14", "jan14t", "instant", "jan31last", "febtz", "period", "to14"}),
    ("date=eq2013-01-14", {"jan14", "jan14t", "instant"}),
    ("date=2013-01-14T10:00:00Z", {"jan14t", "instant"}),
    ("date=2013-01-14T11:00:00%2B01:00", {"jan14t", "instant"}),
    ("date=2013-01-14T10:00Z", {"jan14t", "instant"}),
    ("date=2013-01-31", {"jan31last", "febtz"}),
    ("date=2013-02-01", {"feb1"}),
    ("date=2013-02", {"feb1"}),
    ("date=2015-03", {"bounds"}),
    ("date=2014", {"timing"}),
    ("date=2012,2013-02", {"y2012", "feb1"}),
])
def test_date_equality_means_the_search_range_contains_the_target(db: Seeded, query: str, expected: set[str]) -> None:
    """eq (the default) matches targets wholly inside the search value's implicit range, across offsets."""
    assert db.ids("Observation", query) == expected


@pytest.mark.parametrize(("query", "expected"), [
    ("date=gt2013-01-14", {"jan", "jan31last", "febtz", "feb1", "open", "period", "timing", "bounds"}),
    ("date=ge2013-01-14", {"jan", "jan14", "jan14t", "instant", "jan31last", "febtz", "feb1", "open", "period",
                           "timing", "bounds"}),
    ("date=lt2013-01-14", {"y1990", "y2012", "jan", "open", "period", "to14"}),
    ("date=le2013-01-14", {"y1990", "y2012", "jan", "open", "period", "to14", "jan14", "jan14t", "instant"}),
    ("date=sa2013-01-14", {"jan31last", "febtz", "feb1", "timing", "bounds"}),
    ("date=eb2013-01-14", {"y1990", "y2012"}),
    ("date=ne2013-01", {"y1990", "y2012", "feb1", "open", "timing", "bounds"}),
    ("date=gt2013-01-31T23:59:59.999Z", {"feb1", "open", "timing", "bounds"}),
    ("date=lt2013-02-01T00:00:00Z", {"y1990", "y2012", "jan", "jan14", "jan14t", "instant", "jan31last", "febtz",
                                     "open", "period", "to14"}),
])
def test_date_prefixes_follow_the_spec_range_table(db: Seeded, query: str, expected: set[str]) -> None:
    """gt/ge/lt/le/sa/eb/ne compare the search range with target ranges as the R4 prefix table says."""
    assert db.ids("Observation", query) == expected


def test_repeated_date_parameters_are_anded(db: Seeded) -> None:
    """date=ge..&date=le.. keeps the targets that satisfy both."""
    assert db.ids("Observation", "date=ge2013-01-14&date=le2013-01-20") == {
        "jan", "jan14", "jan14t", "instant", "open", "period"}


def test_approximate_date_matches_near_values_only(db: Seeded) -> None:
    """ap widens by 10% of the gap to now: 2013-01-14 finds that day but not 1990."""
    found = db.ids("Observation", "date=ap2013-01-14")
    assert {"jan14", "jan14t", "y2012"} <= found
    assert "y1990" not in found


def test_date_missing(db: Seeded) -> None:
    """:missing=true finds the resource without a date; false finds every other."""
    assert db.ids("Observation", "date:missing=true") == {"none"}
    assert db.ids("Observation", "date:missing=false") == ALL


@pytest.mark.parametrize("value", ["2013-13", "2013-02-30", "gt", "2013-01-14T25:00", "yesterday", "20130114",
                                   "2013-01-14T10:00:00+25", "ge2013-1-1"])
def test_malformed_dates_are_rejected_naming_the_parameter(db: Seeded, value: str) -> None:
    """A value that is no FHIR date is a 400 with the parameter as the issue expression."""
    err = db.error("Observation", f"date={value}")
    assert err.issues[0].expression == "date"
