"""A typed `_lastUpdated` window read from `resources (type, last_updated)` (`search.drive`, migration 0010).

https://hl7.org/fhir/R4/search.html#lastUpdated -- `Condition?_lastUpdated=ge..&_lastUpdated=lt..` drives from
the Condition rows whose `last_updated` lies in the window both criteria imply, and must find exactly what the
criteria find apart: at the boundaries of millisecond- and second-precision values, with other types written
inside the window, with deleted resources (deleted inside the window or after it) and with resources updated
out of the window. The strategy named in `_explain` proves the path is taken; its key count proves the driver
reads neither other types nor deleted rows.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from samverka.fhir.instant import format_instant
from samverka.interactions.delete import delete
from samverka.interactions.search import search
from samverka.search.query import parse_pairs
from support.semantics import BASE, Seeded


def _ms(us: int) -> str:
    return format_instant(us)  # ...T10:00:00.123Z, the precision the server writes


def _sec(us: int) -> str:
    return format_instant(us)[:19] + "Z"


def _stamp(db: Seeded, type_: str, id_: str) -> int:
    return int(db.svc.repo.fetch("SELECT last_updated FROM resources WHERE type = ? AND id = ?", [type_, id_])[0][0])


def _pause() -> None:
    time.sleep(0.003)  # every write its own millisecond


@pytest.fixture(scope="module")
def window(store: Seeded) -> tuple[Seeded, dict[str, int]]:
    """Conditions c00..c09 written 3+ ms apart; between them a Procedure and an Observation each, a Condition
    that is deleted inside the window (`gone-in`), one deleted after it (`gone-after`), and one updated after
    it (`moved`); `gone-early` is written before c00 and deleted between c04 and c05. Returns the stamps (µs)
    of the Conditions and of the deletions."""
    stamps: dict[str, int] = {}
    subject = {"subject": {"reference": "Patient/p"}}
    store.put({"resourceType": "Condition", "id": "gone-early", **subject})
    _pause()
    for i in range(10):
        store.put({"resourceType": "Condition", "id": f"c{i:02d}", **subject})
        stamps[f"c{i:02d}"] = _stamp(store, "Condition", f"c{i:02d}")
        _pause()
        store.put({"resourceType": "Procedure", "id": f"p{i:02d}", "status": "completed", **subject},
                  {"resourceType": "Observation", "id": f"o{i:02d}", "status": "final",
                   "code": {"text": "x"}, **subject})
        _pause()
        if i == 2:
            store.put({"resourceType": "Condition", "id": "gone-in", **subject},
                      {"resourceType": "Condition", "id": "gone-after", **subject},
                      {"resourceType": "Condition", "id": "moved", **subject})
            _pause()
            assert delete(store.svc, "Condition", "gone-in").status in (200, 204)
            _pause()
        if i == 4:
            assert delete(store.svc, "Condition", "gone-early").status in (200, 204)
            stamps["gone-early deleted"] = _stamp(store, "Condition", "gone-early")
            _pause()
    assert delete(store.svc, "Condition", "gone-after").status in (200, 204)
    _pause()
    store.put({"resourceType": "Condition", "id": "moved", "clinicalStatus": {"coding": [{"code": "active"}]},
               **subject})
    stamps["moved"] = _stamp(store, "Condition", "moved")
    assert len({v // 1000 for v in stamps.values()}) == len(stamps)
    return store, stamps


CASES = [("ge", "le"), ("ge", "lt"), ("gt", "le"), ("gt", "lt"), ("sa", "eb"), ("ge", "eb"), ("sa", "lt")]


@pytest.mark.parametrize(("low", "high"), CASES)
@pytest.mark.parametrize("fmt", [_ms, _sec])
def test_the_typed_window_finds_the_intersection(window: tuple[Seeded, dict[str, int]], low: str, high: str,
                                                 fmt: Any) -> None:
    db, stamps = window
    for i, j in [(1, 7), (0, 9), (4, 4), (3, 4), (8, 2)]:
        a, b = fmt(stamps[f"c{i:02d}"]), fmt(stamps[f"c{j:02d}"])
        q_low, q_high = f"_lastUpdated={low}{a}", f"_lastUpdated={high}{b}"
        expected = db.ids("Condition", q_low) & db.ids("Condition", q_high)
        assert db.ids("Condition", f"{q_low}&{q_high}") == expected, (a, b)
        assert not expected & {"gone-in", "gone-after", "gone-early"}
        ex = db.explain("Condition", f"{q_low}&{q_high}")
        # the window, unless a criterion's own (closed) probe found nothing to drive from
        assert ex["strategy"].startswith("driven by _lastUpdated window of Condition (") or ex["strategy"] in (
            "driven by _lastUpdated (0 candidate keys)", "driven by _lastUpdated #2 (0 candidate keys)"), ex


def test_millisecond_boundaries_are_exact(window: tuple[Seeded, dict[str, int]]) -> None:
    db, s = window

    def ids(q: str) -> set[str]:
        return db.ids("Condition", q)

    c = {k: _ms(v) for k, v in s.items()}
    assert ids(f"_lastUpdated=ge{c['c04']}&_lastUpdated=lt{c['c07']}") == {"c04", "c05", "c06"}
    assert ids(f"_lastUpdated=gt{c['c04']}&_lastUpdated=le{c['c07']}") == {"c05", "c06", "c07"}
    assert ids(f"_lastUpdated=ge{c['c04']}&_lastUpdated=le{c['c04']}") == {"c04"}
    assert ids(f"_lastUpdated=gt{c['c04']}&_lastUpdated=lt{c['c05']}") == set()
    assert ids(f"_lastUpdated={c['c06']}") == {"c06"}  # eq bounds both sides: a window on its own
    # `moved` was updated after c09: its current stamp counts, not its first one
    assert ids(f"_lastUpdated=ge{c['c09']}&_lastUpdated=le{c['moved']}") == {"c09", "moved"}


def test_the_window_counts_only_live_rows_of_the_type(window: tuple[Seeded, dict[str, int]]) -> None:
    """From c02 to c05: c02..c05 and `moved`'s first version lie inside, so do `gone-in` (written and deleted
    inside), `gone-after`, `gone-early`'s deletion and the Procedures and Observations p02..p04, o02..o04.
    Only the four live Conditions still stamped inside are candidates."""
    db, s = window
    q = f"_lastUpdated=ge{_ms(s['c02'])}&_lastUpdated=le{_ms(s['c05'])}"
    assert db.ids("Condition", q) == {"c02", "c03", "c04", "c05"}
    ex = db.explain("Condition", q)
    assert ex["strategy"] == ("driven by _lastUpdated window of Condition (4 candidate keys, a superset: every"
                              " criterion checked)"), ex
    assert "resources lu" in ex["sql"] and "idx_date x WHERE x.param" not in ex["sql"], ex
    assert db.ids("Procedure", q) == {"p02", "p03", "p04"}
    assert db.ids("Observation", q) == {"o02", "o03", "o04"}
    # `moved` and `gone-after` were written in the window; their current versions (an update, a deletion) not
    assert db.ids("Condition", f"_lastUpdated=ge{_ms(s['c09'])}&_lastUpdated=le{_ms(s['moved'])}") == {
        "c09", "moved"}
    assert "gone-early" not in db.ids("Condition", f"_lastUpdated=ge{_sec(s['c00'])}&_lastUpdated=le"
                                                   f"{_ms(s['gone-early deleted'])}")


def test_other_criteria_are_still_checked(window: tuple[Seeded, dict[str, int]]) -> None:
    db, s = window
    q = f"_lastUpdated=ge{_ms(s['c00'])}&_lastUpdated=le{_ms(s['moved'])}&clinical-status=active"
    assert db.ids("Condition", q) == {"moved"}
    assert db.ids("Condition", f"{q}&_id=c01") == set()


def test_a_search_of_several_types_keeps_the_date_index_window(window: tuple[Seeded, dict[str, int]]) -> None:
    db, s = window
    q = f"_type=Condition,Procedure&_lastUpdated=ge{_ms(s['c03'])}&_lastUpdated=lt{_ms(s['c05'])}"
    ex = db.explain(None, q)
    assert ex["strategy"].startswith("driven by _lastUpdated window ("), ex
    result = search(db.svc, BASE, None, [*parse_pairs(q), ("_count", "1000")], strict=True)
    assert result.resource is not None
    found = {"/".join(e["fullUrl"].rsplit("/", 2)[-2:]) for e in result.resource.get("entry", [])
             if e["search"]["mode"] == "match"}
    assert found == {"Condition/c03", "Condition/c04", "Procedure/p03", "Procedure/p04"}


def test_a_wide_window_drives_only_when_a_small_part_of_the_type(window: tuple[Seeded, dict[str, int]],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the probe limit, the typed window is weighed against the type's rows like a wide exact driver."""
    from samverka.search import drive

    db, s = window
    monkeypatch.setattr(drive, "PROBE_LIMIT", 1)
    monkeypatch.setattr(drive, "_TYPE_ROWS", {})
    few = f"_lastUpdated=ge{_ms(s['c02'])}&_lastUpdated=le{_ms(s['c02'])}"  # 1 of the 11 live Conditions
    ex = db.explain("Condition", few)
    assert ex["strategy"] == ("driven by _lastUpdated window of Condition (1 candidate keys, a superset: every"
                              " criterion checked)"), ex
    assert db.ids("Condition", few) == {"c02"}
    many = f"_lastUpdated=ge{_ms(s['c01'])}&_lastUpdated=le{_ms(s['moved'])}"  # 10 of 11
    ex = db.explain("Condition", many)
    assert ex["strategy"] == "walk the type index in key order", ex
    assert any("more than 1/4 of the" in n for n in ex["notes"]), ex
    assert db.ids("Condition", many) == {f"c{i:02d}" for i in range(1, 10)} | {"moved"}
