"""How a search starts (`search.drive`), checked against the answers it must not change, on both backends.

https://hl7.org/fhir/R4/search.html -- repeated parameters are ANDed, so `a&b` must find exactly the
intersection of `a` and `b`. Each planning path is forced (probe limits lowered where the store is too
small to reach them) and its `_explain` strategy asserted, so the test fails if the path is not taken.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from samverka.fhir.instant import format_instant
from samverka.interactions.delete import delete
from samverka.interactions.search import search
from samverka.search import drive
from samverka.search.query import parse_pairs
from support.semantics import BASE, Seeded

LOINC = "http://loinc.org"


def _total(db: Seeded, type_: str, query: str) -> int:
    result = search(db.svc, BASE, type_, [*parse_pairs(query), ("_total", "accurate"), ("_count", "1")],
                    strict=True)
    assert result.resource is not None
    return int(result.resource["total"])


# -- _lastUpdated: the ge/gt/sa and le/lt/eb criteria become one closed window ------------------------


@pytest.fixture(scope="module")
def stamped(store: Seeded) -> tuple[Seeded, list[tuple[str, int]]]:
    """Twelve Conditions written at least 3 ms apart (ids c00..c11, a Procedure between c09 and c10) and
    their lastUpdated in µs."""
    for i in range(12):
        store.put({"resourceType": "Condition", "id": f"c{i:02d}", "subject": {"reference": "Patient/p"}})
        time.sleep(0.003)
        if i == 9:  # another type inside the window of the later criteria
            store.put({"resourceType": "Procedure", "id": "p-between", "status": "completed",
                       "subject": {"reference": "Patient/p"}})
            time.sleep(0.003)
    rows = store.svc.repo.fetch("SELECT id, last_updated FROM resources WHERE type = 'Condition' ORDER BY id", [])
    stamps = [(str(i), int(lu)) for i, lu in rows]
    assert len({lu // 1000 for _, lu in stamps}) == 12, "every write its own millisecond"
    return store, stamps


def _ms(us: int) -> str:
    return format_instant(us)  # ...T10:00:00.123Z, the precision the server writes


def _sec(us: int) -> str:
    return format_instant(us)[:19] + "Z"


@pytest.mark.parametrize(("low", "high"), [
    ("ge", "le"), ("ge", "lt"), ("gt", "le"), ("gt", "lt"), ("sa", "eb"), ("ge", "eb"), ("sa", "le"),
])
@pytest.mark.parametrize("fmt", [_ms, _sec])
def test_last_updated_window_finds_the_intersection(stamped: tuple[Seeded, list[tuple[str, int]]], low: str,
                                                    high: str, fmt: Any) -> None:
    """`_lastUpdated=<low>a&_lastUpdated=<high>b` drives from one (param, lo) range and finds exactly what the
    two criteria find apart, at the boundaries of millisecond- and second-precision values."""
    db, stamps = stamped
    for i, j in [(2, 8), (0, 11), (5, 5), (3, 4), (9, 1)]:
        a, b = fmt(stamps[i][1]), fmt(stamps[j][1])
        q_low, q_high = f"_lastUpdated={low}{a}", f"_lastUpdated={high}{b}"
        expected = db.ids("Condition", q_low) & db.ids("Condition", q_high)
        assert db.ids("Condition", f"{q_low}&{q_high}") == expected, (a, b)
        assert db.ids("Condition", f"{q_high}&{q_low}") == expected


def test_last_updated_window_drives_and_says_so(stamped: tuple[Seeded, list[tuple[str, int]]]) -> None:
    db, stamps = stamped
    q = f"_lastUpdated=ge{_ms(stamps[4][1])}&_lastUpdated=lt{_ms(stamps[7][1])}"
    assert db.ids("Condition", q) == {"c04", "c05", "c06"}
    ex = db.explain("Condition", q)
    assert ex["strategy"] == ("driven by _lastUpdated window of Condition (3 candidate keys, a superset: every"
                              " criterion checked)"), ex
    assert "_lastUpdated not probed (the _lastUpdated window bounds it)" in ex["notes"]


def test_last_updated_window_with_or_values_and_other_types(stamped: tuple[Seeded, list[tuple[str, int]]]) -> None:
    """ORed values widen the window to their hull; the type and every criterion are still checked per row."""
    db, stamps = stamped
    q = (f"_lastUpdated=ge{_ms(stamps[1][1])},ge{_ms(stamps[3][1])}"
         f"&_lastUpdated=le{_ms(stamps[2][1])},lt{_ms(stamps[6][1])}")
    assert db.ids("Condition", q) == {"c01", "c02", "c03", "c04", "c05"}
    assert db.ids("Procedure", f"_lastUpdated=ge{_ms(stamps[9][1])}&_lastUpdated=le{_ms(stamps[10][1])}") == {
        "p-between"}
    assert db.ids("Condition", f"_lastUpdated=gt{_ms(stamps[9][1])}&_lastUpdated=lt{_ms(stamps[10][1])}") == set()
    assert db.ids("Condition", f"_lastUpdated=ge{_ms(stamps[6][1])}&_lastUpdated=lt{_ms(stamps[6][1])}") == set()


def test_last_updated_window_needs_both_sides(stamped: tuple[Seeded, list[tuple[str, int]]]) -> None:
    db, stamps = stamped
    ex = db.explain("Condition", f"_lastUpdated=ge{_ms(stamps[4][1])}&_lastUpdated=ne{_ms(stamps[7][1])}")
    assert "window" not in ex["strategy"]
    assert db.ids("Condition", f"_lastUpdated=ge{_ms(stamps[10][1])}&_lastUpdated=ne{_ms(stamps[11][1])}") == {
        "c10"}


# -- a wide exact driver, probes in order, same-system codes, counts ------------------------------------


@pytest.fixture(scope="module")
def clinic(store: Seeded) -> Seeded:
    enc = []
    for i in range(10):  # org-a: ten encounters, one a month from January 2015, the last one open-ended
        period = {"start": f"2015-{i + 1:02d}-10T08:00:00Z", "end": f"2015-{i + 1:02d}-10T09:00:00Z"}
        if i == 9:
            period = {"start": "2015-10-10"}
        enc.append({"resourceType": "Encounter", "id": f"a{i}", "status": "finished", "class": {"code": "AMB"},
                    "serviceProvider": {"reference": "Organization/org-a"}, "period": period})
    enc.append({"resourceType": "Encounter", "id": "a-long", "status": "finished", "class": {"code": "AMB"},
                "serviceProvider": {"reference": "Organization/org-a"},
                "period": {"start": "2014-12-30", "end": "2015-03-02"}})
    for i in range(40):  # org-b: most of the type
        enc.append({"resourceType": "Encounter", "id": f"b{i}", "status": "finished", "class": {"code": "AMB"},
                    "serviceProvider": {"reference": "Organization/org-b"},
                    "period": {"start": "2015-03-15", "end": "2015-03-16"}})
    obs = []
    for i, (system, code) in enumerate([(LOINC, "1"), (LOINC, "2"), (LOINC, "3"), ("urn:x", "1"), ("urn:x", "2")]):
        for j in range(2):
            obs.append({"resourceType": "Observation", "id": f"o{i}{j}", "status": "final",
                        "subject": {"reference": f"Patient/pat{j}"}, "effectiveDateTime": f"2016-0{i + 1}-01",
                        "code": {"coding": [{"system": system, "code": code}]}})
    obs.append({"resourceType": "Observation", "id": "o-nosys", "status": "final", "code": {"coding": [{"code": "1"}]}})
    store.put(*enc, *obs)
    return store


def test_a_wide_exact_driver_drives_a_sparse_month(clinic: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every probe over its limit: the service-provider's keys (11 of 51 Encounters) still drive."""
    monkeypatch.setattr(drive, "PROBE_LIMIT", 5)
    q = "service-provider=Organization/org-a&date=ge2015-03-01&date=lt2015-04-01"
    assert clinic.ids("Encounter", q) == {"a2", "a-long"}
    ex = clinic.explain("Encounter", q)
    assert ex["strategy"] == "driven by service-provider (11 candidate keys)", ex
    assert any("driven rather than walked" in n for n in ex["notes"]), ex
    # the open-ended encounter overlaps every later month
    assert clinic.ids("Encounter", "service-provider=Organization/org-a&date=ge2016-01-01&date=lt2016-02-01") == {
        "a9"}


def test_a_wide_driver_over_much_of_the_type_walks(clinic: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drive, "PROBE_LIMIT", 5)
    q = "service-provider=Organization/org-b&date=ge2015-03-01&date=lt2015-04-01"
    assert clinic.ids("Encounter", q) == {f"b{i}" for i in range(40)}
    ex = clinic.explain("Encounter", q)
    assert ex["strategy"] == "walk the type index in key order", ex


def test_open_date_ranges_are_not_probed_once_something_drives(clinic: Seeded) -> None:
    q = f"patient=pat1&code={LOINC}|2&date=ge2016-01-15&date=le2016-12-31&_sort=-date"
    assert clinic.ids("Observation", q) == {"o11"}
    ex = clinic.explain("Observation", q)
    assert ex["strategy"].startswith("driven by "), ex
    assert "date not probed (an open range scans its parameter from the start)" in ex["notes"], ex
    assert "date" not in ex["probes"], ex


@pytest.mark.parametrize(("query", "expected"), [
    (f"code={LOINC}|1,{LOINC}|3", {"o00", "o01", "o20", "o21"}),
    (f"code={LOINC}|1,urn:x|2,{LOINC}|2", {"o00", "o01", "o10", "o11", "o40", "o41"}),
    (f"code={LOINC}|1,1", {"o00", "o01", "o30", "o31", "o-nosys"}),
    (f"code={LOINC}|1,|1", {"o00", "o01", "o-nosys"}),
    (f"code:not={LOINC}|1,{LOINC}|2", {"o20", "o21", "o30", "o31", "o40", "o41", "o-nosys"}),
    (f"code={LOINC}|,urn:x|1", {f"o{i}{j}" for i in range(4) for j in range(2)}),
])
def test_codes_of_one_system_are_one_in_list(clinic: Seeded, query: str, expected: set[str]) -> None:
    assert clinic.ids("Observation", query) == expected


def test_accurate_total_of_a_walked_plan(clinic: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    """A count started from the code's index rows: Observations only, deleted ones gone."""
    monkeypatch.setattr(drive, "PROBE_LIMIT", 1)
    clinic.put({"resourceType": "Condition", "id": "cond-loinc", "subject": {"reference": "Patient/pat0"},
                "code": {"coding": [{"system": LOINC, "code": "1"}]}})
    clinic.put({"resourceType": "Observation", "id": "o-gone", "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "3"}]}})
    assert delete(clinic.svc, "Observation", "o-gone").status in (200, 204)
    q = f"code={LOINC}|1,{LOINC}|3"
    assert _total(clinic, "Observation", q) == 4
    ex = clinic.explain("Observation", q)
    assert ex["strategy"] == "walk the type index in key order", ex
    expected = ("count driven by code, hash-joined to the Observation keys" if clinic.backend == "postgresql"
                else "count driven by code")
    assert ex["countStrategy"] == expected
    assert _total(clinic, "Observation", f"code={LOINC}|1,{LOINC}|3&status=final") == 4


def test_an_open_range_is_the_last_resort_before_a_walk(clinic: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not probed while an exact driver might do (it scans its parameter from the start), but still before
    the walk of the whole type: nothing of org-b dated 2030 or later."""
    monkeypatch.setattr(drive, "PROBE_LIMIT", 5)
    q = "service-provider=Organization/org-b&date=ge2030-01-01"
    assert clinic.ids("Encounter", q) == set()
    ex = clinic.explain("Encounter", q)
    assert ex["strategy"] == "driven by date (1 candidate keys)", ex  # org-a's open-ended a9
    assert clinic.ids("Encounter", "service-provider=Organization/org-a&date=ge2015-10-01") == {"a9"}
    ex = clinic.explain("Encounter", "service-provider=Organization/org-a&date=ge2015-10-01")
    assert ex["strategy"] == "driven by service-provider (11 candidate keys)", ex
    assert "date not probed (an open range scans its parameter from the start)" in ex["notes"], ex


# -- a set read whole, started from a named criterion (PDL's care relationships) --------------------------


@pytest.mark.parametrize("query", [
    "service-provider=Organization/org-a&status=finished&date=ge2015-03-01",
    "service-provider=Organization/org-b&status=finished,in-progress",
    "date=ge2015-02-01&date=lt2015-04-01&service-provider=Organization/org-a",
    "status=finished&date=ge2015-10-01",
])
def test_driven_by_any_criterion_finds_what_the_search_finds(clinic: Seeded, query: str) -> None:
    """`plan.driven_by` starts from each criterion in turn (a date range too) and must find exactly the
    search's matches: the driver's keys are exactly its criterion's matches, the others checked per row."""
    from samverka.search.plan import driven_by
    from samverka.search.query import parse

    expected = clinic.ids("Encounter", query)
    assert expected, "the case must match something"
    q = parse(clinic.svc.registry, "Encounter", parse_pairs(query))
    for by in range(len(q.criteria)):
        source, where, params = driven_by(clinic.svc.repo, clinic.svc.registry, q, by)
        rows = clinic.svc.repo.fetch(f"SELECT r.id FROM {source} WHERE {' AND '.join(where)}", params)
        assert sorted(str(r[0]) for r in rows) == sorted(expected), (query, by)
