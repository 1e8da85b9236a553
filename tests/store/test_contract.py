"""The storage contract, run unchanged on every backend through the `repo` fixture."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from samverka.errors import Category, FhirError
from samverka.fhir.instant import format_instant
from samverka.store.base import HistoryQuery, IndexRows, Repository, Write

T0 = 1_700_000_000_000_000  # microseconds since the epoch
NASTY = "x'; DROP TABLE resources; --%s?%%\\\"_"


def doc(type_: str, id_: str, **fields: Any) -> bytes:
    return orjson.dumps({"resourceType": type_, "id": id_, **fields})


def mk(type_: str, id_: str, version: int, index: IndexRows | None = None, *, pk: int | None = None,
       lu: int = T0, delete: bool = False, **fields: Any) -> Write:
    """A Write as interactions build one: POST without a previous pk, PUT with one, DELETE without data."""
    method = "DELETE" if delete else ("POST" if pk is None else "PUT")
    data = None if delete else doc(type_, id_, **fields)
    return Write(type_, id_, version, format_instant(lu), lu, method, data, index, previous_pk=pk)


def put(repo: Repository, type_: str, id_: str, index: IndexRows | None = None, *, delete: bool = False,
        at: int | None = None, **fields: Any) -> int:
    """Write the next version of a resource the way interactions do; returns the version written."""
    with repo.transaction() as uow:
        cur = uow.current(type_, id_)
        version = 1 if cur is None else cur.version + 1
        lu = at if at is not None else T0 + version * 1_000_000
        uow.write(mk(type_, id_, version, None if delete else (index or IndexRows()),
                     pk=cur.pk if cur else None, lu=lu, delete=delete, **fields))
    return version


def full_index(tag: str) -> IndexRows:
    return IndexRows(
        tokens=[(1, 11, 12)], token_texts=[(2, f"text {tag}")], strings=[(3, tag.lower(), tag)],
        dates=[(4, T0, T0 + 999)], numbers=[(5, 1.5, 2.5)], quantities=[(6, 61, 62, 3.0, 4.0)],
        references=[(7, 71, "Patient", f"p-{tag}")], uris=[(8, f"urn:{tag}")],
        composites=[(9, 91, 92, 93, 5.0, 6.0)],
    )


ALL_TABLES = ("idx_token", "idx_token_text", "idx_string", "idx_date", "idx_number", "idx_quantity",
              "idx_reference", "idx_uri", "idx_composite")


def index_counts(repo: Repository, type_: str, id_: str) -> dict[str, int]:
    out = {}
    for table in ALL_TABLES:
        rows = repo.fetch(f"SELECT count(*) FROM {table} x JOIN resources r ON r.pk = x.res"
                          " WHERE r.type = ? AND r.id = ?", [type_, id_])
        out[table] = int(rows[0][0])
    return out


def body(data: bytes | None) -> Any:
    assert data is not None
    return orjson.loads(data)


def test_create_then_read_returns_the_resource(repo: Repository) -> None:
    """A created resource reads back as version 1 with its JSON, method and lastUpdated."""
    put(repo, "Patient", "p1", name="Ada")
    v = repo.read("Patient", "p1")
    assert v is not None
    assert (v.type, v.id, v.version, v.method, v.deleted) == ("Patient", "p1", 1, "POST", False)
    assert isinstance(v.data, bytes)
    assert body(v.data) == {"resourceType": "Patient", "id": "p1", "name": "Ada"}
    assert v.last_updated == format_instant(T0 + 1_000_000)


def test_read_of_unknown_resource_is_none(repo: Repository) -> None:
    """Reading or vreading something never written gives None."""
    assert repo.read("Patient", "nobody") is None
    assert repo.vread("Patient", "nobody", 1) is None


def test_update_appends_contiguous_versions(repo: Repository) -> None:
    """Each update adds the next version; every old version stays readable with vread."""
    for i in range(3):
        put(repo, "Patient", "p1", name=f"v{i + 1}")
    v = repo.read("Patient", "p1")
    assert v is not None and v.version == 3 and v.method == "PUT"
    for n in (1, 2, 3):
        old = repo.vread("Patient", "p1", n)
        assert old is not None and body(old.data)["name"] == f"v{n}"
    assert repo.vread("Patient", "p1", 4) is None


def test_delete_keeps_history_and_marks_head_deleted(repo: Repository) -> None:
    """A delete is a version without data; the head reports deleted, earlier versions remain."""
    put(repo, "Patient", "p1", full_index("a"))
    put(repo, "Patient", "p1", delete=True)
    v = repo.read("Patient", "p1")
    assert v is not None and v.deleted and v.version == 2 and v.method == "DELETE"
    with repo.transaction() as uow:
        cur = uow.current("Patient", "p1")
    assert cur is not None and cur.deleted and cur.version == 2
    first = repo.vread("Patient", "p1", 1)
    assert first is not None and not first.deleted


def test_recreate_after_delete_continues_versions(repo: Repository) -> None:
    """Writing a deleted resource again continues its version sequence."""
    put(repo, "Patient", "p1")
    put(repo, "Patient", "p1", delete=True)
    assert put(repo, "Patient", "p1", name="back") == 3
    v = repo.read("Patient", "p1")
    assert v is not None and not v.deleted and body(v.data)["name"] == "back"


def test_create_writes_every_kind_of_index_row(repo: Repository) -> None:
    """Each IndexRows field lands in its idx_* table, keyed by the resource's pk."""
    put(repo, "Observation", "o1", full_index("A"))
    assert index_counts(repo, "Observation", "o1") == dict.fromkeys(ALL_TABLES, 1)
    rows = repo.fetch("SELECT x.param, x.target_type, x.target FROM idx_reference x"
                      " JOIN resources r ON r.pk = x.res WHERE r.id = ?", ["o1"])
    assert rows == [(7, "Patient", "p-A")]
    rows = repo.fetch("SELECT param, system, code, lo, hi FROM idx_quantity", [])
    assert rows == [(6, 61, 62, 3.0, 4.0)]


def test_update_replaces_index_rows(repo: Repository) -> None:
    """An update removes the previous version's index rows and writes the new ones."""
    put(repo, "Observation", "o1", full_index("old"))
    put(repo, "Observation", "o1", IndexRows(strings=[(3, "new", "New")]))
    counts = index_counts(repo, "Observation", "o1")
    assert counts == {**dict.fromkeys(ALL_TABLES, 0), "idx_string": 1}
    assert repo.fetch("SELECT norm, exact FROM idx_string", []) == [("new", "New")]


def test_delete_removes_index_rows(repo: Repository) -> None:
    """A deleted resource keeps no index rows, so searches cannot find it."""
    put(repo, "Observation", "o1", full_index("x"))
    put(repo, "Observation", "o1", delete=True)
    assert index_counts(repo, "Observation", "o1") == dict.fromkeys(ALL_TABLES, 0)


def test_duplicate_index_rows_are_stored_once(repo: Repository) -> None:
    """A value indexed twice in one version is stored once instead of failing the write."""
    put(repo, "Patient", "p1", IndexRows(tokens=[(1, 2, 3), (1, 2, 3)], uris=[(8, "u"), (8, "u")]))
    counts = index_counts(repo, "Patient", "p1")
    assert counts["idx_token"] == 1 and counts["idx_uri"] == 1


def test_index_rows_of_other_resources_are_untouched(repo: Repository) -> None:
    """Replacing one resource's index rows leaves every other resource's rows alone."""
    put(repo, "Patient", "a", full_index("a"))
    put(repo, "Patient", "b", full_index("b"))
    put(repo, "Patient", "a", delete=True)
    assert index_counts(repo, "Patient", "b") == dict.fromkeys(ALL_TABLES, 1)


def _seed_history(repo: Repository) -> None:
    put(repo, "Patient", "p1", at=T0 + 10)
    put(repo, "Patient", "p2", at=T0 + 20)
    put(repo, "Observation", "o1", at=T0 + 30)
    put(repo, "Patient", "p1", at=T0 + 40)
    put(repo, "Patient", "p1", delete=True, at=T0 + 50)


def _keys(entries: list[Any]) -> list[tuple[str, str, int]]:
    return [(e.version.type, e.version.id, e.version.version) for e in entries]


def test_history_instance_level_is_newest_first(repo: Repository) -> None:
    """Instance history lists every version of one resource, deletions included, newest first."""
    _seed_history(repo)
    entries = repo.history(HistoryQuery(type="Patient", id="p1"))
    assert _keys(entries) == [("Patient", "p1", 3), ("Patient", "p1", 2), ("Patient", "p1", 1)]
    assert entries[0].version.deleted and entries[0].version.method == "DELETE"
    assert [e.seq for e in entries] == sorted((e.seq for e in entries), reverse=True)


def test_history_type_and_system_levels(repo: Repository) -> None:
    """Type history is limited to one type; system history spans every type in write order."""
    _seed_history(repo)
    assert _keys(repo.history(HistoryQuery(type="Observation"))) == [("Observation", "o1", 1)]
    assert len(repo.history(HistoryQuery(type="Patient"))) == 4
    system = _keys(repo.history(HistoryQuery()))
    assert system == [("Patient", "p1", 3), ("Patient", "p1", 2), ("Observation", "o1", 1),
                      ("Patient", "p2", 1), ("Patient", "p1", 1)]


def test_history_since_filters_by_last_updated(repo: Repository) -> None:
    """_since keeps entries written at or after the instant."""
    _seed_history(repo)
    assert _keys(repo.history(HistoryQuery(since_us=T0 + 30))) == [
        ("Patient", "p1", 3), ("Patient", "p1", 2), ("Observation", "o1", 1)]
    assert repo.history(HistoryQuery(since_us=T0 + 51)) == []


def test_history_at_returns_versions_current_at_that_instant(repo: Repository) -> None:
    """_at keeps, per resource, the version that was current at the instant."""
    _seed_history(repo)
    assert _keys(repo.history(HistoryQuery(type="Patient", at_us=T0 + 25))) == [
        ("Patient", "p2", 1), ("Patient", "p1", 1)]
    assert _keys(repo.history(HistoryQuery(type="Patient", id="p1", at_us=T0 + 45))) == [("Patient", "p1", 2)]
    assert repo.history(HistoryQuery(at_us=T0 + 5)) == []


def test_history_pages_with_count_and_before_seq(repo: Repository) -> None:
    """Paging by count and the before_seq cursor visits every entry exactly once."""
    _seed_history(repo)
    seen: list[tuple[str, str, int]] = []
    cursor = None
    while True:
        page = repo.history(HistoryQuery(count=2, before_seq=cursor))
        if not page:
            break
        assert len(page) <= 2
        seen += _keys(page)
        cursor = page[-1].seq
    assert seen == _keys(repo.history(HistoryQuery(count=100)))
    assert len(seen) == 5


def test_history_count_matches_the_filters(repo: Repository) -> None:
    """history_count counts what history would list without paging."""
    _seed_history(repo)
    assert repo.history_count(HistoryQuery()) == 5
    assert repo.history_count(HistoryQuery(type="Patient")) == 4
    assert repo.history_count(HistoryQuery(type="Patient", id="p1")) == 3
    assert repo.history_count(HistoryQuery(since_us=T0 + 30)) == 3
    assert repo.history_count(HistoryQuery(type="Patient", at_us=T0 + 45)) == 2
    assert repo.history_count(HistoryQuery(type="Nothing")) == 0


def test_rolled_back_unit_of_work_leaves_nothing(repo: Repository) -> None:
    """An exception inside the transaction discards its head, history and index rows."""
    with pytest.raises(RuntimeError), repo.transaction() as uow:
        uow.write(mk("Patient", "p1", 1, full_index("gone")))
        assert uow.read("Patient", "p1") is not None  # visible inside its own transaction
        raise RuntimeError("boom")
    assert repo.read("Patient", "p1") is None
    assert repo.history_count(HistoryQuery()) == 0
    assert index_counts(repo, "Patient", "p1") == dict.fromkeys(ALL_TABLES, 0)
    assert repo.fetch("SELECT count(*) FROM idx_token", []) == [(0,)]


def test_rolled_back_update_keeps_the_previous_version(repo: Repository) -> None:
    """A failed update leaves the old head, its history and its index rows in place."""
    put(repo, "Patient", "p1", full_index("keep"), name="kept")
    with pytest.raises(FhirError), repo.transaction() as uow:
        cur = uow.current("Patient", "p1")
        assert cur is not None
        uow.write(mk("Patient", "p1", 2, IndexRows(), pk=cur.pk))
        raise FhirError.of(Category.PRECONDITION, "changed my mind")
    v = repo.read("Patient", "p1")
    assert v is not None and v.version == 1 and body(v.data)["name"] == "kept"
    assert index_counts(repo, "Patient", "p1") == dict.fromkeys(ALL_TABLES, 1)
    assert repo.check() == []


def test_check_is_empty_on_a_healthy_store(repo: Repository) -> None:
    """check() finds nothing wrong after ordinary creates, updates and deletes."""
    assert repo.check() == []
    _seed_history(repo)
    put(repo, "Observation", "o1", full_index("y"))
    assert repo.check() == []


def test_check_detects_a_missing_history_row(repo: Repository) -> None:
    """Deleting a history row by hand is reported (broken head and version gap)."""
    put(repo, "Patient", "p1")
    put(repo, "Patient", "p1")
    with repo.transaction() as uow:
        uow.fetch("DELETE FROM history WHERE version = ? RETURNING seq", [2])
    problems = repo.check()
    assert any("head does not point" in p and "Patient/p1" in p for p in problems)
    assert any("not contiguous" in p for p in problems)


def test_check_detects_an_orphan_index_row(repo: Repository) -> None:
    """An index row for a resource that does not exist is reported."""
    put(repo, "Patient", "p1", full_index("ok"))
    with repo.transaction() as uow:
        uow.fetch("INSERT INTO idx_token (param, code, system, res) VALUES (?, ?, ?, ?) RETURNING res",
                  [1, 2, 3, 987654])
    assert repo.check() == ["idx_token has rows for a missing or deleted resource (pk 987654)"]


def test_iter_current_yields_live_heads_across_pages(repo: Repository) -> None:
    """iter_current pages through every live resource once, skipping deleted ones."""
    for i in range(7):
        put(repo, "Patient", f"p{i}")
    put(repo, "Patient", "p3")
    put(repo, "Patient", "p5", delete=True)
    got = sorted((v.id, v.version) for v in repo.iter_current(batch=2))
    assert got == sorted([(f"p{i}", 1) for i in range(7) if i not in (3, 5)] + [("p3", 2)])
    assert all(isinstance(v.data, bytes) for v in repo.iter_current(batch=3))


def test_sql_metacharacters_are_stored_verbatim(repo: Repository) -> None:
    """Quotes, semicolons, ?, % and backslashes in ids and values round-trip unchanged."""
    put(repo, "Basic", NASTY, IndexRows(strings=[(3, NASTY, NASTY)], uris=[(8, "?a=%41&b=%%")]),
        note=NASTY)
    v = repo.read("Basic", NASTY)
    assert v is not None and v.id == NASTY and body(v.data)["note"] == NASTY
    assert repo.fetch("SELECT exact FROM idx_string WHERE norm = ?", [NASTY]) == [(NASTY,)]
    assert repo.fetch("SELECT uri FROM idx_uri WHERE uri = ?", ["?a=%41&b=%%"]) == [("?a=%41&b=%%",)]
    assert _keys(repo.history(HistoryQuery(type="Basic", id=NASTY))) == [("Basic", NASTY, 1)]


def test_fetch_converts_placeholders_and_keeps_percent_literals(repo: Repository) -> None:
    """fetch takes qmark parameters; a literal % in the SQL text is an ordinary character."""
    put(repo, "Patient", "100%")
    put(repo, "Patient", "plain")
    rows = repo.fetch("SELECT id FROM resources WHERE id LIKE '%\\%%' ESCAPE '\\' AND type = ?", ["Patient"])
    assert rows == [("100%",)]
    rows = repo.fetch("SELECT id, version FROM resources WHERE type = ? AND version >= ? ORDER BY id",
                      ["Patient", 1])
    assert rows == [("100%", 1), ("plain", 1)]


def test_prefix_ranges_use_binary_order(repo: Repository) -> None:
    """The search layer's prefix range (>= s AND < s + U+10FFFF) matches exactly the prefixed strings."""
    for i, norm in enumerate(["abc", "abd", "ab", "ab zz", "b", "äbc", "ABC"]):
        put(repo, "Patient", f"p{i}", IndexRows(strings=[(3, norm, norm)]))
    rows = repo.fetch("SELECT norm FROM idx_string WHERE param = ? AND norm >= ? AND norm < ? ORDER BY norm",
                      [3, "ab", "ab\U0010ffff"])
    assert [r[0] for r in rows] == ["ab", "ab zz", "abc", "abd"]


def test_unit_of_work_reads_its_own_writes(repo: Repository) -> None:
    """Inside a transaction, read and current see the versions written earlier in it."""
    with repo.transaction() as uow:
        uow.write(mk("Patient", "p1", 1))
        cur = uow.current("Patient", "p1")
        assert cur is not None and cur.version == 1 and not cur.deleted
        uow.write(mk("Patient", "p1", 2, pk=cur.pk, lu=T0 + 1, n=2))
        v = uow.read("Patient", "p1")
        assert v is not None and v.version == 2
    assert repo.history_count(HistoryQuery(id="p1")) == 2
    assert repo.check() == []


def test_bundle_sized_transaction_stores_exactly_the_final_index_rows(repo: Repository) -> None:
    """Many writes in one transaction (one resource twice, duplicate rows) leave only the final rows."""
    with repo.transaction() as uow:
        for i in range(60):
            idx = full_index(f"r{i}")
            idx.references.append((7, 71, "Patient", "duplicate key, other target"))
            idx.tokens.append((1, 11, 12))
            uow.write(mk("Observation", f"o{i}", 1, idx))
        cur = uow.current("Observation", "o0")
        assert cur is not None
        uow.write(mk("Observation", "o0", 2, IndexRows(uris=[(8, "urn:final")]), pk=cur.pk, lu=T0 + 1))
        inside = uow.fetch("SELECT count(*) FROM idx_token", [])
        assert inside == [(59,)]  # searches inside the transaction see its own index rows
        for i in range(60, 120):
            uow.write(mk("Observation", f"o{i}", 1, full_index(f"r{i}")))
    assert index_counts(repo, "Observation", "o0") == {**dict.fromkeys(ALL_TABLES, 0), "idx_uri": 1}
    assert index_counts(repo, "Observation", "o1") == dict.fromkeys(ALL_TABLES, 1)
    assert repo.fetch("SELECT count(*) FROM idx_reference", []) == [(119,)]
    assert repo.fetch("SELECT target FROM idx_reference x JOIN resources r ON r.pk = x.res WHERE r.id = ?",
                      ["o7"]) == [("p-r7",)]
    assert repo.check() == []
