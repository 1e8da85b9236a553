"""The search benchmark's query mix, with concrete values picked (seeded) from the loaded store.

Values are picked through the store's own `fetch` (the same code on SQLite and PostgreSQL): patients are
ordered by their SSN before sampling, so both backends use the same logical patients (their server-assigned
ids differ). For each query there are up to `n` concrete variants; a latency run cycles through them.

Each query has a class that decides its target (SEARCH-RESULTS.md):
- `simple`:  p50 <= 10 ms and p95 <= 50 ms (selective queries and first pages);
- `join`:    chained, `_has`, `_include`/`_revinclude`: p50 <= 50 ms;
- `total`:   `_total=accurate` on ~100k matches: p50 <= 500 ms;
- `page50`:  page 50 within +-50% of page 1 (same query, `_count=20`).
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
SSN = "http://hl7.org/fhir/sid/us-ssn"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
DR_CAT = "http://terminology.hl7.org/CodeSystem/v2-0074"
TARGETS = {"simple": (10.0, 50.0), "join": (50.0, None), "total": (500.0, None), "page1": (10.0, 50.0),
           "page50": (None, None), "info": (None, None)}


@dataclass
class Query:
    name: str
    cls: str  # simple | join | total | page1 | page50
    what: str  # a one-line description
    paths: list[str] = field(default_factory=list)  # relative to the base, e.g. "Patient?identifier=..."
    meta: list[dict[str, Any]] = field(default_factory=list)  # per path: the values (for the raw-SQL runs)


def q(v: str) -> str:
    return quote(v, safe="/:")


def _day(s: str) -> str:
    return s[:10]


def _next_month(d: str) -> str:
    y, m = int(d[:4]), int(d[5:7])
    y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return f"{y:04d}-{m:02d}-01"


def _fmt_us(us: int) -> str:
    t = dt.datetime.fromtimestamp(us / 1e6, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _coding(cc: dict[str, Any] | None, system: str | None = None) -> tuple[str, str] | None:
    for c in (cc or {}).get("coding", []):
        if system is None or c.get("system") == system:
            return c.get("system", ""), c.get("code", "")
    return None


def _doc(data: Any) -> dict[str, Any]:
    if isinstance(data, dict):
        return data
    return orjson.loads(data if isinstance(data, str | bytes) else bytes(data))


def pick(fetch: Any, registry: Any, n: int = 40, seed: int = 7) -> list[Query]:
    """The query mix with up to `n` concrete variants each."""
    from samverka.store.hashing import h64

    rng = random.Random(seed)
    rows = fetch("SELECT r.id, h.data FROM resources r JOIN history h ON h.seq = r.seq"
                 " WHERE r.type = 'Patient' AND r.deleted = 0", [])
    patients = []
    for pid, data in rows:
        p = _doc(data)
        ssn = next((i["value"] for i in p.get("identifier", []) if i.get("system") == SSN), None)
        name = next((nm for nm in p.get("name", []) if nm.get("use") != "maiden"), p.get("name", [{}])[0])
        patients.append({"id": pid, "ssn": ssn, "family": name.get("family", ""),
                         "given": (name.get("given") or [""])[0]})
    patients.sort(key=lambda p: p["ssn"] or "")
    sample = rng.sample(patients, min(len(patients), 4 * n))

    # everything of each sampled patient, through the reference index (clinical-patient & friends)
    pat_params = sorted({p.id for t in ("Observation", "Encounter", "Condition", "Immunization", "Procedure",
                                        "DiagnosticReport", "MedicationRequest")
                         for p in [registry.get(t, "patient")] if p is not None})
    marks = ", ".join("?" for _ in pat_params)
    for p in sample:
        rows = fetch(f"SELECT r.type, r.last_updated, h.data FROM idx_reference x JOIN resources r ON r.pk = x.res"
                     f" JOIN history h ON h.seq = r.seq WHERE x.param IN ({marks}) AND x.ref = ? AND r.deleted = 0",
                     [*pat_params, h64(f"Patient/{p['id']}")])
        rec: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for t, lu, data in rows:
            doc = _doc(data)
            rec.setdefault(t, []).append((lu, doc))
        p["rec"] = rec

    # frequency of Observation codes/categories over the sampled records, to find large results
    obs_codes: Counter[tuple[str, str]] = Counter()
    for p in sample:
        for _, o in p["rec"].get("Observation", []):
            c = _coding(o.get("code"))
            if c:
                obs_codes[c] += 1
    total_obs = sum(obs_codes.values()) or 1
    n_obs = int(fetch("SELECT count(*) FROM resources WHERE type = 'Observation' AND deleted = 0", [])[0][0])
    n_all = int(fetch("SELECT count(*) FROM resources WHERE deleted = 0", [])[0][0])

    def est(c: tuple[str, str]) -> float:  # estimated matches in the whole store
        return obs_codes[c] / total_obs * n_obs

    # no single code reaches 10% of the store (100k at 1M), so OR the most common ones until it does:
    # sliding windows over the most common codes, each summing to about 10% of the store
    top = [c for c, _ in obs_codes.most_common(12)]
    big: list[list[tuple[str, str]]] = []
    for start in range(4):
        window: list[tuple[str, str]] = []
        for c in top[start:]:
            if sum(est(x) for x in window) >= n_all / 10:
                break
            window.append(c)
        big.append(window)

    Q = {k: Query(k, cls, what) for k, cls, what in [
        ("patient_identifier", "simple", "Patient by SSN identifier system|value"),
        ("patient_name_prefix", "simple", "Patient by name prefix (first 5 letters of a family name)"),
        ("patient_family_given", "simple", "Patient by family + given"),
        ("obs_patient_code_date", "simple", "a patient's Observations by code and date range, _sort=-date"),
        ("encounter_patient_sorted", "simple", "a patient's Encounters, _sort=-date"),
        ("encounter_provider_month", "simple", "Encounters of one service-provider in one month"),
        ("condition_code", "page1", "Conditions by code (first page)"),
        ("procedure_code", "page1", "Procedures by code (first page)"),
        ("immunization_date", "simple", "Immunizations on one day"),
        ("diagreport_patient_category", "simple", "DiagnosticReports by patient + category LAB"),
        ("obs_patient_category_not", "simple", "a patient's Observations with category:not=vital-signs"),
        ("patient_family_contains", "simple", "Patient family:contains (4 letters from inside a name)"),
        ("condition_lastupdated", "simple", "Conditions with _lastUpdated in a 10 s window"),
        ("compartment_obs_code", "simple", "Patient/{id}/Observation?code=.."),
        ("obs_chain_family", "join", "Observations of patients with a family name (subject:Patient.family)"),
        ("patient_has_condition", "join", "Patients with a Condition code (_has:Condition:patient:code)"),
        ("patient_revinclude_encounters", "join", "a Patient by _id with _revinclude=Encounter:patient"),
        ("medreq_include", "join", "a patient's MedicationRequests + _include requester and medication"),
        ("obs_total_accurate", "total", "Observations with a common code (~10% of the store), _total=accurate"),
        ("obs_total_laboratory", "info", "all laboratory Observations (~30% of the store), _total=accurate"),
        ("obs_page1", "page1", "Observation?category=..&_count=20, page 1"),
        ("obs_page50", "page50", "the same, page 50 (cursor reached by following next)"),
    ]}

    def add(name: str, path: str, **meta: Any) -> None:
        if len(Q[name].paths) < n:
            Q[name].paths.append(path)
            Q[name].meta.append(meta)

    for p in sample:
        pid, rec = p["id"], p["rec"]
        add("patient_identifier", f"Patient?identifier={q(SSN)}|{p['ssn']}", ssn=p["ssn"], id=pid)
        if len(p["family"]) >= 5:
            add("patient_name_prefix", f"Patient?name={q(p['family'][:5])}")
        add("patient_family_given", f"Patient?family={q(p['family'])}&given={q(p['given'])}")
        if len(p["family"]) >= 6:
            i = rng.randint(1, len(p["family"]) - 5)
            add("patient_family_contains", f"Patient?family:contains={q(p['family'][i:i + 4])}")
        obs = rec.get("Observation", [])
        by_code: dict[tuple[str, str], list[str]] = {}
        for _, o in obs:
            c = _coding(o.get("code"))
            if c and o.get("effectiveDateTime"):
                by_code.setdefault(c, []).append(o["effectiveDateTime"])
        multi = [c for c, ds in by_code.items() if len(ds) >= 3 and c[0] == LOINC]
        if multi:
            c = rng.choice(sorted(multi))
            ds = sorted(by_code[c])
            hi = ds[rng.randint(len(ds) // 2, len(ds) - 1)]
            lo = (dt.date.fromisoformat(_day(hi)) - dt.timedelta(days=3 * 365)).isoformat()
            add("obs_patient_code_date", f"Observation?patient={pid}&code={q(c[0])}|{c[1]}&date=ge{lo}"
                f"&date=le{_day(hi)}&_sort=-date", patient=pid, system=c[0], code=c[1], ge=lo, le=_day(hi))
            add("compartment_obs_code", f"Patient/{pid}/Observation?code={q(c[0])}|{c[1]}")
        if obs:
            add("obs_patient_category_not", f"Observation?patient={pid}&category:not={q(OBS_CAT)}|vital-signs")
        encs = [e for _, e in rec.get("Encounter", []) if e.get("serviceProvider") and e.get("period")]
        if encs:
            add("encounter_patient_sorted", f"Encounter?patient={pid}&_sort=-date")
            e = rng.choice(encs)
            m = e["period"]["start"][:7] + "-01"
            add("encounter_provider_month", f"Encounter?service-provider={e['serviceProvider']['reference']}"
                f"&date=ge{m}&date=lt{_next_month(m)}")
        conds = [c for _, c in rec.get("Condition", [])]
        if conds:
            c = _coding(rng.choice(conds).get("code"))
            if c:
                add("condition_code", f"Condition?code={q(c[0])}|{c[1]}")
                add("patient_has_condition", f"Patient?_has:Condition:patient:code={q(c[0])}|{c[1]}",
                    system=c[0], code=c[1])
            lu, _ = rng.choice(rec["Condition"])
            add("condition_lastupdated", f"Condition?_lastUpdated=ge{_fmt_us(lu - 5_000_000)}"
                f"&_lastUpdated=le{_fmt_us(lu + 5_000_000)}")
        procs = [c for _, c in rec.get("Procedure", [])]
        if procs:
            c = _coding(rng.choice(procs).get("code"))
            if c:
                add("procedure_code", f"Procedure?code={q(c[0])}|{c[1]}")
        imms = [i for _, i in rec.get("Immunization", []) if i.get("occurrenceDateTime")]
        if imms:
            add("immunization_date", f"Immunization?date={_day(rng.choice(imms)['occurrenceDateTime'])}")
        if rec.get("DiagnosticReport"):
            add("diagreport_patient_category", f"DiagnosticReport?patient={pid}&category={q(DR_CAT)}|LAB")
        add("patient_revinclude_encounters", f"Patient?_id={pid}&_revinclude=Encounter:patient")
        if rec.get("MedicationRequest"):
            add("medreq_include", f"MedicationRequest?patient={pid}&_include=MedicationRequest:requester"
                "&_include=MedicationRequest:medication")
        add("obs_chain_family", f"Observation?subject:Patient.family={q(p['family'])}")
    for window in big:
        codes = ",".join(f"{q(c[0])}|{c[1]}" for c in window)
        add("obs_total_accurate", f"Observation?code={codes}&_total=accurate", est=round(sum(est(c) for c in window)))
    add("obs_total_laboratory", f"Observation?category={q(OBS_CAT)}|laboratory&_total=accurate")
    for cat in ("vital-signs", "laboratory", "survey"):
        add("obs_page1", f"Observation?category={q(OBS_CAT)}|{cat}&_count=20")
        add("obs_page50", f"Observation?category={q(OBS_CAT)}|{cat}&_count=20")
    return list(Q.values())


def to_json(queries: list[Query]) -> bytes:
    return orjson.dumps([asdict(x) for x in queries], option=orjson.OPT_INDENT_2)


def from_json(raw: bytes) -> list[Query]:
    return [Query(**d) for d in orjson.loads(raw)]
