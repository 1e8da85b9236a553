"""Differential search under Patientdatalagen: a restricted user's results == brute force filtered by the rules.

Issue 4 ("extend the search differential test with a user who has restricted access"). Six Synthea
bundles go into the live server of tests/auth (`serve --auth on`, the generated region loaded: a care
provider Organization with its HSA-id, care units `partOf` it, practitioners and their roles), on
SQLite and on PostgreSQL. On top of them a care situation for one vårdcentral doctor (DOCTOR at VC):

- Clemente: an in-progress Encounter at VC (care relationship); his Synthea records are another
  provider's (the Synthea hospital), so he shows up but they do not.
- Gustavo: an active EpisodeOfCare at VC and a consent (permit) naming the region: everything visible.
- Wiley: a CareTeam with the doctor, a consent naming VC, and a spärr against orthopaedics (same
  provider, another unit; an Encounter and an Observation recorded there) and against one of his two
  Synthea hospitals; the spärr wins over the consent.
- Xavier: only an Encounter at VC finished 400 days ago: no relationship, nothing visible.
- Paris: no relationship, but the doctor opens his record in an emergency (`$emergency-access`).
- Tony: nothing at all.

Seeded random queries (the generator of tests/search/test_differential_search.py, anchored half on
resources the doctor may see so that results are not mostly empty) go over HTTP with the doctor's
token (minted by the server through the JWT-bearer grant from the trusted issuer), every page
followed, `_total=accurate` compared. The expectation is `support.bruteforce` over the stored resources
the user may see by `Rules` below, an independent reading of the rules of shared/docs/sweden.md and
docs/architecture.md ("PDL access rules") written without samverka.auth. Evaluating over the visible
resources (rather than filtering the matches of all of them) also holds `_has` and chains to the
rules: `Patient?_has:Observation:patient:code=x` must not find a patient through an Observation the
user may not read (it did, until search.query.guarded).
"""

from __future__ import annotations

import copy
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from loginkit import LaunchServer
from pdlkit import DOCTOR, ORTO, PROVIDER, VC, Users, consent, encounter, observation, org, put_all, when

from samverka.api.server import build_services
from samverka.config import Settings
from samverka.fhir.definitions import compartment_definition
from samverka.search.params import Registry
from support.bruteforce import Dataset, Unsupported, ref_of
from support.querygen import GenQuery, QueryGenerator

SYNTHEA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "synthea-r4"
FILES = {
    "clemente": "Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json",
    "gustavo": "Gustavo_Mejía_59a8543c-e24f-4a01-b28b-47ccde6bc11d.json",
    "wiley": "Wiley_Wisoky_0dae4422-bf65-475b-8d93-4c1382168951.json",
    "xavier": "Xavier_Lueilwitz_1af31141-7c85-4dc9-8472-8fd3fa953ee8.json",
    "paris": "Paris_Casper_826f1b71-0205-4543-b019-ce6583b77fc5.json",
    "tony": "Tony_Beer_bb8cd3e5-8910-4eea-bbc6-3f64a4a655b8.json",
}
SEED = int(os.environ.get("SAMVERKA_PDL_DIFF_SEED", "20261126"))
N_QUERIES = int(os.environ.get("SAMVERKA_PDL_DIFF_QUERIES", "240"))
PAGE_SIZES = (1000, 1000, 1000, 7)

pytestmark = pytest.mark.skipif(not SYNTHEA.is_dir(), reason="shared Synthea bundles not present")

# -- the rules, read from shared/docs/sweden.md and docs/architecture.md (not from samverka.auth) --

HSA_SYSTEMS = frozenset({"urn:oid:1.2.752.29.4.19", "urn:oid:1.2.752.129.2.1.4.1"})
AT_UNIT = "https://samverka.se/fhir/CodeSystem/recorded-at-unit"
AT_PROVIDER = "https://samverka.se/fhir/CodeSystem/recorded-at-provider"
OPEN = frozenset({"planned", "arrived", "triaged", "in-progress", "onleave"})
WINDOW_DAYS = 30


def _ref_id(v: Any, type_: str) -> str | None:
    key = ref_of(v)
    return key.split("/", 1)[1] if key and key.startswith(type_ + "/") else None


def _instant(s: str) -> datetime:
    if len(s) == 10:
        s += "T00:00:00+00:00"
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


class Rules:
    """Which stored resources one user (care unit, care provider, Practitioner) may see right now."""

    def __init__(self, ds: Dataset, unit_hsa: str, provider_hsa: str, members: set[str], emergency: set[str]) -> None:
        self.ds = ds
        self.now = datetime.now(UTC)
        orgs = ds.by_type.get("Organization", [])
        self.hsa = {o["id"]: {i.get("value") for i in o.get("identifier", []) if i.get("system") in HSA_SYSTEMS}
                    for o in orgs}
        self.part_of = {o["id"]: _ref_id(o.get("partOf"), "Organization") for o in orgs}
        self.unit_orgs = {o for o, hs in self.hsa.items() if unit_hsa in hs}
        provider = {o for o, hs in self.hsa.items() if provider_hsa in hs}
        self.provider_orgs = provider | self.unit_orgs | self._children(provider)
        self.provider_hsa = provider_hsa
        self.emergency = emergency
        self.types = {r["code"]: r.get("param", []) for r in compartment_definition("Patient")["resource"]
                      if r.get("param")}
        self.related = self._relationships(members)
        self.permitted: set[str] = set()
        self.blocks: dict[str, list[set[str]]] = {}
        for c in ds.by_type.get("Consent", []):
            if c.get("status") != "active" or not self._in_force(c.get("provision", {}).get("period")):
                continue
            patient = _ref_id(c.get("patient"), "Patient")
            named = {o for a in c.get("provision", {}).get("actor", [])
                     if (o := _ref_id(a.get("reference"), "Organization"))}
            if not named:
                named = {o for x in c.get("organization", []) if (o := _ref_id(x, "Organization"))}
            kind = c.get("provision", {}).get("type")
            if patient and kind == "permit" and named & (provider | self.unit_orgs):
                self.permitted.add(patient)
            elif patient and kind == "deny":
                blocked = named | self._children(named)
                if not blocked & self.unit_orgs:  # a user inside the blocked set is not blocked
                    self.blocks.setdefault(patient, []).append(blocked)

    def _children(self, parents: set[str]) -> set[str]:
        return {o for o, p in self.part_of.items() if p in parents}

    def _in_force(self, period: dict[str, str] | None) -> bool:
        if not period:
            return True
        start, end = period.get("start"), period.get("end")
        return (start is None or _instant(start) <= self.now) and (end is None or _instant(end) >= self.now)

    def _relationships(self, members: set[str]) -> set[str]:
        """Patients with an open (or recently finished) Encounter at the unit or one of its Locations, an
        active EpisodeOfCare managed by the unit, or an active CareTeam with the user as a member."""
        cutoff = self.now - timedelta(days=WINDOW_DAYS)
        places = {f"Organization/{o}" for o in self.unit_orgs} | {
            f"Location/{loc['id']}" for loc in self.ds.by_type.get("Location", [])
            if _ref_id(loc.get("managingOrganization"), "Organization") in self.unit_orgs}
        out = set()
        for e in self.ds.by_type.get("Encounter", []):
            at = {ref_of(e.get("serviceProvider"))} | {ref_of(x.get("location")) for x in e.get("location", [])}
            period = e.get("period", {})
            recent = e.get("status") == "finished" and bool(period) and (
                "end" not in period or _instant(period["end"]) >= cutoff)
            if at & places and (e.get("status") in OPEN or recent):
                out.add(_ref_id(e.get("subject"), "Patient"))
        for eoc in self.ds.by_type.get("EpisodeOfCare", []):
            if eoc.get("status") == "active" and _ref_id(eoc.get("managingOrganization"), "Organization") in \
                    self.unit_orgs:
                out.add(_ref_id(eoc.get("patient"), "Patient"))
        for team in self.ds.by_type.get("CareTeam", []):
            if team.get("status") == "active" and {ref_of(p.get("member")) for p in team.get("participant", [])
                                                   } & members:
                out.add(_ref_id(team.get("subject"), "Patient"))
        return {p for p in out if p}

    def patient_of(self, r: dict[str, Any]) -> str | None:
        if r["resourceType"] == "Patient":
            return str(r["id"])
        for code in self.types.get(r["resourceType"], []):
            p = self.ds.registry.get(r["resourceType"], code)
            for v in self.ds.values(r, p) if p else []:
                if (pid := _ref_id(v, "Patient")) is not None:
                    return pid
        return None

    def recorded_at(self, r: dict[str, Any]) -> tuple[set[str], set[tuple[str, str]]]:
        """(Organization ids, recorded-at tags): the serviceProvider of an Encounter, the managing
        organisation of an EpisodeOfCare, else the serviceProvider of the Encounter named by a reference
        parameter `encounter` or `context`; and the writer's stamps. A Patient is nobody's."""
        t = r["resourceType"]
        if t == "Patient":
            return set(), set()
        orgs: set[str | None] = set()
        if t == "Encounter":
            orgs.add(_ref_id(r.get("serviceProvider"), "Organization"))
        elif t == "EpisodeOfCare":
            orgs.add(_ref_id(r.get("managingOrganization"), "Organization"))
        else:
            for code in ("encounter", "context"):
                p = self.ds.registry.get(t, code)
                if p is None or p.type != "reference":
                    continue
                for v in self.ds.values(r, p):
                    enc_id = _ref_id(v, "Encounter")
                    enc = self.ds.resources.get(("Encounter", enc_id)) if enc_id else None
                    if enc is not None:
                        orgs.add(_ref_id(enc.get("serviceProvider"), "Organization"))
        tags = {(str(x.get("system")), str(x.get("code"))) for x in r.get("meta", {}).get("tag", [])
                if x.get("system") in (AT_UNIT, AT_PROVIDER)}
        return {o for o in orgs if o}, tags

    def visible(self, r: dict[str, Any]) -> bool:
        patient = self.patient_of(r)
        if patient is None:
            return True  # outside every patient compartment
        if patient not in self.related and patient not in self.emergency:
            return False
        orgs, tags = self.recorded_at(r)
        for blocked in self.blocks.get(patient, []):  # a spärr wins over consent and emergency
            codes = set().union(*(self.hsa.get(o, set()) for o in blocked))
            if orgs & blocked or {code for _, code in tags} & codes:
                return False
        other = bool(orgs - self.provider_orgs) or any(
            s == AT_PROVIDER and c != self.provider_hsa for s, c in tags)
        return not other or patient in self.permitted or patient in self.emergency


# -- the world ----------------------------------------------------------------------------------------


def _as_puts(bundle: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(bundle)
    for e in out["entry"]:
        r = e["resource"]
        e["request"] = {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
    return out


def _stored(srv: LaunchServer, tmp: Path) -> list[dict[str, Any]]:
    """Every current resource, read from the server's store in-process (the same database)."""
    args = srv.auth.store_args
    database = args[args.index("--database") + 1] if "--database" in args else None
    data_dir = Path(args[args.index("--data-dir") + 1]) if "--data-dir" in args else tmp
    svc = build_services(Settings(data_dir=data_dir, database=database))
    try:
        return [orjson.loads(v.data) for v in svc.repo.iter_current() if v.data is not None]
    finally:
        svc.repo.close()


@dataclass
class World:
    client: httpx.Client
    ds: Dataset
    rules: Rules
    patients: dict[str, str]
    load_seconds: float


@pytest.fixture(scope="module")
def world(launch_server: LaunchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    t0 = time.perf_counter()
    srv = launch_server
    pid: dict[str, str] = {}
    wiley_hospitals: Counter[str] = Counter()
    with srv.auth.fhir(srv.system_token) as system:
        for name, file in FILES.items():
            bundle = orjson.loads((SYNTHEA / file).read_bytes())
            pid[name] = next(e["resource"]["id"] for e in bundle["entry"]
                             if e["resource"]["resourceType"] == "Patient")
            if name == "wiley":
                urls = {e["fullUrl"]: e["resource"]["id"] for e in bundle["entry"]}
                wiley_hospitals.update(urls[e["resource"]["serviceProvider"]["reference"]] for e in bundle["entry"]
                                       if e["resource"]["resourceType"] == "Encounter")
            r = system.post("", json=_as_puts(bundle), timeout=120)
            assert r.status_code == 200, r.text[:2000]
    rare_hospital = wiley_hospitals.most_common()[-1][0]
    assert len(wiley_hospitals) == 2, wiley_hospitals
    team = {"resourceType": "CareTeam", "id": "pdl-wiley-team", "status": "active",
            "subject": {"reference": f"Patient/{pid['wiley']}"},
            "participant": [{"member": {"reference": f"Practitioner/{DOCTOR.id}"}}]}
    put_all(srv, [
        encounter("pdl-clemente-vc", pid["clemente"], VC.id),
        observation("pdl-clemente-obs", pid["clemente"], "pdl-clemente-vc"),
        {"resourceType": "EpisodeOfCare", "id": "pdl-gustavo-eoc", "status": "active",
         "patient": {"reference": f"Patient/{pid['gustavo']}"}, "managingOrganization": org(VC.id)},
        consent("pdl-gustavo-permit", pid["gustavo"], "permit", [PROVIDER]),
        team,
        consent("pdl-wiley-permit", pid["wiley"], "permit", [VC.id]),
        encounter("pdl-wiley-orto", pid["wiley"], ORTO.id, "finished", when(-3)),
        observation("pdl-wiley-orto-obs", pid["wiley"], "pdl-wiley-orto"),
        consent("pdl-wiley-block", pid["wiley"], "deny", [ORTO.id, rare_hospital]),
        encounter("pdl-xavier-old", pid["xavier"], VC.id, "finished", when(-400)),
        observation("pdl-xavier-obs", pid["xavier"], "pdl-xavier-old"),
    ])
    users = Users(srv)
    client = users.fhir(DOCTOR.id, VC.id)
    r = client.post(f"/Patient/{pid['paris']}/$emergency-access", json={"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "medvetslös i akuten, differentialtest"}]})
    assert r.status_code == 200, r.text
    ds = Dataset.of(Registry.default(), _stored(srv, tmp_path_factory.mktemp("pdl-diff")))
    members = {f"Practitioner/{DOCTOR.id}"}
    rules = Rules(ds, VC.id, PROVIDER, members, {pid["paris"]})
    try:
        yield World(client, ds, rules, pid, time.perf_counter() - t0)
    finally:
        client.close()


class Skip(Exception):
    """The server answered that (part of) the query is not supported."""


def _server(client: httpx.Client, q: GenQuery, count: int) -> tuple[list[str], int | None]:
    """Every matching id over all pages, and the `_total` of the first page."""
    url: str | None = f"/{q.type}"
    params: list[tuple[str, str]] | None = [*q.pairs, ("_count", str(count)), ("_total", "accurate")]
    ids: list[str] = []
    total: int | None = None
    for _ in range(500):
        assert url is not None
        r = client.get(url, params=params, headers={"Prefer": "handling=strict"})
        if r.status_code != 200:
            body = r.json()
            if any(i.get("code") == "not-supported" for i in body.get("issue", [])):
                raise Skip(r.text[:200])
            raise AssertionError(f"{q.text()}: {r.status_code} {r.text[:500]}")
        bundle = r.json()
        if total is None:
            total = bundle.get("total")
        ids += [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            return ids, total
        url, params = nxt[0], None
    raise AssertionError(f"{q.text()}: more than 500 pages")


def test_the_world_exercises_every_rule(world: World) -> None:
    """The fixture's situations have the effect they are meant to have (so the random part tests them)."""
    rules, ds, pid = world.rules, world.ds, world.patients
    assert rules.related >= {pid["clemente"], pid["gustavo"], pid["wiley"]}
    assert not rules.related & {pid["xavier"], pid["paris"], pid["tony"]}
    assert rules.permitted >= {pid["gustavo"], pid["wiley"]} and set(rules.blocks) == {pid["wiley"]}
    seen: Counter[str] = Counter()
    for r in ds.resources.values():
        p = rules.patient_of(r)
        name = next((n for n, i in pid.items() if i == p), None)
        if name is not None:
            seen[f"{name} {'visible' if rules.visible(r) else 'hidden'}"] += 1
    # hidden: Clemente's Synthea records (another provider); Wiley's blocked ones; Xavier's and Tony's all
    for key in ("clemente visible", "clemente hidden", "gustavo visible", "wiley visible", "wiley hidden",
                "xavier hidden", "tony hidden", "paris visible"):
        assert seen[key] > 0, (key, seen)
    assert not seen["gustavo hidden"] and not seen["paris hidden"] and not seen["xavier visible"], seen
    assert rules.visible(ds.resources[("Observation", "pdl-clemente-obs")])
    assert not rules.visible(ds.resources[("Observation", "pdl-wiley-orto-obs")])


def test_random_queries_agree_with_brute_force_filtered_by_the_rules(world: World) -> None:
    t0 = time.perf_counter()
    ds, rules = world.ds, world.rules
    visible = Dataset.of(ds.registry, [r for r in ds.resources.values() if rules.visible(r)])
    generators = (QueryGenerator(visible, SEED), QueryGenerator(ds, SEED + 1))
    compared = nonempty = 0
    skipped: Counter[str] = Counter()
    failures: list[str] = []
    for n in range(N_QUERIES):
        gen = generators[n % 2]
        try:
            q = gen.query()
        except (IndexError, KeyError):
            continue  # the visible data lacks the type the generator picked
        try:
            # over what the user may see: the matches, and the resources a _has or a chain looks at
            expected = visible.search(q.type, list(q.pairs))
        except Unsupported as exc:
            skipped[f"brute force: {exc}"] += 1
            continue
        try:
            ids, total = _server(world.client, q, PAGE_SIZES[n % len(PAGE_SIZES)])
        except Skip as exc:
            skipped[str(exc)[:80]] += 1
            continue
        compared += 1
        nonempty += bool(expected)
        if len(ids) != len(set(ids)):
            failures.append(f"duplicates over pages: {q.text()}")
        if set(ids) != expected or total != len(expected):
            got = set(ids)
            failures.append(f"{q.text()}: _total {total} (expected {len(expected)}); server only "
                            f"{sorted(got - expected)[:5]}; brute force only {sorted(expected - got)[:5]}")
    summary = (f"\nPDL differential: {N_QUERIES} generated, {compared} compared ({nonempty} non-empty), "
               f"{sum(skipped.values())} skipped; {len(ds.resources)} resources, "
               f"{sum(map(rules.visible, ds.resources.values()))} visible; load {world.load_seconds:.1f}s, "
               f"queries {time.perf_counter() - t0:.1f}s")
    for key, k in skipped.most_common():
        summary += f"\n  skipped {k} x {key}"
    print(summary)
    assert compared >= N_QUERIES // 2, summary
    assert nonempty >= compared // 4, summary
    assert not failures, f"{len(failures)} mismatches:\n" + "\n".join(failures[:10]) + summary


def test_has_does_not_find_patients_through_resources_the_user_may_not_see(world: World) -> None:
    """Clemente's Synthea Observations are another provider's: a `_has` over them must not find him
    (nor count him), while one over the Observation recorded at the doctor's unit does."""
    ds, rules, clemente = world.ds, world.rules, world.patients["clemente"]
    hidden = next(o for o in ds.by_type["Observation"]  # not 8302-2, the code of the one he may see
                  if rules.patient_of(o) == clemente and not rules.visible(o)
                  and o["code"]["coding"][0]["code"] != "8302-2")
    for oid, found in ((hidden["id"], []), ("pdl-clemente-obs", [clemente])):
        r = world.client.get("/Patient", params={"_has:Observation:patient:_id": oid, "_total": "accurate"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [e["resource"]["id"] for e in body.get("entry", [])] == found and body["total"] == len(found)
    code = hidden["code"]["coding"][0]
    r = world.client.get("/Patient", params={"_id": clemente, "_total": "accurate",
                                             "_has:Observation:patient:code": f"{code['system']}|{code['code']}"})
    assert r.json()["total"] == 0, r.text
