"""Writing a Bulk Data export's files: https://hl7.org/fhir/uv/bulkdata/export.html#response---complete-status

One runner (a thread; `interactions.jobs` says whose) walks the job's types in turn. For each type it pages
through the same plan a search would use (`search.plan`, with the access filters stored at kick-off), in key
order by keyset cursor, in three phases:
1. `current`: resources last changed at or before the transaction time;
2. `changed`: resources changed after it, written as their version at that time (from the history);
3. `deleted` (with `_since` only): resources deleted since `_since`, as Bundles of DELETE entries.
Each page is appended to the current NDJSON file and fsynced, then the job's progress (cursor, file, its
length) commits with the page's patients. A runner that dies leaves at most one uncommitted page in a
file: whoever takes the job over cuts the file back to its committed length and goes on from the cursor,
so every file holds each resource once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import FhirError
from ..fhir.instant import format_instant, now_us
from ..fhir.summary import elements
from ..search import plan
from ..store import Repository, UnitOfWork, Version
from ..sweden.protected import protected, strip
from . import jobs
from .context import Services

log = logging.getLogger("samverka.export")
PAGE = 1000
FILE_LINES = 50_000  # resources per output file; a type with more gets several files
_COLS = "id, status, client_id, user_id, request, spec, state, runner, heartbeat, error"


@dataclass
class Job:
    id: str
    status: str  # running | done | failed | cancelled
    client_id: str | None
    user_id: str | None
    request: str
    spec: dict[str, Any]
    state: dict[str, Any]
    runner: str | None
    heartbeat: int
    error: str | None

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> Job:
        return cls(row[0], row[1], row[2], row[3], row[4], orjson.loads(row[5]), orjson.loads(row[6]), *row[7:])

    def alive(self) -> bool:
        return jobs.alive(self.runner, self.heartbeat)

    def progress(self) -> str:
        types, i = self.spec["types"], self.state["type"]
        at = f"now {types[i]} (type {i + 1} of {len(types)})" if i < len(types) else "finishing"
        return f"{self.state['written']} resources written; {at}"


def initial_state() -> dict[str, Any]:
    return {"type": 0, "phase": "current", "query": 0, "cursor": None, "file": None, "kind": None, "lines": 0,
            "offset": 0, "parts": {}, "outputs": [], "deleted": [], "errors": [], "written": 0}


def folder(svc: Services, job: str) -> Path:
    return Path(svc.settings.export_dir or svc.settings.data_dir / "exports") / job


def load(repo: Repository, job: str) -> Job | None:
    rows = repo.fetch(f"SELECT {_COLS} FROM export_jobs WHERE id = ?", (job,))
    return Job.of(rows[0]) if rows else None


class _Lost(Exception):
    """The job was cancelled or taken over: this runner stops."""


def claim(repo: Repository, job_id: str) -> Job | None:
    """Take the job when it runs and nobody alive runs it; None otherwise."""
    with repo.transaction() as uow:
        rows = uow.fetch(f"SELECT {_COLS} FROM export_jobs WHERE id = ?", (job_id,))
        if not rows:
            return None
        job = Job.of(rows[0])
        if job.status != "running" or (job.runner != jobs.owner() and job.alive()):
            return None
        got = uow.execute("UPDATE export_jobs SET runner = ?, heartbeat = ? WHERE id = ? AND status = 'running'"
                          f" AND COALESCE(runner, '') = ? RETURNING {_COLS}",
                          (jobs.owner(), now_us(), job_id, job.runner or ""))
    return Job.of(got[0]) if got else None


def run(svc: Services, job_id: str, page: int = PAGE) -> Job | None:
    """Run a job to its end in this thread; None when someone else has it (or it was cancelled)."""
    job = claim(svc.repo, job_id)
    if job is None:
        return None
    failures = 0
    while job.status == "running":
        try:
            job = step(svc, job, page)
            failures = 0
        except _Lost:
            return None
        except FhirError as exc:  # a busy store: the page's progress rolled back; the file is cut back on retry
            failures += 1
            if failures > 20:
                raise
            log.warning("export job %s: page retried: %s", job.id, exc)
            time.sleep(0.2)
    return job


def run_in_background(svc: Services, job_id: str) -> None:
    def target() -> None:
        try:
            run(svc, job_id)
        except Exception as exc:
            log.exception("export job %s failed", job_id)
            with svc.repo.transaction() as uow:
                uow.execute("UPDATE export_jobs SET status = 'failed', runner = NULL, finished = ?, error = ?"
                            " WHERE id = ? AND status = 'running'",
                            (now_us(), f"{type(exc).__name__}: {exc}"[:2000], job_id))

    threading.Thread(target=target, name=f"export-{job_id[:8]}", daemon=True).start()


def resume_in_background(svc: Services) -> None:
    """At start-up: continue every export whose runner died (several workers may try; one claim wins)."""
    for row in svc.repo.fetch("SELECT id, runner, heartbeat FROM export_jobs WHERE status = 'running'", ()):
        if not jobs.alive(row[1], int(row[2])):
            run_in_background(svc, str(row[0]))


def step(svc: Services, job: Job, page: int = PAGE) -> Job:
    """One page: fetch it, append it to the current file, commit the progress."""
    st, spec = job.state, job.spec
    types = spec["types"]
    if st["type"] >= len(types):
        return _finish(svc, job)
    type_ = types[st["type"]]
    if st["phase"] == "deleted":
        return _deleted_page(svc, job, type_, page)
    queries = spec["type_filters"].get(type_) or [[]]
    p = _plan(svc, spec, type_, queries, st["query"], st["phase"])
    pg = plan.page(svc.repo, p, page, st["cursor"])
    versions = pg.versions if st["phase"] == "current" else _as_of(svc.repo, pg.versions, spec)
    names = _element_names(spec["elements"], type_)
    redact = bool(spec.get("redact")) and type_ == "Patient"
    written = _append(svc, job, "output", type_, [_line(v, names, redact) for v in versions])
    st["cursor"] = pg.last_key
    if not pg.more:
        st["cursor"] = None
        if st["query"] + 1 < len(queries):
            st["query"] += 1
        elif st["phase"] == "current":
            st["phase"], st["query"] = "changed", 0
        elif spec["since"] is not None:
            st["phase"], st["query"] = "deleted", 0
        else:
            _next_type(st)
    return _save(svc.repo, job, written, [v.compartment for v in versions])


def _plan(svc: Services, spec: dict[str, Any], type_: str, queries: list[list[list[str]]], i: int,
          phase: str) -> plan.Plan:
    """The search plan of the `i`-th `_typeFilter` query (none: every resource of the type) for a phase,
    without what an earlier query of the same type already matched."""
    at, since = spec["at"], spec["since"]
    filters: list[tuple[str, list[Any]]] = [(sql, list(ps)) for sql, ps in spec["filters"]]
    pairs = [(str(k), str(v)) for k, v in queries[i]]
    bound = since if phase == "current" else at  # an index window the planner may start from (a superset)
    if bound is not None:
        pairs.append(("_lastUpdated", "ge" + format_instant(bound // 1000 * 1000)))
    if since is not None:
        filters.append(("r.last_updated > ?", [since]))
    filters.append(("r.last_updated <= ?", [at]) if phase == "current" else ("r.last_updated > ?", [at]))
    for earlier in queries[:i]:
        e = plan.build(svc.repo, svc.registry, svc.parse_query(type_, [(str(k), str(v)) for k, v in earlier]))
        filters.append((f"r.pk NOT IN (SELECT r.pk FROM {e.source} WHERE {' AND '.join(e.where)})", e.params))
    return plan.build(svc.repo, svc.registry, svc.parse_query(type_, pairs), filters)


def _as_of(repo: Repository, changed: list[Version], spec: dict[str, Any]) -> list[Version]:
    """Resources changed after the transaction time, as they were at it (left out if they did not exist)."""
    out = []
    for v in changed:
        rows = repo.fetch("SELECT h.version, h.last_updated, h.method, h.data FROM history h JOIN resources r"
                          " ON r.pk = h.pk WHERE r.type = ? AND r.id = ? AND h.last_updated <= ?"
                          " ORDER BY h.version DESC LIMIT 1", (v.type, v.id, spec["at"]))
        if rows and rows[0][3] is not None and (spec["since"] is None or int(rows[0][1]) > spec["since"]):
            version, ts, method, data = rows[0]
            out.append(Version(v.type, v.id, int(version), format_instant(int(ts)), method, bytes(data),
                               v.compartment))
    return out


def _element_names(wanted: list[str], type_: str) -> list[str] | None:
    """`_elements` for one type: `name` applies to every type, `Type.name` to that one."""
    if not wanted:
        return None
    names = [w.split(".", 1)[1] if "." in w else w for w in wanted if "." not in w or w.startswith(type_ + ".")]
    return names or None  # names only for other types: this one is exported whole


def _line(v: Version, names: list[str] | None, redact: bool) -> bytes:
    """The resource as the file holds it: narrowed by `_elements`, and a protected Patient's contact details
    removed when the requester may not see them (sweden.protected, as search does for users)."""
    assert v.data is not None
    if names is None and not (redact and b"protected-information" in v.data):
        return v.data
    body = orjson.loads(v.data)
    if redact and protected(body):
        body = strip(body)
    return orjson.dumps(elements(body, names) if names is not None else body)


def _deleted_page(svc: Services, job: Job, type_: str, page: int) -> Job:
    """Resources deleted since `_since` (at or before the transaction time): one Bundle of DELETEs per page."""
    st, spec = job.state, job.spec
    conds = ["r.type = ?", "r.deleted = 1", "r.last_updated > ?", "r.last_updated <= ?", "r.pk > ?",
             *(sql for sql, _ps in spec["filters"])]
    params = [type_, spec["since"], spec["at"], st["cursor"] or 0, *(p for _s, ps in spec["filters"] for p in ps)]
    rows = svc.repo.fetch(f"SELECT r.pk, r.id, r.compartment FROM resources r WHERE {' AND '.join(conds)}"
                          " ORDER BY r.pk LIMIT ?", [*params, page])
    written = None
    if rows:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "DELETE", "url": f"{type_}/{r[1]}"}} for r in rows]}
        written = _append(svc, job, "deleted", type_, [orjson.dumps(bundle)])
        st["cursor"] = int(rows[-1][0])
    if len(rows) < page:
        _next_type(st)
    return _save(svc.repo, job, written, [r[2] for r in rows])


def _next_type(st: dict[str, Any]) -> None:
    _close(st)
    st.update(type=st["type"] + 1, phase="current", query=0, cursor=None)


def _close(st: dict[str, Any]) -> None:
    """The current file is complete: list it in the manifest."""
    if st["file"] is not None:
        st[{"output": "outputs", "deleted": "deleted", "error": "errors"}[st["kind"]]].append(
            {"type": st["file_type"], "name": st["file"], "count": st["lines"]})
    st.update(file=None, kind=None, lines=0, offset=0)


def _append(svc: Services, job: Job, kind: str, type_: str, lines: list[bytes]) -> str | None:
    """Append `lines` to the current file (opening the type's next file when needed) and make them durable;
    the file they went to (None when there were none)."""
    st = job.state
    if not lines:
        return None
    if st["file"] is not None and (st["kind"] != kind or st["file_type"] != type_):
        _close(st)
    if st["file"] is None:
        key = f"{type_}-{kind}"
        st["parts"][key] = st["parts"].get(key, 0) + 1
        suffix = {"output": "", "deleted": "-deleted", "error": "-error"}[kind]
        st.update(file=f"{type_}{suffix}-{st['parts'][key]}.ndjson", kind=kind, file_type=type_, lines=0, offset=0)
    path = folder(svc, job.id) / st["file"]
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(line + b"\n" for line in lines)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, st["offset"])  # a page a dead runner wrote but never committed goes
        os.lseek(fd, st["offset"], os.SEEK_SET)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    name = str(st["file"])
    st["offset"] += len(data)
    st["lines"] += len(lines)
    st["written"] += len(lines) if kind == "output" else 0
    if st["lines"] >= FILE_LINES:
        _close(st)
    return name


def _save(repo: Repository, job: Job, file: str | None, patients: list[str | None]) -> Job:
    """Commit the progress and the patients of the page written to `file`; a runner that lost the job stops
    (its page is cut later)."""
    with repo.transaction() as uow:
        _owned(uow, job, "UPDATE export_jobs SET state = ?, heartbeat = ? WHERE id = ? AND runner = ?"
                         " AND status = 'running' RETURNING id", (orjson.dumps(job.state).decode(), now_us()))
        seen = sorted({p for p in patients if p}) if file else []
        if seen:
            uow.execute("INSERT INTO export_patients (job, file, patient) VALUES "
                        + ", ".join("(?, ?, ?)" for _ in seen) + " ON CONFLICT DO NOTHING",
                        [x for p in seen for x in (job.id, file, p)])
    return job


def _owned(uow: UnitOfWork, job: Job, sql: str, head: tuple[Any, ...]) -> None:
    if not uow.execute(sql, (*head, job.id, job.runner)):
        raise _Lost(f"export job {job.id} was cancelled or taken over")


def _finish(svc: Services, job: Job) -> Job:
    """Write the error file (what was ignored or withheld, as OperationOutcomes) and mark the job done."""
    st = job.state
    _close(st)
    notes = job.spec.get("notes") or []
    if notes:
        _append(svc, job, "error", "OperationOutcome", [orjson.dumps({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information" if "spärr" in n else "warning",
                       "code": "suppressed" if "spärr" in n else "not-supported", "diagnostics": n}]})
            for n in notes])
        _close(st)
    with svc.repo.transaction() as uow:
        _owned(uow, job, "UPDATE export_jobs SET status = 'done', state = ?, finished = ?, runner = NULL"
                         " WHERE id = ? AND runner = ? AND status = 'running' RETURNING id",
                         (orjson.dumps(st).decode(), now_us()))
    job.status = "done"
    return job
