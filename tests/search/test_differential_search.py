"""Differential search test: SQLite == brute force == PostgreSQL (https://hl7.org/fhir/R4/search.html).

Ten Synthea bundles go through the transaction handler into a SQLite and a PostgreSQL store (their
POST entries turned into PUTs of the resources' own ids, so both stores hold the same ids; `urn:uuid`
references are rewritten by the server). Seeded random queries over the stored data then run on both
servers, every page followed, and against `support.bruteforce`, which evaluates the SearchParameter
FHIRPath over the resources read back from the store and applies the spec's matching rules itself.
Queries the server answers as unsupported (`not-supported`) are skipped and counted per feature.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from samverka.api.server import build_services
from samverka.config import Settings
from samverka.errors import FhirError
from samverka.interactions.context import Services
from samverka.interactions.search import search
from samverka.interactions.transaction import transaction
from samverka.search.params import Registry
from support.bruteforce import Dataset, Unsupported
from support.querygen import GenQuery, QueryGenerator

SYNTHEA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "synthea-r4"
FILES = (
    "Bonnie_Marvin_5c55a67c-fb41-4509-9eae-a55eebf760e1.json",
    "Carla_Echevarría_9a628ccd-2a55-4331-8e68-bb58458fd674.json",
    "Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json",
    "Florencia_Meléndez_6237cb1b-3c2d-4561-a0da-27281f8ddca7.json",
    "Gustavo_Mejía_59a8543c-e24f-4a01-b28b-47ccde6bc11d.json",
    "María_Luisa_Razo_d060a28c-4e03-4435-8b2e-1cbfa38ca43b.json",
    "Mitch_Leannon_be320ab6-80d0-4cde-af69-2c6f4aea6e7a.json",
    "Paris_Casper_826f1b71-0205-4543-b019-ce6583b77fc5.json",
    "Tony_Beer_bb8cd3e5-8910-4eea-bbc6-3f64a4a655b8.json",
    "Xavier_Lueilwitz_1af31141-7c85-4dc9-8472-8fd3fa953ee8.json",
)
BASE = "http://differential.test/fhir"
SEED = int(os.environ.get("SAMVERKA_DIFF_SEED", "20260412"))
N_QUERIES = int(os.environ.get("SAMVERKA_DIFF_QUERIES", "300"))  # raise it for an exploratory run
PAGE_SIZES = (1000, 1000, 1000, 37)  # mostly one page; sometimes many, to exercise the cursors

pytestmark = pytest.mark.skipif(not SYNTHEA.is_dir(), reason="shared Synthea bundles not present")

# Genuine, explained differences: an alternative reading of the spec (`bruteforce.READINGS`) -> why the
# server follows it. A mismatch that disappears when the brute force uses that reading is tallied as
# known instead of failing; each one also has a strict xfail test below that pins it down.
KNOWN: dict[str, str] = {}


def _as_puts(bundle: dict[str, Any]) -> dict[str, Any]:
    """The transaction with each POST turned into a PUT of the resource's own id."""
    out = copy.deepcopy(bundle)
    for e in out["entry"]:
        r = e["resource"]
        e["request"] = {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
    return out


def _load(svc: Services) -> None:
    for name in FILES:
        result = transaction(svc, BASE, _as_puts(orjson.loads((SYNTHEA / name).read_bytes())))
        assert result.status == 200, name


def _stored(svc: Services) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for v in svc.repo.iter_current():
        assert v.data is not None
        out[(v.type, v.id)] = orjson.loads(v.data)
    return out


@dataclass
class Backends:
    sqlite: Services
    postgres: Services | None
    dataset: Dataset
    load_seconds: float


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Backends]:
    """Both stores loaded with the same bundles, and the brute-force dataset of what SQLite stored."""
    t0 = time.perf_counter()
    sqlite = build_services(Settings(data_dir=tmp_path_factory.mktemp("differential")))
    _load(sqlite)
    postgres: Services | None = None
    try:
        session = request.getfixturevalue("pg_session")
    except pytest.skip.Exception:
        session = None
    if session is not None:
        postgres = build_services(Settings(data_dir=tmp_path_factory.mktemp("differential-pg"),
                                           database=session.fresh()))
        _load(postgres)
    load_seconds = time.perf_counter() - t0
    dataset = Dataset.of(Registry.default(), _stored(sqlite).values())
    try:
        yield Backends(sqlite, postgres, dataset, load_seconds)
    finally:
        sqlite.repo.close()
        if postgres is not None:
            postgres.repo.close()


class Skip(Exception):
    """The server answered that (part of) the query is not supported."""


def _server_ids(svc: Services, q: GenQuery, count: int) -> tuple[list[str], int | None]:
    """Every matching id over all pages, and the `_total=accurate` of the first page."""
    pairs = [*q.pairs, ("_count", str(count)), ("_total", "accurate")]
    ids: list[str] = []
    total: int | None = None
    for _ in range(1000):
        try:
            result = search(svc, BASE, q.type, pairs, strict=True)
        except FhirError as exc:
            if any(i.code == "not-supported" for i in exc.issues):
                raise Skip(exc.message) from exc
            raise
        bundle = orjson.loads(orjson.dumps(result.resource))
        if total is None:
            total = bundle.get("total")
        for e in bundle.get("entry", []):
            if e["search"]["mode"] == "match":
                ids.append(e["resource"]["id"])
            elif e["search"]["mode"] == "outcome":
                raise Skip(orjson.dumps(e["resource"]).decode())
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            return ids, total
        pairs = parse_qsl(urlsplit(nxt[0]).query, keep_blank_values=True)
    raise AssertionError(f"{q.text()}: more than 1000 pages")


def _describe(ds: Dataset, q: GenQuery, only: dict[str, set[str]]) -> str:
    lines = [f"query: {q.text()}  (features: {', '.join(q.features)})"]
    for side, ids in only.items():
        if ids:
            lines.append(f"  {side} ({len(ids)}): {sorted(ids)[:8]}")
    differing = sorted(set().union(*only.values()))
    if differing:
        rid = differing[0]
        resource = ds.resources.get((q.type, rid))
        if resource is not None:
            values = orjson.dumps(ds.explain(resource, list(q.pairs)), default=str).decode()
            lines.append(f"  {q.type}/{rid} values: {values[:1500]}")
    return "\n".join(lines)


def _under(ds: Dataset, readings: list[str]) -> Dataset:
    for r in readings:
        ds = ds.reading(r)
    return ds


@dataclass
class Tally:
    compared: int = 0
    nonempty: int = 0
    pages: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skip_reasons: dict[str, str] = field(default_factory=dict)
    known: Counter[str] = field(default_factory=Counter)
    known_example: dict[str, str] = field(default_factory=dict)
    features: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


def test_stored_resources_are_the_same_on_both_backends(backends: Backends) -> None:
    """PostgreSQL stores what SQLite stores (ids and content, apart from meta), so one dataset serves both."""
    if backends.postgres is None:
        pytest.skip("PostgreSQL not available")
    pg = _stored(backends.postgres)
    assert set(pg) == set(backends.dataset.resources)
    strip = [k for k in pg if {**pg[k], "meta": None} != {**backends.dataset.resources[k], "meta": None}]
    assert not strip, f"{len(strip)} resources differ, e.g. {strip[0]}"


def test_random_queries_agree_with_brute_force_on_both_backends(backends: Backends) -> None:
    """300 seeded queries: server ids on SQLite == brute-force ids == server ids on PostgreSQL, _total too."""
    t0 = time.perf_counter()
    ds = backends.dataset
    gen = QueryGenerator(ds, SEED)
    tally = Tally()
    for n, q in enumerate(gen.generate(N_QUERIES)):
        count = PAGE_SIZES[n % len(PAGE_SIZES)]
        tally.features.update(q.features)
        try:
            expected = ds.search(q.type, list(q.pairs))
        except Unsupported as exc:
            tally.skipped[f"brute force: {exc}"] += 1
            continue
        results: dict[str, set[str]] = {"brute force": expected}
        skipped = False
        for label, svc in (("sqlite", backends.sqlite), ("postgresql", backends.postgres)):
            if svc is None:
                continue
            try:
                ids, total = _server_ids(svc, q, count)
            except Skip as exc:
                key = next((f for f in q.features if f in exc.args[0]), ",".join(q.features))
                tally.skipped[key] += 1
                tally.skip_reasons.setdefault(key, f"{q.text()}: {exc.args[0][:200]}")
                skipped = True
                break
            tally.pages += -(-max(len(ids), 1) // count)
            if len(ids) != len(set(ids)):
                tally.failures.append(f"{label} returned duplicates over its pages for {q.text()}")
            if total != len(ids):
                tally.failures.append(f"{label} _total={total} but {len(ids)} matches for {q.text()}")
            results[label] = set(ids)
        if skipped:
            continue
        tally.compared += 1
        tally.nonempty += bool(expected)
        union = set().union(*results.values())
        missing = {f"missing from {side}": union - ids for side, ids in results.items()}
        if any(missing.values()):
            servers = [ids for side, ids in results.items() if side != "brute force"]
            readings = [[r] for r in KNOWN] + [list(KNOWN)]
            reading = next((" + ".join(rs) for rs in readings
                            if all(_under(ds, rs).search(q.type, list(q.pairs)) == ids for ids in servers)), None)
            if reading is not None:
                tally.known[reading] += 1
                tally.known_example.setdefault(reading, q.text())
            else:
                tally.failures.append(_describe(ds, q, missing))
    elapsed = time.perf_counter() - t0
    summary = (f"\ndifferential search: {N_QUERIES} generated, {tally.compared} compared "
               f"({tally.nonempty} non-empty), {sum(tally.skipped.values())} skipped, {tally.pages} pages, "
               f"load {backends.load_seconds:.1f}s, queries {elapsed:.1f}s, "
               f"postgresql {'on' if backends.postgres else 'OFF'}")
    for key, k in tally.skipped.most_common():
        summary += f"\n  skipped {k:3d} x {key}: {tally.skip_reasons.get(key, '')}"
    for reading, k in tally.known.items():
        summary += f"\n  known difference {k:3d} x {reading}, e.g. {tally.known_example[reading]}"
    summary += "\n  features: " + ", ".join(f"{f} {k}" for f, k in sorted(tally.features.items()))
    print(summary)
    assert not tally.failures, f"{len(tally.failures)} mismatches:\n" + "\n".join(tally.failures[:10]) + summary


# -- pinned examples; the known differences are strict xfails, so a fix shows up as one to clean up --


def _assert_agree(backends: Backends, type_: str, pairs: list[tuple[str, str]]) -> None:
    q = GenQuery(type_, tuple(pairs), ())
    expected = backends.dataset.search(type_, pairs)
    assert expected, f"{q.text()} should match something in the loaded data"
    for label, svc in (("sqlite", backends.sqlite), ("postgresql", backends.postgres)):
        if svc is not None:
            ids = set(_server_ids(svc, q, 1000)[0])
            only = {"missing from brute force": ids - expected, f"missing from {label}": expected - ids}
            assert ids == expected, _describe(backends.dataset, q, only)


def _quantities(ds: Dataset) -> list[float]:
    return [o["valueQuantity"]["value"] for o in ds.by_type["Observation"]
            if isinstance(o.get("valueQuantity", {}).get("value"), float)]


def test_identifier_text_searches_identifier_type_text(backends: Backends) -> None:
    """identifier:text=Passport finds the Patients with a passport number (Identifier.type.text)."""
    _assert_agree(backends, "Patient", [("identifier:text", "Passport")])


def test_quantity_eq_finds_the_value_stated_to_full_precision(backends: Backends) -> None:
    """value-quantity=<a stored value as written> finds that Observation."""
    value = next(v for v in _quantities(backends.dataset) if len(repr(v)) >= 17)
    _assert_agree(backends, "Observation", [("value-quantity", repr(value))])


def test_quantity_eb_compares_the_stated_values(backends: Backends) -> None:
    """value-quantity=eb394 finds 393.52: the implicit precision of 394 is ignored for eb."""
    value = next(v for v in _quantities(backends.dataset) if 0.5 < v % 1 < 0.95)
    _assert_agree(backends, "Observation", [("value-quantity", f"eb{math.ceil(value)}"),
                                            ("value-quantity", f"ge{math.floor(value)}")])
