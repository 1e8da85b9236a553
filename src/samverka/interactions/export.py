"""Bulk Data export, kick-off to download: https://hl7.org/fhir/uv/bulkdata/export.html (Bulk Data Access 2.0.0).

- Kick-off: `GET|POST [base]/$export`, `[base]/Patient/$export`, `[base]/Group/[id]/$export` with
  `Prefer: respond-async`; parameters `_outputFormat`, `_since`, `_type`, `_typeFilter`, `_elements` and (on
  POST, in a Parameters body) `patient`. Answers 202 with the status URL in `Content-Location`.
- Status: `GET [base]/$export-status/[job]`: 202 with `X-Progress` and `Retry-After` while it runs, then 200
  with the manifest (`transactionTime`, `output`, `deleted`, `error`); `DELETE` cancels it or removes its files.
- Files: `GET [base]/$export-file/[job]/[name]`: NDJSON, to the client (and user) that started the job only.

What a job may contain is fixed at kick-off: the types the token may search, and the access filters of the
request (`Services.access_filters`: scopes and, for a user, Patientdatalagen), stored with the job, so the
files hold exactly what the same searches would show. `export_run` writes the files in the background.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ..errors import Category, FhirError, invalid, not_found
from ..fhir.definitions import patient_compartment_types, resource_types
from ..fhir.instant import format_instant, now_us, parse_instant
from ..search.query import split_values
from . import export_run
from .context import Result, Services

FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
_KNOWN = {"_outputFormat", "_since", "_type", "_typeFilter", "_elements", "patient"}
STATUS = "$export-status"
FILE = "$export-file"

# may the requester export this type? (type, named in _type) -> bool; raises 403 for a named type it may not
Allowed = Callable[[str, bool], bool]


def kick_off(svc: Services, base: str, request_url: str, group: str | None, patient_level: bool,
             pairs: list[tuple[str, str]], body: Any, prefer: dict[str, str], owner: tuple[str | None, str | None],
             allowed: Allowed, redact: bool = False) -> Result:
    """Check the request, record the job and start it; 202 with where to follow it. `redact`: protected
    Patients lose their contact details in the files (a user without the permission; auth.pdl_identity)."""
    job, members = record(svc, base, request_url, group, patient_level, pairs, body, prefer, owner, allowed, redact)
    export_run.run_in_background(svc, job)
    outcome = {"resourceType": "OperationOutcome", "issue": [{
        "severity": "information", "code": "informational",
        "diagnostics": f"export job {job} started: follow it at {base}/{STATUS}/{job}"}]}
    return Result(202, resource=outcome, headers={"Content-Location": f"{base}/{STATUS}/{job}"},
                  patients=members or [])


def record(svc: Services, base: str, request_url: str, group: str | None, patient_level: bool,
           pairs: list[tuple[str, str]], body: Any, prefer: dict[str, str], owner: tuple[str | None, str | None],
           allowed: Allowed, redact: bool = False) -> tuple[str, list[str] | None]:
    """Check a kick-off and record its job (not yet started); the job's id and the patients it is limited to."""
    if "respond-async" not in prefer:
        raise invalid("a Bulk Data kick-off needs the header 'Prefer: respond-async'", None)
    params = [*pairs, *_parameters(body)]
    strict = prefer.get("handling") == "strict"
    notes: list[str] = []
    for name in sorted({k for k, _v in params} - _KNOWN):
        if strict:
            raise invalid(f"$export does not support the parameter {name!r}", name, "not-supported")
        notes.append(f"ignored the parameter {name!r}, which $export does not support")
    values = {k: [v for n, v in params if n == k] for k in _KNOWN}
    fmt = values["_outputFormat"][-1] if values["_outputFormat"] else FORMATS[0]
    if fmt not in FORMATS:
        raise invalid(f"_outputFormat {fmt!r} is not supported; use application/fhir+ndjson", "_outputFormat")
    since = _since(values["_since"])
    # a patient-level export reaches Patient and the types of its compartment
    level_types = sorted(patient_compartment_types()) if group is not None or patient_level else None
    named = [t for raw in values["_type"] for t in raw.split(",") if t.strip()]
    for t in named:
        if t not in resource_types():
            raise invalid(f"_type: {t!r} is not a resource type", "_type")
        if level_types is not None and t not in level_types:
            raise invalid(f"_type: {t} is not in the Patient compartment, so a patient-level export has none", "_type")
    filters = [(sql, list(ps)) for sql, ps in svc.access_filters]  # what the requester may see
    members = _members(svc, group, values["patient"], patient_level)
    limit: list[tuple[str, list[Any]]] = []  # which patients' data the export is about
    if members is not None:
        limit.append((f"r.compartment IN ({', '.join('?' for _ in members)})", list(members)) if members
                     else ("1 = 0", []))
    elif level_types is not None:
        limit.append(("r.compartment IS NOT NULL", []))
    types = _types(svc, named, level_types, allowed)
    type_filters = _type_filters(svc, values["_typeFilter"], types, strict, notes)
    at = now_us()
    if svc.withheld_filters and _withheld(svc, types, limit):
        notes.append("information that is blocked (spärr) for you exists for this export; it is not included")
    spec = {"base": base, "types": types, "since": since, "at": at, "filters": [*filters, *limit],
            "type_filters": type_filters,
            "elements": [e.strip() for raw in values["_elements"] for e in raw.split(",") if e.strip()],
            "notes": notes, "requires_token": svc.settings.auth, "redact": redact}
    job = uuid.uuid4().hex
    expire(svc)
    with svc.repo.transaction() as uow:
        uow.execute("INSERT INTO export_jobs (id, status, client_id, user_id, request, spec, state, heartbeat,"
                    " created) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                    (job, owner[0], owner[1], request_url, orjson.dumps(spec).decode(),
                     orjson.dumps(export_run.initial_state()).decode(), at, at))
    return job, members


def _parameters(body: Any) -> list[tuple[str, str]]:
    """A POST kick-off's Parameters resource as (name, value) pairs."""
    if body is None:
        return []
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise invalid("a POST $export takes a Parameters resource", None)
    out: list[tuple[str, str]] = []
    for i, p in enumerate(body.get("parameter") or []):
        name = p.get("name") if isinstance(p, dict) else None
        value = next((v for k, v in p.items() if k.startswith("value")), None) if isinstance(p, dict) else None
        if isinstance(value, dict):  # patient: valueReference
            value = value.get("reference")
        if not isinstance(name, str) or not isinstance(value, str):
            raise invalid("each parameter needs a name and a string, instant or reference value",
                          f"Parameters.parameter[{i}]")
        out.append((name, value))
    return out


def _since(raw: list[str]) -> int | None:
    if not raw:
        return None
    try:
        return parse_instant(raw[-1])
    except ValueError as exc:
        raise invalid(f"_since must be a FHIR instant (e.g. 2026-01-01T00:00:00Z), not {raw[-1]!r}",
                      "_since") from exc


def _members(svc: Services, group: str | None, patients: list[str], patient_level: bool) -> list[str] | None:
    """The patients an export is limited to (a Group's members, `patient`), or None for no limit."""
    wanted: list[str] | None = None
    if patients:
        if group is None and not patient_level:
            raise invalid("patient applies to Patient/$export and Group/[id]/$export only", "patient")
        wanted = []
        for ref in patients:
            kind, _, pid = ref.partition("/")
            if kind != "Patient" or not pid:
                raise invalid(f"patient: {ref!r} is not a Patient reference", "patient")
            wanted.append(pid)
    if group is None:
        return wanted
    v = svc.repo.read("Group", group)
    if v is None or v.data is None:
        raise not_found(f"Group/{group} is not known")
    members = []
    for m in orjson.loads(v.data).get("member") or []:
        ref = (m.get("entity") or {}).get("reference", "")
        if ref.startswith("Patient/") and not m.get("inactive"):
            members.append(ref.split("/", 1)[1])
    return sorted(set(members) & set(wanted)) if wanted is not None else sorted(set(members))


def _types(svc: Services, named: list[str], level_types: list[str] | None, allowed: Allowed) -> list[str]:
    """The types to export: those named in `_type` (each must be allowed), else every stored type allowed."""
    if named:
        return [t for t in dict.fromkeys(named) if allowed(t, True)]
    stored = [str(r[0]) for r in svc.repo.fetch("SELECT DISTINCT type FROM resources", ())]
    return sorted(t for t in stored if (level_types is None or t in level_types) and allowed(t, False))


def _type_filters(svc: Services, raw: list[str], types: list[str], strict: bool,
                  notes: list[str]) -> dict[str, list[list[tuple[str, str]]]]:
    """`_typeFilter=Type?query,...`: per type, the queries of which a resource must match one."""
    from urllib.parse import parse_qsl

    out: dict[str, list[list[tuple[str, str]]]] = {}
    for value in (v for r in raw for v in split_values(r) if v):
        type_, sep, query = value.partition("?")
        if not sep or type_ not in resource_types():
            raise invalid(f"_typeFilter {value!r} is not of the form [type]?[search query]", "_typeFilter")
        pairs = parse_qsl(query, keep_blank_values=True)
        parsed = svc.parse_query(type_, pairs)
        if parsed.unknown:
            if strict:
                raise invalid(f"_typeFilter {value!r}: unknown or unsupported parameter(s) "
                              f"{', '.join(parsed.unknown)}", "_typeFilter", "not-supported")
            notes.append(f"_typeFilter {value!r}: ignored the parameter(s) {', '.join(parsed.unknown)}")
        bad = [k for k, _v in pairs if k in ("_include", "_revinclude", "_sort", "_count", "_elements", "_summary")]
        if bad:
            raise invalid(f"_typeFilter {value!r}: {bad[0]} cannot narrow an export", "_typeFilter")
        if type_ in types:
            out.setdefault(type_, []).append(pairs)
    return out


def _withheld(svc: Services, types: list[str], own: list[tuple[str, list[Any]]]) -> bool:
    """Whether a spärr hides some of what the export would otherwise hold (said, never shown)."""
    if not types:
        return False
    conds = ["r.deleted = 0", f"r.type IN ({', '.join('?' for _ in types)})",
             *(c for c, _p in own), *(c for c, _p in svc.withheld_filters)]
    params = [*types, *(p for _c, ps in own for p in ps), *(p for _c, ps in svc.withheld_filters for p in ps)]
    return bool(svc.repo.fetch(f"SELECT 1 FROM resources r WHERE {' AND '.join(conds)} LIMIT 1", params))


def _job(svc: Services, job: str, owner: tuple[str | None, str | None]) -> export_run.Job:
    """The job, when it is the requester's (someone else's is as unknown as a missing one)."""
    found = export_run.load(svc.repo, job)
    if found is None or found.status == "cancelled" or (found.client_id, found.user_id) != owner:
        raise not_found(f"no export job {job}")
    return found


def status(svc: Services, base: str, job_id: str, owner: tuple[str | None, str | None]) -> Result:
    """GET the status URL: 202 while running (a job whose runner died is taken over here), else the manifest."""
    job = _job(svc, job_id, owner)
    if job.status == "running":
        if not job.alive():
            export_run.run_in_background(svc, job.id)
        return Result(202, headers={"X-Progress": job.progress(), "Retry-After": "1"})
    if job.status == "failed":
        return Result(500, resource={"resourceType": "OperationOutcome", "issue": [{
            "severity": "error", "code": "exception", "diagnostics": f"export job {job.id} failed: {job.error}"}]})
    return Result(200, resource=manifest(job, base))


def manifest(job: export_run.Job, base: str) -> dict[str, Any]:
    url = f"{base}/{FILE}/{job.id}/"

    def files(items: list[dict[str, Any]], kind: str | None = None) -> list[dict[str, Any]]:
        return [{"type": kind or f["type"], "url": url + f["name"], "count": f["count"]} for f in items]

    return {"transactionTime": format_instant(job.spec["at"]), "request": job.request,
            "requiresAccessToken": bool(job.spec.get("requires_token", True)),
            "output": files(job.state["outputs"]), "deleted": files(job.state["deleted"], "Bundle"),
            "error": files(job.state["errors"], "OperationOutcome")}


def cancel(svc: Services, job_id: str, owner: tuple[str | None, str | None]) -> Result:
    """DELETE the status URL: stop a running job, or say a finished one's files are no longer needed."""
    job = _job(svc, job_id, owner)
    with svc.repo.transaction() as uow:
        uow.execute("UPDATE export_jobs SET status = 'cancelled', runner = NULL, finished = ? WHERE id = ?",
                    (now_us(), job.id))
        uow.execute("DELETE FROM export_patients WHERE job = ?", (job.id,))
    shutil.rmtree(export_run.folder(svc, job.id), ignore_errors=True)
    return Result(202, resource={"resourceType": "OperationOutcome", "issue": [{
        "severity": "information", "code": "informational", "diagnostics": f"export job {job.id} cancelled"}]})


def file(svc: Services, job_id: str, name: str, owner: tuple[str | None, str | None]) -> Result:
    """GET one output file of a finished job (its patients go into the download's audit record)."""
    job = _job(svc, job_id, owner)
    names = {f["name"] for k in ("outputs", "deleted", "errors") for f in job.state[k]}
    if job.status != "done" or name not in names:
        raise not_found(f"export job {job.id} has no file {name!r}")
    path: Path = export_run.folder(svc, job.id) / name
    if not path.exists():
        raise FhirError.of(Category.GONE, f"the file {name!r} of export job {job.id} has been removed")
    patients = [str(r[0]) for r in svc.repo.fetch(
        "SELECT patient FROM export_patients WHERE job = ? AND file = ? ORDER BY patient", (job.id, name))]
    return Result(200, file=path, media_type="application/fhir+ndjson", patients=patients)


def expire(svc: Services) -> None:
    """Remove jobs (and their files) that finished longer ago than `Settings.export_retention` seconds."""
    cutoff = now_us() - int(svc.settings.export_retention * 1_000_000)
    old = [str(r[0]) for r in svc.repo.fetch(
        "SELECT id FROM export_jobs WHERE status <> 'running' AND finished < ?", (cutoff,))]
    for job in old:
        shutil.rmtree(export_run.folder(svc, job), ignore_errors=True)
        with svc.repo.transaction() as uow:
            uow.execute("DELETE FROM export_patients WHERE job = ?", (job,))
            uow.execute("DELETE FROM export_jobs WHERE id = ?", (job,))
