"""Date windows (`search.window`) and intersected drivers (`drive._intersected`), on both backends.

https://hl7.org/fhir/R4/search.html#date -- `date=ge2015-03-01&date=lt2015-04-01` must find exactly what the
two criteria find apart. The window reads rows by span class (the primary key for rows under two days, the
partial index `idx_date_long` for the rest), so every class is exercised at the window's edges, and the
plan is asserted so the test fails if the window is not what drove.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from samverka.interactions.search import search
from samverka.search import drive, window
from samverka.search.params import Registry
from samverka.search.query import parse_pairs
from support.semantics import BASE, Seeded

MIGRATIONS = Path(window.__file__).parents[1] / "store" / "migrations"

# (id, period): spans from an instant to open-ended, in and around March 2015
PERIODS: list[tuple[str, dict[str, str]]] = [
    ("hour-in", {"start": "2015-03-10T08:00:00Z", "end": "2015-03-10T09:00:00Z"}),
    ("ends-before", {"start": "2015-02-28T22:00:00Z", "end": "2015-02-28T23:59:59Z"}),
    ("ends-at-start", {"start": "2015-02-28T23:00:00Z", "end": "2015-03-01T00:00:00Z"}),
    ("starts-after", {"start": "2015-04-01T00:00:00Z", "end": "2015-04-01T01:00:00Z"}),
    ("starts-last-second", {"start": "2015-03-31T23:59:59Z", "end": "2015-04-01T02:00:00Z"}),
    ("days", {"start": "2015-02-28", "end": "2015-03-01"}),
    ("ten-days-in", {"start": "2015-02-20", "end": "2015-03-02"}),
    ("ten-days-before", {"start": "2015-02-17", "end": "2015-02-27"}),
    ("hundred-days-in", {"start": "2014-12-01", "end": "2015-03-10"}),
    ("hundred-days-before", {"start": "2014-10-01", "end": "2015-01-09"}),
    ("year", {"start": "2015", "end": "2015"}),
    ("two-years-in", {"start": "2013-06-01", "end": "2015-06-01"}),
    ("two-years-before", {"start": "2012-01-01", "end": "2014-01-01"}),
    ("twenty-years-in", {"start": "1996-01-01", "end": "2016-01-01"}),
    ("twenty-years-before", {"start": "1990-01-01", "end": "2010-01-01"}),
    ("open-in", {"start": "2014-01-01"}),
    ("open-after", {"start": "2016-01-01"}),
    ("end-only-in", {"end": "2015-03-05"}),
    ("end-only-before", {"end": "2014-01-01"}),
]


@pytest.fixture(scope="module")
def spans(store: Seeded) -> Seeded:
    rows: list[dict[str, Any]] = []
    for i, (rid, period) in enumerate(PERIODS):
        for org in ("w", "v"):  # org-w: the service-provider queried; org-v: more of the type
            rows.append({"resourceType": "Encounter", "id": f"{org}-{rid}", "status": "finished",
                         "class": {"code": "AMB"}, "serviceProvider": {"reference": f"Organization/org-{org}"},
                         "period": period})
        # other types on the same shared `date` parameter (clinical-date)
        rows.append({"resourceType": "CarePlan", "id": f"cp-{i}", "status": "active", "intent": "plan",
                     "subject": {"reference": "Patient/p"}, "period": period})
    for i in range(60):  # history: an open side such as `lt2015-04-01` holds more rows than the month
        rows.append({"resourceType": "Encounter", "id": f"old-{i}", "status": "finished", "class": {"code": "AMB"},
                     "serviceProvider": {"reference": "Organization/org-v"},
                     "period": {"start": f"2010-01-{i % 28 + 1:02d}T08:00:00Z", "end": f"2010-01-{i % 28 + 1:02d}"}})
    rows.append({"resourceType": "Observation", "id": "o-timing", "status": "final", "code": {"text": "x"},
                 "effectiveTiming": {"event": ["2010-05-01", "2020-05-01"]}})
    store.put(*rows)
    return store


def _explain(db: Seeded, type_: str, query: str) -> dict[str, Any]:
    result = search(db.svc, BASE, type_, [*parse_pairs(query), ("_explain", "true"), ("_count", "1000")],
                    strict=True)
    assert result.resource is not None
    for e in result.resource["entry"]:
        if e["search"]["mode"] == "outcome":
            for issue in e["resource"]["issue"]:
                if issue["code"] == "informational":
                    return dict(orjson.loads(issue["diagnostics"]))
    raise AssertionError("no _explain issue")


MONTH = [("ge", "2015-03-01", "lt", "2015-04-01"), ("ge", "2015-03-01", "le", "2015-03-31"),
         ("gt", "2015-02-28", "lt", "2015-04-01"), ("sa", "2015-02-28", "eb", "2015-04-01"),
         ("ge", "2015-03", "eb", "2015-04"), ("gt", "2015-03-01T00:00:00Z", "le", "2015-03-31T23:59:59Z"),
         ("ge", "2015-03-31T23:59:59Z", "lt", "2015-04-01T00:00:00Z"), ("ge", "2015", "lt", "2016")]


@pytest.mark.parametrize(("low", "a", "high", "b"), MONTH)
def test_a_window_finds_the_intersection(spans: Seeded, low: str, a: str, high: str, b: str) -> None:
    q_low, q_high = f"date={low}{a}", f"date={high}{b}"
    expected = spans.ids("Encounter", q_low) & spans.ids("Encounter", q_high)
    assert expected, "the case must match something"
    assert spans.ids("Encounter", f"{q_low}&{q_high}") == expected
    assert spans.ids("Encounter", f"{q_high}&{q_low}") == expected
    ex = _explain(spans, "Encounter", f"{q_low}&{q_high}")
    assert ex["strategy"].startswith("driven by date window"), ex


def test_the_month_by_hand(spans: Seeded) -> None:
    """`ge2015-03-01`: the target overlaps the range after that day, or lies within it (R4's prefix table), so
    periods ending on 1 March itself do not match; `lt2015-04-01`: it overlaps the range before 1 April."""
    found = spans.ids("Encounter", "service-provider=Organization/org-w&date=ge2015-03-01&date=lt2015-04-01")
    assert found == {f"w-{x}" for x in ("hour-in", "starts-last-second", "ten-days-in", "hundred-days-in", "year",
                                        "two-years-in", "twenty-years-in", "open-in", "end-only-in")}


def test_ored_values_widen_a_window_to_their_hull(spans: Seeded) -> None:
    q = "date=ge2015-03-01,ge2015-05-01&date=lt2015-03-02,lt2015-06-01"
    expected = spans.ids("Encounter", q.split("&")[0]) & spans.ids("Encounter", q.split("&")[1])
    assert spans.ids("Encounter", q) == expected
    assert "w-starts-after" in expected and "w-ten-days-before" not in expected  # April: ge03-01 and lt06-01
    assert _explain(spans, "Encounter", q)["strategy"].startswith("driven by date window")


def test_no_window_without_both_sides_or_for_one_criterion(spans: Seeded) -> None:
    for q in ("date=ge2015-03-01&date=ne2015-03-10", "date=2015-03", "date=ge2015-03-01&status=finished"):
        ex = _explain(spans, "Encounter", q)
        assert "window" not in ex["strategy"] and not any("window" in p for p in ex["probes"]), (q, ex)
    assert spans.ids("Encounter", "date=ge2016-01-01&date=ne2016-01") == {"w-open-in", "v-open-in",
                                                                        "w-open-after", "v-open-after"}


def test_no_window_where_a_resource_holds_several_values(spans: Seeded) -> None:
    """A Timing is a row per event: the Observation matches `ge2015` by one and `lt2012` by the other."""
    assert spans.ids("Observation", "date=ge2015-01-01&date=lt2012-01-01") == {"o-timing"}
    assert "window" not in _explain(spans, "Observation", "date=ge2015-01-01&date=lt2012-01-01")["strategy"]
    reg = Registry.default()
    assert window.single_valued(reg.get("Encounter", "date"), "Encounter")  # Encounter.period
    assert window.single_valued(reg.get("Procedure", "date"), "Procedure")  # performed[x]: no Timing
    assert window.single_valued(reg.get("Condition", "onset-date"), "Condition")  # two casts of one choice
    assert not window.single_valued(reg.get("Observation", "date"), "Observation")  # effective[x]: Timing
    assert not window.single_valued(reg.get("Encounter", "location-period"), "Encounter")  # location 0..*


@pytest.mark.parametrize(("low", "a", "high", "b"), MONTH[:4])
def test_an_intersected_driver_finds_the_same(spans: Seeded, monkeypatch: pytest.MonkeyPatch, low: str, a: str,
                                              high: str, b: str) -> None:
    q = f"service-provider=Organization/org-w&date={low}{a}&date={high}{b}"
    before = spans.ids("Encounter", q)
    monkeypatch.setattr(drive, "INTERSECT_FROM", 1)
    monkeypatch.setattr(drive, "INTERSECT_RATIO", 100)
    assert spans.ids("Encounter", q) == before
    ex = _explain(spans, "Encounter", q)
    assert " and " in ex["strategy"] and "date window" in ex["strategy"], ex
    assert any("intersected with" in n for n in ex["notes"]), ex


def test_the_index_expression_is_the_query_expression() -> None:
    """The class expression of `idx_date_long` in both migrations is the one the window queries use."""
    expr = window.SPAN_CLASS.replace("x.", "")
    predicate = window.LONG_ROW.replace("x.", "")
    for dialect in ("sqlite", "postgresql"):
        sql = (MIGRATIONS / dialect / "0020_date_spans.sql").read_text()
        create = re.search(r"CREATE INDEX idx_date_long .*?;", sql, re.S)
        assert create is not None
        assert f"({expr})" in create[0] and f"WHERE {predicate}" in create[0], dialect
    bounds = [int(x) for x in re.findall(r"< (\d+)", window.SPAN_CLASS)]
    assert bounds == [b for _c, b in window.SPAN_CLASSES if b is not None]
    assert int(re.findall(r"\d+", window.LONG_ROW)[0]) == window.SHORT_SPAN_US


def test_the_window_reads_the_long_rows_from_their_index(spans: Seeded) -> None:
    from samverka.search.query import parse

    q = parse(spans.svc.registry, "Encounter", parse_pairs("date=ge2015-03-01&date=lt2015-04-01"))
    [(_name, sql, params)] = window.date_windows(q)
    repo = spans.svc.repo
    if spans.backend == "postgresql":
        with repo.transaction() as uow:  # a tiny table: make the planner show whether the index applies at all
            uow.execute("SET LOCAL enable_seqscan = off", [])
            uow.execute("SET LOCAL enable_bitmapscan = off", [])
            plan = "\n".join(str(r[0]) for r in uow.fetch("EXPLAIN " + sql, params))
    else:
        plan = "\n".join(str(r[-1]) for r in repo.fetch("EXPLAIN QUERY PLAN " + sql, params))
    assert plan.count("idx_date_long") == len(window.SPAN_CLASSES), plan
