"""The Bulk Data export runner on real stores (SQLite and PostgreSQL): snapshots, crashes and takeovers.

https://hl7.org/fhir/uv/bulkdata/export.html -- `transactionTime` is a snapshot: what changed after it is
exported as it was then. A runner that dies between appending a page and committing its progress leaves
bytes the job does not own; whoever takes over cuts them off, so every file holds each resource once.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "search"))

from test_custom_params import services

from samverka.interactions import create, delete, export, export_run, jobs, update
from samverka.interactions.context import Services


@pytest.fixture
def svc(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Services]:
    s = services(backend, tmp_path, request)
    s = dataclasses.replace(s, settings=dataclasses.replace(s.settings, export_dir=tmp_path / "exports"))
    try:
        yield s
    finally:
        s.repo.close()


def _patient(pid: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}


def _obs(oid: str, pid: str, status: str = "final") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": status, "code": {"text": "puls"},
            "subject": {"reference": f"Patient/{pid}"}}


def _record(svc: Services, *pairs: tuple[str, str], level: str = "system") -> str:
    job, _members = export.record(svc, "http://x/fhir", "http://x/fhir/$export", None, level == "patient",
                                  list(pairs), None, {"respond-async": ""}, (None, None), lambda t, named: True)
    return job


def _lines(svc: Services, job: str) -> dict[str, list[dict[str, Any]]]:
    """Every output file's resources by type (in file order), after checking the manifest's counts."""
    done = export_run.load(svc.repo, job)
    assert done is not None and done.status == "done", done
    out: dict[str, list[dict[str, Any]]] = {}
    for f in done.state["outputs"]:
        rows = [orjson.loads(x) for x in (export_run.folder(svc, job) / f["name"]).read_bytes().splitlines()]
        assert len(rows) == f["count"], f
        out.setdefault(f["type"], []).extend(rows)
    return out


def test_changes_after_the_transaction_time_are_exported_as_they_were(svc: Services) -> None:
    for i in range(5):
        update.update(svc, "Patient", f"p{i}", _patient(f"p{i}", f"Före{i}"))
    update.update(svc, "Observation", "o1", _obs("o1", "p1"))
    job = _record(svc)
    time.sleep(0.002)
    update.update(svc, "Patient", "p2", _patient("p2", "Efter"))  # after the transaction time
    delete.delete(svc, "Patient", "p3", None)
    create.create(svc, "Patient", _patient("late", "Sen"), None)
    assert export_run.run(svc, job, page=2) is not None
    got = _lines(svc, job)
    families = {r["id"]: r["name"][0]["family"] for r in got["Patient"]}
    # p2 as it was at the transaction time (version 1); p3 deleted later is not in this snapshot (documented
    # limit: deleted rows are not searched); the one created later is not there
    assert families == {"p0": "Före0", "p1": "Före1", "p2": "Före2", "p4": "Före4"}
    assert next(r for r in got["Patient"] if r["id"] == "p2")["meta"]["versionId"] == "1"
    assert [r["id"] for r in got["Observation"]] == ["o1"]


def test_since_exports_changes_and_deletions_only(svc: Services) -> None:
    for i in range(4):
        update.update(svc, "Patient", f"p{i}", _patient(f"p{i}", "A"))
    time.sleep(0.002)
    from samverka.fhir.instant import format_instant, now_us

    since = format_instant(now_us())
    time.sleep(0.002)
    update.update(svc, "Patient", "p1", _patient("p1", "B"))
    delete.delete(svc, "Patient", "p2", None)
    job = _record(svc, ("_since", since))
    export_run.run(svc, job, page=1)
    got = _lines(svc, job)
    assert [(r["id"], r["name"][0]["family"]) for r in got["Patient"]] == [("p1", "B")]
    state = export_run.load(svc.repo, job)
    assert state is not None
    [deleted] = state.state["deleted"]
    bundles = [orjson.loads(x) for x in (export_run.folder(svc, job) / deleted["name"]).read_bytes().splitlines()]
    assert [e["request"] for b in bundles for e in b["entry"]] == [{"method": "DELETE", "url": "Patient/p2"}]


def test_a_page_written_by_a_dead_runner_is_cut_off_when_the_job_is_taken_over(svc: Services) -> None:
    for i in range(7):
        update.update(svc, "Patient", f"p{i}", _patient(f"p{i}", "X"))
        update.update(svc, "Observation", f"o{i}", _obs(f"o{i}", f"p{i}"))
    job_id = _record(svc)
    job = export_run.claim(svc.repo, job_id)
    assert job is not None
    job = export_run.step(svc, job, page=3)  # committed: o0..o2
    # the runner appends its next page to the file and dies before committing the progress
    # (longer than everything that follows it, so only cutting the file removes it)
    junk = b'{"resourceType":"Observation","id":"o3","note":[{"text":"' + b"x" * 50_000 + b'"}]}'
    export_run._append(svc, job, "output", "Observation", [junk, junk])
    name = job.state["file"]
    assert (export_run.folder(svc, job_id) / name).read_bytes().count(b"\n") == 5
    with svc.repo.transaction() as uow:  # as a runner in a process that has exited leaves it
        uow.execute("UPDATE export_jobs SET runner = ?, heartbeat = ? WHERE id = ?",
                    (f"{jobs.owner().rsplit(':', 2)[0]}:999999999:1", 0, job_id))
    done = export_run.run(svc, job_id, page=3)
    assert done is not None and done.status == "done"
    got = _lines(svc, job_id)
    assert sorted(r["id"] for r in got["Observation"]) == [f"o{i}" for i in range(7)]
    assert sorted(r["id"] for r in got["Patient"]) == [f"p{i}" for i in range(7)]
    patients = {(str(f), str(p)) for f, p in svc.repo.fetch(
        "SELECT file, patient FROM export_patients WHERE job = ?", (job_id,))}
    assert {p for f, p in patients if f == name} == {f"p{i}" for i in range(7)}


def test_a_live_runners_job_is_not_taken(svc: Services) -> None:
    update.update(svc, "Patient", "p0", _patient("p0", "X"))
    job_id = _record(svc)
    assert export_run.claim(svc.repo, job_id) is not None  # this thread runs it now
    with svc.repo.transaction() as uow:  # a runner on another host that reported a moment ago
        uow.execute("UPDATE export_jobs SET runner = ?, heartbeat = ? WHERE id = ?",
                    ("elsewhere:1:1", export_run.now_us(), job_id))
    assert export_run.claim(svc.repo, job_id) is None
    assert export_run.run(svc, job_id) is None


def test_cancelled_jobs_stop_and_lose_their_files(svc: Services) -> None:
    for i in range(6):
        update.update(svc, "Patient", f"p{i}", _patient(f"p{i}", "X"))
    job_id = _record(svc)
    job = export_run.claim(svc.repo, job_id)
    assert job is not None
    job = export_run.step(svc, job, page=2)
    folder = export_run.folder(svc, job_id)
    assert any(folder.iterdir())
    export.cancel(svc, job_id, (None, None))
    assert not folder.exists()
    with pytest.raises(export_run._Lost):
        export_run.step(svc, job, page=2)
    with pytest.raises(Exception, match="no export job"):
        export.status(svc, "http://x/fhir", job_id, (None, None))
