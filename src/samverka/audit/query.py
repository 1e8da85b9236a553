"""Reading the audit log: the AuditEvent search of the FHIR API, follow-up reports and exports.

Search parameters are R4's for AuditEvent (https://hl7.org/fhir/R4/auditevent.html#search): `patient`,
`agent`, `date`, `entity`, `type`, `subtype`, `outcome`, `action`, plus `_count` and a `_cursor`.
Reports implement logguppföljning (HSLF-FS 2016:40 4 kap. 9 §): by patient, user, unit and period,
emergency accesses, accesses to protected-identity patients and a seeded random sample; exports are
FHIR AuditEvent NDJSON and CSV with the fields of the national log contract (RIV informationsecurity:
auditing:log).
"""

from __future__ import annotations

import csv
import heapq
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ..errors import Category, FhirError, invalid, not_found
from ..fhir.instant import parse_instant
from ..store import Repository
from . import logs, side
from .model import columns

PROTECTED = "protected-information"
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_ALLOWED = {"patient", "agent", "date", "entity", "type", "subtype", "outcome", "action", "_count", "_cursor",
            "_format", "_pretty", "_sort", "_total"}


def _span(text: str) -> tuple[int, int]:
    """A date, dateTime or instant as the inclusive µs range of its precision."""
    t = text.strip()
    try:
        if len(t) == 4:
            return parse_instant(f"{t}-01-01"), parse_instant(f"{int(t) + 1}-01-01") - 1
        if len(t) == 7:
            y, m = int(t[:4]), int(t[5:7])
            nxt = f"{y + 1}-01-01" if m == 12 else f"{y}-{m + 1:02d}-01"
            return parse_instant(f"{t}-01"), parse_instant(nxt) - 1
        lo = parse_instant(t)
    except ValueError as exc:
        raise invalid(f"{text!r} is not a date, dateTime or instant", "date") from exc
    return lo, lo + (86_400_000_000 - 1 if len(t) == 10 else 999)


def _token(value: str) -> str:
    return value.split("|")[-1]


def _ref(value: str) -> str:
    """The id part of a reference or identifier search value (`Patient/x`, `system|x`, `x`)."""
    return value.split("|")[-1].rstrip("/").split("/")[-1]


@dataclass
class Filters:
    """Conditions on the audit_log row `a` with their bound values."""

    where: list[str]
    params: list[Any]

    def add(self, sql: str, *values: Any) -> None:
        self.where.append(sql)
        self.params.extend(values)

    def sql(self) -> str:
        return (" WHERE " + " AND ".join(self.where)) if self.where else ""


def _any_of(f: Filters, column: str, values: list[str]) -> None:
    f.add(f"{column} IN ({', '.join('?' for _ in values)})", *values)


def search_filters(pairs: Sequence[tuple[str, str]], own_patient: str | None = None) -> Filters:
    """R4 AuditEvent search parameters as SQL (comma = OR, repeated parameter = AND)."""
    f = Filters([], [])
    if own_patient is not None:  # patient/AuditEvent.rs: only the patient's own access log
        f.add("EXISTS (SELECT 1 FROM audit_patient p WHERE p.pos = a.pos AND p.patient = ?)", own_patient)
    for name, raw in pairs:
        base = name.split(":")[0]
        if base not in _ALLOWED:
            raise invalid(f"unknown AuditEvent search parameter {name!r}", name)
        values = [v for v in raw.split(",") if v]
        if not values or base in ("_count", "_cursor", "_format", "_pretty", "_sort", "_total"):
            continue
        if base == "patient":
            ids = [_ref(v) for v in values]
            f.add(f"EXISTS (SELECT 1 FROM audit_patient p WHERE p.pos = a.pos AND p.patient IN "
                  f"({', '.join('?' for _ in ids)}))", *ids)
        elif base == "entity":
            refs = ["/".join(v.split("/")[-2:]) for v in values]
            f.add(f"EXISTS (SELECT 1 FROM audit_entity e WHERE e.pos = a.pos AND e.ref IN "
                  f"({', '.join('?' for _ in refs)}))", *refs)
        elif base == "agent":
            ids = [_ref(v) for v in values]
            marks = ", ".join("?" for _ in ids)
            f.add(f"(a.user_id IN ({marks}) OR a.client_id IN ({marks}) OR a.unit_id IN ({marks})"
                  f" OR a.provider_id IN ({marks}))", *ids, *ids, *ids, *ids)
        elif base == "type":
            if "rest" not in [_token(v) for v in values]:
                f.add("1 = 0")
        elif base in ("subtype", "outcome", "action"):
            _any_of(f, f"a.{base}", [_token(v) for v in values])
        elif base == "date":
            ors: list[str] = []
            vals: list[int] = []
            for v in values:
                prefix = v[:2] if v[:2] in _PREFIXES else "eq"
                lo, hi = _span(v[2:] if v[:2] in _PREFIXES else v)
                cond = {"eq": ("a.recorded >= ? AND a.recorded <= ?", (lo, hi)),
                        "ne": ("(a.recorded < ? OR a.recorded > ?)", (lo, hi)),
                        "gt": ("a.recorded > ?", (hi,)), "sa": ("a.recorded > ?", (hi,)),
                        "lt": ("a.recorded < ?", (lo,)), "eb": ("a.recorded < ?", (lo,)),
                        "ge": ("a.recorded >= ?", (lo,)), "le": ("a.recorded <= ?", (hi,)),
                        "ap": ("a.recorded >= ? AND a.recorded <= ?", (lo, hi))}[prefix]
                ors.append(f"({cond[0]})")
                vals += cond[1]
            f.add("(" + " OR ".join(ors) + ")", *vals)
    return f


def search(repo: Repository, base: str, pairs: Sequence[tuple[str, str]], own_patient: str | None = None,
           default_count: int = 50, max_count: int = 1000) -> dict[str, Any]:
    """A searchset Bundle of AuditEvents, newest first, with a keyset `next` link.

    With several chains (`logs.chains`) each is read newest first and the pages are merged by time; the
    cursor keeps, per chain, the position of the last record shown from it (empty: none shown yet)."""
    f = search_filters(pairs, own_patient)
    found = logs.chains(repo)
    for c in found:
        side.catch_up(c.repo)  # every committed record is findable by patient and entity
    last = dict(pairs)
    raw_count = last.get("_count", str(default_count))
    raw_cursor = last.get("_cursor", "")
    cursors = raw_cursor.split(".") if raw_cursor else [""] * len(found)
    if not raw_count.isdigit() or len(cursors) != len(found) or not all(c.isdigit() or c == "" for c in cursors):
        raise invalid("_count must be a non-negative integer, and _cursor one this server issued", "_count")
    count = min(int(raw_count), max_count)
    streams: list[list[tuple[int, int, int, str, Any]]] = []
    for i, c in enumerate(found):
        page = Filters([*f.where], [*f.params])
        if cursors[i]:
            page.add("a.pos < ?", int(cursors[i]))
        rows = c.repo.fetch(f"SELECT a.recorded, a.pos, a.id, a.data FROM audit_log a{page.sql()}"
                            " ORDER BY a.pos DESC LIMIT ?", [*page.params, count + 1])
        streams.append([(int(rec), i, int(pos), id_, data) for rec, pos, id_, data in rows])
    merged = list(heapq.merge(*streams, key=lambda r: r[0], reverse=True))
    more = len(merged) > count
    shown = merged[:count]
    for _rec, i, pos, _id, _data in shown:
        cursors[i] = str(pos)  # each stream is taken in its own order, so the last one shown is its smallest
    from urllib.parse import urlencode

    keep = [(k, v) for k, v in pairs if k != "_cursor"]
    links = [{"relation": "self", "url": f"{base}/AuditEvent?{urlencode(list(pairs))}".rstrip("?")}]
    if more and shown:
        after = urlencode([*keep, ("_cursor", ".".join(cursors))])
        links.append({"relation": "next", "url": f"{base}/AuditEvent?{after}"})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if not raw_cursor and not more:
        bundle["total"] = len(shown)
    bundle["entry"] = [{"fullUrl": f"{base}/AuditEvent/{id_}", "resource": orjson.Fragment(_text(data)),
                        "search": {"mode": "match"}} for _rec, _i, _pos, id_, data in shown]
    return bundle


def _text(data: Any) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def read(repo: Repository, id_: str, own_patient: str | None = None) -> bytes:
    """One AuditEvent by id (a patient token: only records about that patient)."""
    for c in logs.chains(repo):
        f = Filters([], [])
        if own_patient is not None:
            side.catch_up(c.repo)
            f = search_filters([], own_patient)
        f.add("a.id = ?", id_)
        rows = c.repo.fetch(f"SELECT a.data FROM audit_log a{f.sql()}", f.params)
        if rows:
            return _text(rows[0][0])
    raise not_found(f"AuditEvent/{id_} is not known")


def refuse_change(method: str) -> FhirError:
    """PUT, POST, PATCH and DELETE of AuditEvent: the log is append-only, written by the server."""
    return FhirError.of(Category.METHOD_NOT_ALLOWED,
                        f"{method} is not allowed on AuditEvent: the audit log is append-only and written by the "
                        "server (read it with GET /fhir/AuditEvent?...)")


@dataclass
class Report:
    """Which records a follow-up report selects."""

    patient: str | None = None
    user: str | None = None
    unit: str | None = None
    start: str | None = None
    end: str | None = None
    emergency: bool = False
    protected: bool = False
    sample: int | None = None
    seed: int | None = None


def report(repo: Repository, r: Report) -> list[dict[str, Any]]:
    """The AuditEvents a follow-up report selects, oldest first (a sample: reproducible with its seed)."""
    f = Filters([], [])
    if r.patient:
        f.add("EXISTS (SELECT 1 FROM audit_patient p WHERE p.pos = a.pos AND p.patient = ?)", _ref(r.patient))
    if r.user:
        f.add("a.user_id = ?", r.user)
    if r.unit:
        f.add("a.unit_id = ?", r.unit)
    if r.start:
        f.add("a.recorded >= ?", _span(r.start)[0])
    if r.end:
        f.add("a.recorded <= ?", _span(r.end)[1])
    if r.emergency:
        f.add("a.purpose = ?", "ETREAT")
    rows: list[tuple[int, int, int, Any]] = []
    for i, c in enumerate(logs.chains(repo)):
        side.catch_up(c.repo)
        rows += [(int(rec), i, int(pos), data) for rec, pos, data in
                 c.repo.fetch(f"SELECT a.recorded, a.pos, a.data FROM audit_log a{f.sql()} ORDER BY a.pos", f.params)]
    rows.sort(key=lambda r: r[:3])  # by time, the chains interleaved (a stable order for a seeded sample)
    events = [orjson.loads(_text(data)) for _rec, _i, _pos, data in rows]
    if r.protected:
        protected = protected_patients(repo, {p for ev in events for p in columns(ev).patients})
        events = [ev for ev in events if protected & set(columns(ev).patients)]
    if r.sample is not None and r.sample < len(events):
        rng = random.Random(r.seed)
        chosen = sorted(rng.sample(range(len(events)), r.sample))
        events = [events[i] for i in chosen]
    return events


def protected_patients(repo: Repository, patients: set[str]) -> set[str]:
    """Those of `patients` whose Patient carries the `protected-information` security label (sekretessmarkering)."""
    out = set()
    for pid in sorted(patients):
        v = repo.read("Patient", pid)
        if v is None or v.data is None:
            continue
        security = (orjson.loads(v.data).get("meta") or {}).get("security") or []
        if any(isinstance(s, dict) and s.get("code") == PROTECTED for s in security):
            out.add(pid)
    return out


CSV_FIELDS = ("log_id", "system_hsa_id", "activity_type", "time", "purpose", "user_hsa_id",
              "user_care_provider_hsa_id", "user_care_unit_hsa_id", "resource_type", "patient_id",
              "owner_care_provider_hsa_id", "owner_care_unit_hsa_id", "client_id", "outcome")
_ACTIVITY = {"C": "Skriva", "U": "Skriva", "D": "Radera", "R": "Läsa", "E": "Läsa"}


def activity(ev: dict[str, Any]) -> str:
    """The national activity type: Nödöppning for an emergency access, else by action."""
    if columns(ev).purpose == "ETREAT":
        return "Nödöppning"
    return _ACTIVITY.get(ev["action"], "Läsa")


def csv_rows(events: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per record and patient (a record without patients: one row without a patient)."""
    out = []
    for ev in events:
        c = columns(ev)
        types = sorted({str(e["what"]["reference"]).split("/")[0] for e in ev.get("entity", [])
                        if e.get("role", {}).get("code") == "4" and "what" in e}) or (["Patient"] if c.patients else [])
        system = ev.get("source", {}).get("observer", {}).get("identifier", {}).get("value", "")
        when = datetime.fromtimestamp(c.recorded / 1_000_000, UTC).isoformat(timespec="milliseconds")
        for patient in c.patients or ("",):
            out.append({"log_id": c.id, "system_hsa_id": system, "activity_type": activity(ev), "time": when,
                        "purpose": c.purpose, "user_hsa_id": c.user_id or "",
                        "user_care_provider_hsa_id": c.provider_id or "", "user_care_unit_hsa_id": c.unit_id or "",
                        "resource_type": " ".join(types), "patient_id": patient,
                        "owner_care_provider_hsa_id": "", "owner_care_unit_hsa_id": "",
                        "client_id": c.client_id or "", "outcome": c.outcome})
    return out


def to_csv(events: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(csv_rows(events))
    return buf.getvalue()


def to_ndjson(events: Sequence[dict[str, Any]]) -> str:
    return "".join(orjson.dumps(ev).decode() + "\n" for ev in events)


def export(events: Sequence[dict[str, Any]], fmt: str) -> str:
    if fmt == "csv":
        return to_csv(events)
    if fmt == "ndjson":
        return to_ndjson(events)
    raise ValueError(f"unknown export format {fmt!r} (csv or ndjson)")


def report_from_params(params: dict[str, str]) -> Report:
    """A Report from query parameters of the admin API (same names as the CLI options)."""
    def num(name: str) -> int | None:
        raw = params.get(name)
        if raw is None or raw == "":
            return None
        if not raw.lstrip("-").isdigit():
            raise invalid(f"{name} must be an integer", name)
        return int(raw)

    def flag(name: str) -> bool:
        return params.get(name, "").lower() in ("1", "true", "yes")

    return Report(params.get("patient"), params.get("user"), params.get("unit"), params.get("from"),
                  params.get("to"), flag("emergency"), flag("protected"), num("sample"), num("seed"))
