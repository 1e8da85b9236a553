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

import pytest

from samverka.search import drive, window
from samverka.search.params import Registry
from samverka.search.query import parse_pairs
from support.semantics import Seeded

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
    # stored only without validation (the fixture's store): an end before the start, which offsets can
    # produce in valid R4 too (20 March 23:00 at -05:00 is 21 March in UTC, after the end's day)
    ("inverted", {"start": "2015-03-20", "end": "2015-03-10"}),
    ("offsets", {"start": "2015-03-31T23:00:00-05:00", "end": "2015-03-31"}),
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
    # an offset takes these past years 1-9999; and a Period list where R4 allows one (no validation)
    for rid, period in (("after-max", {"start": "9999-12-31T23:00:00-12:00"}),
                        ("before-min", {"start": "0001-01-01T00:00:00+14:00"})):
        rows.append({"resourceType": "Encounter", "id": f"x-{rid}", "status": "finished", "class": {"code": "AMB"},
                     "serviceProvider": {"reference": "Organization/org-x"}, "period": period})
    rows.append({"resourceType": "Encounter", "id": "x-two", "status": "finished", "class": {"code": "AMB"},
                 "serviceProvider": {"reference": "Organization/org-x"},
                 "period": [{"start": "2010-01-01", "end": "2010-01-02"},
                            {"start": "2020-01-01", "end": "2020-01-02"}]})
    rows.append({"resourceType": "Observation", "id": "o-timing", "status": "final", "code": {"text": "x"},
                 "effectiveTiming": {"event": ["2010-05-01", "2020-05-01"]}})
    store.put(*rows)
    return store


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
    ex = spans.explain("Encounter", f"{q_low}&{q_high}")
    assert ex["strategy"].startswith("driven by date window"), ex


def test_the_month_by_hand(spans: Seeded) -> None:
    """`ge2015-03-01`: the target overlaps the range after that day, or lies within it (R4's prefix table), so
    periods ending on 1 March itself do not match; `lt2015-04-01`: it overlaps the range before 1 April."""
    found = spans.ids("Encounter", "service-provider=Organization/org-w&date=ge2015-03-01&date=lt2015-04-01")
    assert found == {f"w-{x}" for x in ("hour-in", "starts-last-second", "ten-days-in", "hundred-days-in", "year",
                                        "two-years-in", "twenty-years-in", "open-in", "end-only-in", "inverted",
                                        "offsets")}


def test_ored_values_widen_a_window_to_their_hull(spans: Seeded) -> None:
    q = "date=ge2015-03-01,ge2015-05-01&date=lt2015-03-02,lt2015-06-01"
    expected = spans.ids("Encounter", q.split("&")[0]) & spans.ids("Encounter", q.split("&")[1])
    assert spans.ids("Encounter", q) == expected
    assert "w-starts-after" in expected and "w-ten-days-before" not in expected  # April: ge03-01 and lt06-01
    assert spans.explain("Encounter", q)["strategy"].startswith("driven by date window")


def test_no_window_without_both_sides_or_for_one_criterion(spans: Seeded) -> None:
    for q in ("date=ge2015-03-01&date=ne2015-03-10", "date=2015-03", "date=ge2015-03-01&status=finished"):
        ex = spans.explain("Encounter", q)
        assert "window" not in ex["strategy"] and not any("window" in p for p in ex["probes"]), (q, ex)
    assert spans.ids("Encounter", "date=ge2016-01-01&date=ne2016-01") == {
        "w-open-in", "v-open-in", "w-open-after", "v-open-after", "x-two", "x-before-min", "x-after-max"}


def test_no_window_where_a_resource_holds_several_values(spans: Seeded) -> None:
    """A Timing is a row per event: the Observation matches `ge2015` by one and `lt2012` by the other."""
    assert spans.ids("Observation", "date=ge2015-01-01&date=lt2012-01-01") == {"o-timing"}
    assert "window" not in spans.explain("Observation", "date=ge2015-01-01&date=lt2012-01-01")["strategy"]
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
    ex = spans.explain("Encounter", q)
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
    [(_pid, _name, sql, params)] = window.date_windows(q)
    repo = spans.svc.repo
    if spans.backend == "postgresql":
        with repo.transaction() as uow:  # a tiny table: make the planner show whether the index applies at all
            uow.execute("SET LOCAL enable_seqscan = off", [])
            uow.execute("SET LOCAL enable_bitmapscan = off", [])
            plan = "\n".join(str(r[0]) for r in uow.fetch("EXPLAIN " + sql, params))
    else:
        plan = "\n".join(str(r[-1]) for r in repo.fetch("EXPLAIN QUERY PLAN " + sql, params))
    assert plan.count("idx_date_long") == len(window.SPAN_CLASSES), plan


def test_rows_a_window_relies_on(spans: Seeded) -> None:
    """Every row has lo <= hi (an inverted Period's ends swapped), and a parameter R4 allows one value has one
    row per resource (the hull of a non-conformant list): a window reads a row by its lo and span."""
    repo = spans.svc.repo
    assert repo.fetch("SELECT count(*) FROM idx_date WHERE lo > hi", [])[0][0] == 0
    pid = spans.svc.registry.get("Encounter", "date").id
    rows = repo.fetch("SELECT d.lo, d.hi FROM idx_date d JOIN resources r ON r.pk = d.res WHERE d.param = ?"
                      " AND r.type = 'Encounter' AND r.id = 'x-two'", [pid])
    assert len(rows) == 1 and rows[0][0] < rows[0][1]


@pytest.mark.parametrize(("low", "high"), [
    ("date=ge9999-12-31T12:00:00Z", "date=le9999-12-31T13:00:00Z"),
    ("date=gt9999-12-31T22:00:00-12:00", "date=le9999-12-31T22:00:00-12:00"),
    ("date=ge0001-01-01", "date=lt0001-01-02"),
    ("date=ge2019-01-01", "date=lt2011-01-01"),
    ("date=sa2014", "date=eb2016"),
    ("date=ge2015-03-15", "date=le2015-03-20"),
    ("date=ge2015-04-01", "date=le2015-04-01"),
])
def test_windows_at_the_edges_of_the_data(spans: Seeded, low: str, high: str) -> None:
    """Values an offset takes past years 1-9999, a hull, inverted Periods: the window finds what the two
    criteria find apart."""
    expected = spans.ids("Encounter", low) & spans.ids("Encounter", high)
    assert spans.ids("Encounter", f"{low}&{high}") == expected
    ex = spans.explain("Encounter", f"{low}&{high}")
    if low == "date=ge0001-01-01":  # `lt0001-01-02` holds fewer keys: it drives, the window is only probed
        assert "date window" in ex["probes"], ex
    else:
        assert ex["strategy"].startswith("driven by date window"), ex
    if low == "date=ge2019-01-01":
        assert "x-two" in expected


def test_rows_written_before_v20(spans: Seeded) -> None:
    """Migration 0020 on rows an older write path left: an inverted row is swapped, and a (param, type) with a
    resource of several rows gets no window until a reindex of the parameter."""
    repo = spans.svc.repo
    pid = spans.svc.registry.get("Encounter", "date").id
    res = repo.fetch("SELECT pk FROM resources WHERE type = 'Encounter' AND id = 'w-hour-in'", [])[0][0]
    sql = (MIGRATIONS / spans.backend / "0020_date_spans.sql").read_text()
    parts = re.split(r";\s*$", sql, flags=re.M)
    stmts = ["\n".join(ln for ln in part.splitlines() if not ln.startswith("--")).strip() for part in parts]
    data = [s for s in stmts if s.startswith(("INSERT", "DELETE"))]
    assert len(data) == 3, data
    old_rows = [(pid, 1_500_000_000_000_000, 1_400_000_000_000_000, res),  # inverted
                (pid, 1_300_000_000_000_000, 1_300_000_000_000_001, res)]  # a second value
    try:
        with repo.transaction() as uow:
            for row in old_rows:
                uow.execute("INSERT INTO idx_date (param, lo, hi, res) VALUES (?, ?, ?, ?)", list(row))
            uow.execute("DELETE FROM date_multivalued", [])
            for stmt in data:
                uow.execute(stmt, [])
        assert repo.fetch("SELECT count(*) FROM idx_date WHERE lo > hi", [])[0][0] == 0
        assert repo.fetch("SELECT count(*) FROM idx_date WHERE param = ? AND res = ? AND lo = ? AND hi = ?",
                          [pid, res, 1_400_000_000_000_000, 1_500_000_000_000_000])[0][0] == 1
        pairs = {(int(p), str(t)) for p, t in repo.fetch("SELECT param, type FROM date_multivalued", [])}
        assert (pid, "Encounter") in pairs and (pid, "Observation") in pairs  # the Timing: legitimately several
        drive._MULTIVALUED.clear()
        q = "date=ge2015-03-01&date=lt2015-04-01"
        assert "window" not in spans.explain("Encounter", q)["strategy"]
    finally:
        with repo.transaction() as uow:
            uow.execute("DELETE FROM idx_date WHERE param = ? AND res = ? AND lo IN (?, ?)",
                        [pid, res, 1_400_000_000_000_000, 1_300_000_000_000_000])
            uow.execute("DELETE FROM date_multivalued", [])
        drive._MULTIVALUED.clear()
    assert spans.explain("Encounter", q)["strategy"].startswith("driven by date window")
