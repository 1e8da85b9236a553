"""Follow-up (logguppföljning) on both backends: reports by patient, user, unit and period, emergency
accesses, protected-identity patients, a seeded sample; NDJSON and national-contract CSV exports; and a
patient's own access log (patient/AuditEvent.rs). https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import orjson
from authkit import AuthServer

from samverka.audit import chain
from samverka.audit.model import Entity, Who, columns, event
from samverka.audit.query import CSV_FIELDS, Report, export, report
from samverka.auth import tokens
from samverka.fhir.instant import parse_instant
from samverka.store import Repository, open_repository
from samverka.store.sqlite import SqliteRepository
from support.server import samverka_command

U1 = Who(client_id="journal", user_id="SE2321000131-P000000000001", unit_id="SE2321000131-E000000000011",
         provider_id="SE2321000131-E000000000001")
U2 = Who(client_id="journal", user_id="SE2321000131-P000000000002", unit_id="SE2321000131-E000000000012",
         provider_id="SE2321000131-E000000000001", emergency_patients=frozenset({"pB"}))
DAY1, DAY2 = parse_instant("2026-03-01T10:00:00Z"), parse_instant("2026-03-02T10:00:00Z")


def _seed(repo: Repository) -> None:
    with repo.transaction() as uow:  # pB has a protected identity (sekretessmarkering)
        for pid, security in (("pA", []), ("pB", [{"code": "protected-information"}])):
            data = orjson.dumps({"resourceType": "Patient", "id": pid, "meta": {"security": security}})
            from samverka.store import IndexRows, Write

            uow.write(Write("Patient", pid, 1, "2026-03-01T00:00:00.000Z", DAY1, "PUT", data, IndexRows(), pid))
    chain.write(repo, [
        event(U1, "read", "0", ["pA"], [Entity("Observation", "o1", 1)], recorded_us=DAY1),
        event(U1, "create", "0", ["pA"], [Entity("Observation", "o2", 1)], recorded_us=DAY1 + 1000),
        event(U2, "read", "0", ["pB"], [Entity("Condition", "c1", 1)], recorded_us=DAY2),
        event(U2, "search-type", "0", ["pA", "pB"], [Entity("Observation", "o1")], recorded_us=DAY2 + 1000),
        event(U1, "delete", "0", ["pA"], [Entity("Observation", "o2", 2)], recorded_us=DAY2 + 2000),
    ])


def _ids(events: list[dict[str, object]]) -> list[tuple[str, tuple[str, ...]]]:
    return [(str(e["action"]), columns(e).patients) for e in events]


def test_reports(repo: Repository) -> None:
    _seed(repo)
    assert len(report(repo, Report())) == 5
    assert _ids(report(repo, Report(patient="pB"))) == [("R", ("pB",)), ("R", ("pA", "pB"))]
    assert _ids(report(repo, Report(user=U1.user_id))) == [("R", ("pA",)), ("C", ("pA",)), ("D", ("pA",))]
    assert len(report(repo, Report(unit=U2.unit_id))) == 2
    assert len(report(repo, Report(start="2026-03-02"))) == 3
    assert len(report(repo, Report(end="2026-03-01"))) == 2
    assert len(report(repo, Report(start="2026-03-01", end="2026-03-01T10:00:00Z", user=U1.user_id))) == 1
    assert _ids(report(repo, Report(emergency=True))) == [("R", ("pB",)), ("R", ("pA", "pB"))]
    assert len(report(repo, Report(protected=True))) == 2
    one = report(repo, Report(sample=2, seed=7))
    assert len(one) == 2 and one == report(repo, Report(sample=2, seed=7))
    samples = {tuple(e["id"] for e in report(repo, Report(sample=2, seed=s))) for s in range(20)}
    assert len(samples) > 1


def test_exports(repo: Repository) -> None:
    _seed(repo)
    events = report(repo, Report())
    lines = export(events, "ndjson").splitlines()
    assert [orjson.loads(x)["resourceType"] for x in lines] == ["AuditEvent"] * 5
    rows = list(csv.DictReader(io.StringIO(export(events, "csv"))))
    assert tuple(rows[0]) == CSV_FIELDS
    assert [(r["activity_type"], r["patient_id"], r["resource_type"]) for r in rows] == [
        ("Läsa", "pA", "Observation"), ("Skriva", "pA", "Observation"), ("Nödöppning", "pB", "Condition"),
        ("Nödöppning", "pA", "Observation"), ("Nödöppning", "pB", "Observation"), ("Radera", "pA", "Observation")]
    first = rows[0]
    assert first["user_hsa_id"] == U1.user_id and first["user_care_unit_hsa_id"] == U1.unit_id
    assert first["user_care_provider_hsa_id"] == U1.provider_id and first["purpose"] == "TREAT"
    assert first["log_id"] == events[0]["id"] and first["system_hsa_id"] and first["time"].startswith("2026-03-01T10")


def test_cli_report(tmp_path: Path) -> None:
    repo = SqliteRepository(tmp_path / "samverka.sqlite")
    try:
        _seed(repo)
    finally:
        repo.close()
    base = [*samverka_command(), "audit", "report", "--data-dir", str(tmp_path)]
    r = subprocess.run([*base, "--emergency", "--format", "csv"], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert [row["patient_id"] for row in csv.DictReader(io.StringIO(r.stdout))] == ["pB", "pA", "pB"]
    r = subprocess.run([*base, "--protected", "--from", "2026-03-02", "--to", "2026-03-02"], capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr
    s1 = subprocess.run([*base, "--sample", "2", "--seed", "3"], capture_output=True, text=True, timeout=120)
    s2 = subprocess.run([*base, "--sample", "2", "--seed", "3"], capture_output=True, text=True, timeout=120)
    assert s1.stdout == s2.stdout and len(s1.stdout.splitlines()) == 2


def _patient_token(server: AuthServer, pid: str) -> str:
    """A patient-facing app's token, signed by the server's own key ring (as its authorize endpoint would)."""
    args = server.store_args
    repo = open_repository(args[1] if args[0] == "--data-dir" else None,
                           args[1] if args[0] == "--database" else None)
    try:
        token, _ = tokens.mint(tokens.KeyRing(repo), {
            "iss": f"{server.origin}/auth", "aud": f"{server.origin}/fhir", "sub": "patient-app",
            "client_id": "patient-app", "scope": "patient/AuditEvent.rs", "patient": pid}, 300)
    finally:
        repo.close()
    return token


def test_a_patient_sees_only_their_own_access_log(audit_server: AuthServer) -> None:
    from auditkit import client_token

    _cid, full = client_token(audit_server, "system/*.cruds")
    with audit_server.fhir(full) as fhir:
        mine, other = (fhir.post("/Patient", json={"resourceType": "Patient"}).json()["id"] for _ in range(2))
        assert fhir.get(f"/Patient/{mine}").status_code == 200
        assert fhir.get(f"/Patient/{other}").status_code == 200
    with audit_server.fhir(_patient_token(audit_server, mine)) as fhir:
        r = fhir.get("/AuditEvent")
        assert r.status_code == 200, r.text
        got = [e["resource"] for e in r.json()["entry"]]
        assert len(got) == 2 and all(columns(e).patients == (mine,) for e in got)
        assert fhir.get("/AuditEvent", params={"patient": other}).json().get("entry", []) == []
        foreign = next(iter(_all(audit_server, other)))
        assert fhir.get(f"/AuditEvent/{foreign}").status_code == 404


def _all(server: AuthServer, pid: str) -> list[str]:
    from auditkit import client_token

    _cid, auditor = client_token(server, "user/AuditEvent.rs")
    with server.fhir(auditor) as fhir:
        return [e["resource"]["id"] for e in fhir.get("/AuditEvent", params={"patient": pid}).json()["entry"]]
