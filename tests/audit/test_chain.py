"""The hash chain on both backends: `verify` passes on a clean log and finds an edited, deleted,
reordered or truncated record; the tables refuse UPDATE and DELETE (https://profiles.ihe.net/ITI/BALP/)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from samverka.audit import chain, side
from samverka.audit.model import Entity, Who, columns, event
from samverka.store import Repository
from samverka.store.sqlite import SqliteRepository
from support.server import samverka_command

WHO = Who(client_id="module-a", user_id="SE2321000131-P000000000001", user_name="Ada Läkare", role="läkare",
          unit_id="SE2321000131-E000000000011", provider_id="SE2321000131-E000000000001", address="10.1.2.3")


def _events(n: int) -> list[dict[str, object]]:
    return [event(WHO, "read", "0", [f"p{i}"], [Entity("Observation", f"o{i}", 1)]) for i in range(n)]


def _raw(repo: Repository, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Tamper as a database administrator would: switch the append-only triggers off first."""
    with repo.transaction() as uow:
        if repo.dialect == "sqlite":
            for name in ("audit_log_no_update", "audit_log_no_delete", "audit_head_no_delete",
                         "audit_patient_no_change", "audit_patient_no_delete"):
                uow.execute(f"DROP TRIGGER IF EXISTS {name}", ())
        else:
            uow.execute("ALTER TABLE audit_log DISABLE TRIGGER USER", ())
            uow.execute("ALTER TABLE audit_patient DISABLE TRIGGER USER", ())
        for sql, params in statements:
            uow.execute(sql, params)


def test_record_shape_follows_balp() -> None:
    ev = event(WHO, "search-type", "0", ["p2", "p1"], [Entity("Observation", "o1")], query="code=x")
    assert ev["meta"]["profile"] == ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery"]
    c = columns(ev)
    assert (c.action, c.subtype, c.purpose, c.patients) == ("R", "search-type", "TREAT", ("p1", "p2"))
    assert (c.user_id, c.unit_id, c.provider_id, c.client_id) == (WHO.user_id, WHO.unit_id, WHO.provider_id,
                                                                  "module-a")
    user = ev["agent"][0]
    assert user["requestor"] is True and user["network"] == {"address": "10.1.2.3", "type": "2"}
    assert user["who"]["display"] == "Ada Läkare" and user["role"] == [{"text": "läkare"}]
    emergency = Who(user_id="u", emergency_patients=frozenset({"p1"}))
    assert columns(event(emergency, "read", "0", ["p1"], [])).purpose == "ETREAT"
    assert columns(event(emergency, "read", "0", ["p2"], [])).purpose == "TREAT"


def test_clean_chain_verifies(repo: Repository) -> None:
    assert chain.verify(repo).ok and chain.verify(repo).checked == 0
    chain.write(repo, _events(3))
    chain.write(repo, _events(2))
    v = chain.verify(repo)
    assert v.ok and v.checked == 5
    positions = [r[0] for r in repo.fetch("SELECT pos FROM audit_log ORDER BY pos", ())]
    assert positions == [1, 2, 3, 4, 5]


def test_the_tables_refuse_update_and_delete(repo: Repository) -> None:
    chain.write(repo, _events(1))
    assert side.catch_up(repo) == 1
    for sql in ("UPDATE audit_log SET outcome = '8'", "DELETE FROM audit_log", "DELETE FROM audit_patient"):
        with pytest.raises(Exception, match="append-only"), repo.transaction() as uow:
            uow.execute(sql, ())
    assert chain.verify(repo).ok


def test_an_edited_record_is_found(repo: Repository) -> None:
    chain.write(repo, _events(5))
    data = orjson.loads(repo.fetch("SELECT data FROM audit_log WHERE pos = 3", ())[0][0])
    data["outcome"] = "8"
    _raw(repo, ("UPDATE audit_log SET data = ? WHERE pos = 3", (orjson.dumps(data).decode(),)))
    v = chain.verify(repo)
    assert (v.ok, v.broken_at, v.checked) == (False, 3, 2)


def test_an_edited_search_column_is_found(repo: Repository) -> None:
    chain.write(repo, _events(4))
    _raw(repo, ("UPDATE audit_log SET user_id = ? WHERE pos = 2", ("SE2321000131-P000000000099",)))
    assert chain.verify(repo).broken_at == 2


def test_patient_and_entity_rows_follow_the_chain_and_are_checked(repo: Repository) -> None:
    """audit.side: rows are written behind the watermark; up to it they must be exact, after it absent."""
    chain.write(repo, _events(4))
    assert repo.fetch("SELECT count(*) FROM audit_patient", ())[0][0] == 0
    assert side.backlog(repo) == 4 and chain.verify(repo).ok
    assert side.catch_up(repo, limit=3, chunk=2) == 3  # two transactions: 2 + 1
    assert side.watermark(repo) == 3 and side.backlog(repo) == 1 and chain.verify(repo).ok
    indexed = {(str(p), int(pos)) for p, pos in repo.fetch("SELECT patient, pos FROM audit_patient", ())}
    assert indexed == {(p, pos) for pos in (1, 2, 3) for p in columns(_events(4)[pos - 1]).patients}
    _raw(repo, ("INSERT INTO audit_patient (patient, pos) VALUES ('someone-else', 4)", ()))  # ahead of the mark
    assert chain.verify(repo).broken_at == 4
    _raw(repo, ("DELETE FROM audit_patient WHERE pos = 4", ()), ("DELETE FROM audit_patient WHERE pos = 2", ()))
    v = chain.verify(repo)
    assert (v.broken_at, v.reason) == (2, "its patient or entity rows differ from its AuditEvent")


def test_a_deleted_record_is_found(repo: Repository) -> None:
    chain.write(repo, _events(5))
    _raw(repo, ("DELETE FROM audit_log WHERE pos = 2", ()))
    v = chain.verify(repo)
    assert not v.ok and v.broken_at == 2 and "missing" in v.reason


def test_a_deleted_last_record_is_found(repo: Repository) -> None:
    chain.write(repo, _events(3))
    _raw(repo, ("DELETE FROM audit_log WHERE pos = 3", ()))
    v = chain.verify(repo)
    assert not v.ok and v.broken_at == 3


def test_reordered_records_are_found(repo: Repository) -> None:
    chain.write(repo, _events(5))
    _raw(repo, ("UPDATE audit_log SET pos = -2 WHERE pos = 2", ()), ("UPDATE audit_log SET pos = 2 WHERE pos = 4", ()),
         ("UPDATE audit_log SET pos = 4 WHERE pos = -2", ()))
    assert chain.verify(repo).broken_at == 2


def test_cli_verify_exit_codes(tmp_path: Path) -> None:
    repo = SqliteRepository(tmp_path / "samverka.sqlite")
    try:
        chain.write(repo, _events(4))
    finally:
        repo.close()
    cmd = [*samverka_command(), "audit", "verify", "--data-dir", str(tmp_path)]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0 and "4 audit records" in ok.stderr, ok.stderr
    repo = SqliteRepository(tmp_path / "samverka.sqlite")
    try:
        _raw(repo, ("UPDATE audit_log SET data = replace(data, '\"R\"', '\"C\"') WHERE pos = 3", ()))
    finally:
        repo.close()
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 1 and "broken at record 3" in bad.stderr, bad.stderr


def test_one_statement_append_writes_only_onto_the_head_it_was_given(repo: Repository) -> None:
    """PostgreSQL's one-round-trip append: linked to the right head it appends; to a stale one it writes
    nothing and says so (the caller then appends under the lock)."""
    if repo.dialect != "postgresql":
        pytest.skip("PostgreSQL only")
    chain.write(repo, _events(2))
    head = (2, str(repo.fetch("SELECT hash FROM audit_head", ())[0][0]))
    new = chain.append_one_statement(repo, [chain.prepare(e) for e in _events(3)], head)
    assert new is not None and new[0] == 5
    assert chain.append_one_statement(repo, [chain.prepare(e) for e in _events(1)], head) is None  # stale
    assert [int(r[0]) for r in repo.fetch("SELECT pos FROM audit_log ORDER BY pos", ())] == [1, 2, 3, 4, 5]
    assert tuple(repo.fetch("SELECT pos, hash FROM audit_head", ())[0]) == new
    v = chain.verify(repo)
    assert v.ok and v.checked == 5
