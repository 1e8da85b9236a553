"""$reindex: index existing resources for new or changed SearchParameters (https://hl7.org/fhir/R4/searchparameter.html).

A job (`reindex_jobs`) walks resources in key order, in short batches that are each one transaction:
the batch locks the heads it visits, re-reads their current versions, replaces the rows of the job's
parameters and advances `last_pk` in that same transaction, so a crash loses at most one batch and a
write racing a batch either waits for it or is waited for (its own rows come from the write path).
When the walk ends, the parameters become `ready` and every process reloads its registry. A definition
that changes while its job runs restarts the walk. Progress: `GET [base]/$reindex-status`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import FhirError, invalid, not_found
from ..fhir.instant import now_us
from ..search.custom import LiveRegistry, types_of
from ..search.extract import extract
from ..search.params import Registry, SearchParam, param_id
from ..store import IndexRows, UnitOfWork
from . import jobs as jobs_
from .context import Result, Services

log = logging.getLogger("samverka.reindex")
BATCH = 200
_COLS = "id, params, status, since, last_pk, max_pk, done, total, owner, heartbeat, error"


@dataclass
class Job:
    id: int
    params: list[str]
    status: str  # running | done | failed
    since: int
    last_pk: int
    max_pk: int
    done: int
    total: int
    owner: str | None
    heartbeat: int
    error: str | None = None

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> Job:
        return cls(int(row[0]), orjson.loads(row[1]), *row[2:])

    @property
    def percent(self) -> int:
        return 100 if self.status == "done" else 100 * self.done // max(self.total, 1)


def _owner() -> str:
    return jobs_.owner()


def _alive(job: Job) -> bool:
    """Whether the job's runner may still be at work (a dead process on this host is known at once)."""
    return jobs_.alive(job.owner, job.heartbeat)


def jobs(svc: Services, job_id: int | None = None) -> list[Job]:
    where, args = (" WHERE id = ?", (job_id,)) if job_id is not None else ("", ())
    return [Job.of(r) for r in svc.repo.fetch(f"SELECT {_COLS} FROM reindex_jobs{where} ORDER BY id DESC", args)]


def start(svc: Services, urls: list[str] | None = None) -> Job | None:
    """The unfinished job covering `urls` (default: every parameter not ready), else a new one."""
    registry = svc.searchable(force=True)
    with svc.repo.transaction() as uow:
        since = uow.param_generation()
        stored = {r[0]: r[1] for r in uow.fetch("SELECT url, ready FROM search_parameters", ())}
        wanted = sorted(urls if urls else [u for u, ready in stored.items() if not ready])
        for url in wanted:
            if url not in stored and registry.by_url(url) is None:
                raise invalid(f"no search parameter has the url {url!r}", "url")
        if not wanted:
            return None
        for row in uow.fetch(f"SELECT {_COLS} FROM reindex_jobs WHERE status = 'running' ORDER BY id", ()):
            job = Job.of(row)
            if set(wanted) <= set(job.params):
                return job
        max_pk, total = _extent(uow, _types(uow, registry, wanted))
        now = now_us()
        row = uow.execute(
            "INSERT INTO reindex_jobs (params, status, since, last_pk, max_pk, done, total, heartbeat, created)"
            f" VALUES (?, 'running', ?, 0, ?, 0, ?, ?, ?) RETURNING {_COLS}",
            (orjson.dumps(wanted).decode(), since, max_pk, total, now, now))[0]
    return Job.of(row)


def _types(uow: UnitOfWork, registry: Registry, urls: list[str]) -> list[str] | None:
    rows = {r[0]: orjson.loads(r[1]) for r in uow.fetch(
        f"SELECT url, bases FROM search_parameters WHERE url IN ({', '.join('?' for _ in urls)})", urls)}
    bases: set[str] = set()
    for url in urls:
        p = registry.by_url(url) or Registry.default().by_url(url)
        bases.update(rows.get(url, ()), p.base if p else ())
    return types_of(bases)


def _extent(uow: UnitOfWork, types: list[str] | None) -> tuple[int, int]:
    where = f" AND type IN ({', '.join('?' for _ in types)})" if types else ""
    max_pk = int(uow.fetch("SELECT COALESCE(max(pk), 0) FROM resources", ())[0][0])
    total = int(uow.fetch(f"SELECT count(*) FROM resources WHERE deleted = 0{where}", types or ())[0][0])
    return max_pk, total


def claim(svc: Services, job_id: int) -> Job | None:
    """Take over a running job whose runner is gone (or that has none); None when someone else runs it."""
    with svc.repo.transaction() as uow:
        rows = uow.fetch(f"SELECT {_COLS} FROM reindex_jobs WHERE id = ?", (job_id,))
        if not rows:
            raise not_found(f"no reindex job {job_id}")
        job = Job.of(rows[0])
        if job.status != "running" or (job.owner != _owner() and _alive(job)):
            return None
        got = uow.execute("UPDATE reindex_jobs SET owner = ?, heartbeat = ? WHERE id = ? AND COALESCE(owner, '') = ?"
                          f" RETURNING {_COLS}", (_owner(), now_us(), job_id, job.owner or ""))
    return Job.of(got[0]) if got else None


def step(svc: Services, job: Job, batch: int = BATCH) -> Job:
    """One batch, in one transaction: re-extract the job's rows for the next `batch` resources."""
    assert svc.live is not None
    with svc.repo.transaction() as uow:
        registry = svc.live.for_write(uow)
        changed = uow.fetch("SELECT max(changed) FROM search_parameters WHERE url IN "
                            f"({', '.join('?' for _ in job.params)})", job.params)[0][0]
        types = _types(uow, registry, job.params)
        if changed is not None and int(changed) > job.since:  # redefined meanwhile: start again
            max_pk, total = _extent(uow, types)
            return _save(uow, job, since=uow.param_generation(), last_pk=0, max_pk=max_pk, done=0, total=total)
        heads = uow.heads(job.last_pk, job.max_pk, batch, types)
        if not heads:
            return _finish(uow, job)
        wanted = {p.url for p in _job_params(registry, job.params)}
        mini = _mini_registry(registry, frozenset(wanted))
        ids = {t: {p.id for p in registry.for_type(t) if p.url in wanted} for t in {h.type for h in heads}}
        pids = sorted({p.id for p in _job_params(registry, job.params)} | {param_id(u) for u in job.params})
        rows: list[tuple[int, IndexRows]] = []
        for h in heads:
            index = IndexRows()
            if h.data is not None and ids[h.type]:
                full = extract(orjson.loads(h.data), mini)
                for field in IndexRows.__slots__:
                    setattr(index, field, [r for r in getattr(full, field) if r[0] in ids[h.type]])
            rows.append((h.pk, index))
        uow.replace_index(pids, rows)
        counted = sum(1 for h in heads if h.data is not None and (types is None or h.type in types))
        return _save(uow, job, last_pk=heads[-1].pk, done=job.done + counted)


def _job_params(registry: Registry, urls: list[str]) -> list[SearchParam]:
    return [p for u in urls if (p := registry.by_url(u)) is not None]


_minis: dict[tuple[int, int, frozenset[str]], Registry] = {}


def _mini_registry(registry: LiveRegistry, urls: frozenset[str]) -> Registry:
    """Only the job's parameters (and their composites' components): extraction compiles nothing else."""
    key = (id(registry), registry.generation, urls)
    if key not in _minis:
        _minis.clear()
        _minis[key] = _build_mini(registry, urls)
    return _minis[key]


def _build_mini(registry: LiveRegistry, urls: frozenset[str]) -> Registry:
    params = {p.url: p for p in _job_params(registry, sorted(urls))}
    for p in list(params.values()):
        for url, _expr in p.components:
            if (c := registry.by_url(url)) is not None:
                params.setdefault(url, c)
    return Registry(params.values())


def _save(uow: UnitOfWork, job: Job, **changes: int) -> Job:
    """Progress commits with the batch; a runner that lost the job (taken over) rolls its batch back."""
    for k, v in changes.items():
        setattr(job, k, v)
    job.heartbeat = now_us()
    if not uow.execute("UPDATE reindex_jobs SET since = ?, last_pk = ?, max_pk = ?, done = ?, total = ?,"
                       " heartbeat = ? WHERE id = ? AND owner = ? RETURNING id",
                       (job.since, job.last_pk, job.max_pk, job.done, job.total, job.heartbeat, job.id, job.owner)):
        raise _Lost(f"reindex job {job.id} was taken over by another runner")
    return job


class _Lost(Exception):
    pass


def _finish(uow: UnitOfWork, job: Job) -> Job:
    marks = ", ".join("?" for _ in job.params)
    uow.param_generation(bump=True)  # every process reloads: the parameters become usable
    uow.execute(f"UPDATE search_parameters SET ready = 1 WHERE url IN ({marks}) AND active = 1 AND changed <= ?",
                (*job.params, job.since))
    uow.execute(f"DELETE FROM search_parameters WHERE url IN ({marks}) AND active = 0 AND changed <= ?",
                (*job.params, job.since))
    # the parameters' date rows are rewritten, one per resource where R4 allows one (migration 0020)
    uow.execute(f"DELETE FROM date_multivalued WHERE param IN ({marks})", [param_id(u) for u in job.params])
    if not uow.execute("UPDATE reindex_jobs SET status = 'done', done = total, owner = NULL, finished = ?"
                       " WHERE id = ? AND owner = ? RETURNING id", (now_us(), job.id, job.owner)):
        raise _Lost(f"reindex job {job.id} was taken over by another runner")
    job.status, job.done, job.owner = "done", job.total, None
    return job


def run(svc: Services, job: Job, batch: int = BATCH, report: Callable[[Job], None] | None = None,
        pause: float = 0.0) -> Job | None:
    """Run a job to its end in this thread; None when another live runner has it."""
    mine = claim(svc, job.id)
    if mine is None:
        return None
    job, failures = mine, 0
    while job.status == "running":
        try:
            job = step(svc, job, batch)
            failures = 0
        except _Lost:
            return None
        except FhirError as exc:  # busy store, deadlock victim: the batch rolled back; try it again
            failures += 1
            if failures > 20:
                raise
            log.warning("reindex job %s: batch after pk %s retried: %s", job.id, job.last_pk, exc)
            time.sleep(0.2)
            continue
        if report is not None:
            report(job)
        if pause:
            time.sleep(pause)
    svc.searchable(force=True)
    return job


def run_in_background(svc: Services, job: Job) -> None:
    def target() -> None:
        try:
            run(svc, job, pause=0.001)
        except Exception as exc:
            log.exception("reindex job %s failed", job.id)
            fail(svc, job, exc)

    threading.Thread(target=target, name=f"reindex-{job.id}", daemon=True).start()


def fail(svc: Services, job: Job, exc: BaseException) -> None:
    """Record why a job stopped; its parameters stay not ready until a new job succeeds."""
    with svc.repo.transaction() as uow:
        uow.execute("UPDATE reindex_jobs SET status = 'failed', owner = NULL, error = ? WHERE id = ?",
                    (f"{type(exc).__name__}: {exc}"[:2000], job.id))


def resume_in_background(svc: Services) -> None:
    """At start-up: continue any job whose runner died (several workers may try; one claim wins)."""
    for job in jobs(svc):
        if job.status == "running" and not _alive(job):
            run_in_background(svc, job)


def reindex_operation(svc: Services, base: str, urls: list[str]) -> Result:
    """POST [base]/$reindex: start (or join) a background job; 202 with where to follow it."""
    job = start(svc, urls or None)
    if job is None:
        return Result(200, resource=status_parameters(svc, []))
    if not _alive(job):
        run_in_background(svc, job)
    where = f"{base}/$reindex-status?job={job.id}"
    return Result(202, resource=status_parameters(svc, [job]), headers={"Content-Location": where})


def reindex_search_parameter(svc: Services, base: str, id_: str) -> Result:
    """POST [base]/SearchParameter/[id]/$reindex."""
    v = svc.repo.read("SearchParameter", id_)
    if v is None or v.data is None:
        raise not_found(f"SearchParameter/{id_} is not known")
    url = orjson.loads(v.data).get("url")
    if not url:
        raise invalid(f"SearchParameter/{id_} has no url", "SearchParameter.url")
    return reindex_operation(svc, base, [url])


def status(svc: Services, job_id: str | None) -> Result:
    """GET [base]/$reindex-status[?job=N]: a Parameters resource with each job's progress."""
    if job_id is not None and not job_id.isdigit():
        raise invalid(f"job must be a job number, not {job_id!r}", "job")
    found = jobs(svc, int(job_id) if job_id else None)
    if job_id and not found:
        raise not_found(f"no reindex job {job_id}")
    return Result(200, resource=status_parameters(svc, found[:20]))


def status_parameters(svc: Services, found: list[Job]) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    for url, active in svc.repo.fetch("SELECT url, active FROM search_parameters WHERE ready = 0 ORDER BY url", ()):
        params.append({"name": "pending", "valueUri": url} if active else {"name": "purging", "valueUri": url})
    for job in found:
        part: list[dict[str, Any]] = [
            {"name": "id", "valueInteger": job.id}, {"name": "status", "valueCode": job.status},
            *({"name": "parameter", "valueUri": u} for u in job.params),
            {"name": "processed", "valueInteger": min(job.done, job.total)},
            {"name": "total", "valueInteger": job.total}, {"name": "percent", "valueInteger": job.percent},
            {"name": "running", "valueBoolean": job.status == "running" and _alive(job)},
        ]
        if job.error:
            part.append({"name": "error", "valueString": job.error})
        params.append({"name": "job", "part": part})
    return {"resourceType": "Parameters", "parameter": params}
