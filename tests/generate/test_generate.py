"""Behaviour of the synthetic region generator: determinism, Swedish identifiers, references, structure, size."""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from samverka.generate import DEFAULT_AS_OF, REGION_FILE, generate_region, write_region
from samverka.generate.common import fhir_datetime
from samverka.sweden import codes
from samverka.sweden.identifiers import (
    HSA_ID,
    ORGANISATIONSNUMMER,
    PERSONNUMMER,
    SAMORDNINGSNUMMER,
    is_valid_hsa_id,
    is_valid_organisationsnummer,
    parse_personnummer,
)

Bundle = dict[str, Any]
PATIENTS = 300


@pytest.fixture(scope="module")
def bundles() -> list[Bundle]:
    return list(generate_region(PATIENTS, seed=42))


@pytest.fixture(scope="module")
def region(bundles: list[Bundle]) -> dict[str, dict[str, Any]]:
    """Region resources by `Type/id`."""
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"] for e in bundles[0]["entry"]}


def resources(bundles: list[Bundle], resource_type: str) -> list[dict[str, Any]]:
    return [e["resource"] for b in bundles[1:] for e in b["entry"] if e["resource"]["resourceType"] == resource_type]


def references(node: Any) -> Iterator[str]:
    """Every Reference.reference string anywhere inside a resource."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def parse_dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_same_seed_gives_byte_identical_output() -> None:
    """Two runs with one seed serialise to the same bytes, uuids included."""
    first = [orjson.dumps(b) for b in generate_region(25, seed=7)]
    second = [orjson.dumps(b) for b in generate_region(25, seed=7)]
    assert first == second


def test_different_seeds_give_different_patients() -> None:
    """Seeds change the patients but never the region."""
    a = list(generate_region(5, seed=1))
    b = list(generate_region(5, seed=2))
    assert a[0] == b[0]  # the region is shared by every seed
    assert a[1:] != b[1:]


def test_a_smaller_run_is_a_prefix_of_a_larger_one() -> None:
    """Patient i depends only on (seed, i), so the first N patients never change with the total."""
    small = list(generate_region(10, seed=3))
    large = list(generate_region(30, seed=3))
    assert large[: len(small)] == small


def test_region_bundle_puts_provider_units_and_staff_to_hsa_ids(region: dict[str, dict[str, Any]]) -> None:
    """Every region resource is PUT to `Type/<HSA-id>` and carries that HSA-id as an identifier."""
    by_type = Counter(key.split("/")[0] for key in region)
    assert by_type["Organization"] == 9  # provider + 8 units
    assert by_type["Practitioner"] == by_type["PractitionerRole"] == 24
    providers = [r for r in region.values() if r["resourceType"] == "Organization" and "partOf" not in r]
    assert len(providers) == 1
    provider = providers[0]
    orgnr = [i["value"] for i in provider["identifier"] if i["system"] == ORGANISATIONSNUMMER]
    assert len(orgnr) == 1 and is_valid_organisationsnummer(orgnr[0])
    for res in region.values():
        if res["resourceType"] in ("Organization", "Practitioner"):
            hsa = [i["value"] for i in res["identifier"] if i["system"] == HSA_ID]
            assert hsa == [res["id"]] and is_valid_hsa_id(res["id"]) and hsa[0][2:12] == orgnr[0]
        if res["resourceType"] == "Organization" and res is not provider:
            assert res["partOf"] == {"reference": f"Organization/{provider['id']}"}
    for res in region.values():
        for target in references(res):
            assert target in region, target


def test_region_bundle_requests_match_resource_ids(bundles: list[Bundle]) -> None:
    """PUT urls name the resource's own id, so a reload updates in place."""
    for entry in bundles[0]["entry"]:
        res = entry["resource"]
        assert entry["request"] == {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}


def test_practitioner_roles_carry_the_assignment_purpose(region: dict[str, dict[str, Any]]) -> None:
    """Each PractitionerRole links a practitioner to a unit and states 'Vård och behandling'."""
    units_with_staff: Counter[str] = Counter()
    for res in region.values():
        if res["resourceType"] != "PractitionerRole":
            continue
        assert res["practitioner"]["reference"] in region
        unit = region[res["organization"]["reference"]]
        assert "partOf" in unit
        units_with_staff[unit["id"]] += 1
        [ext] = [e for e in res["extension"] if e["url"] == codes.ASSIGNMENT_PURPOSE_EXTENSION]
        assert ext["valueCoding"]["display"] == "Vård och behandling"
        assert any(c.get("text") == "Vård och behandling" for c in res["code"])
    assert len(units_with_staff) == 8 and set(units_with_staff.values()) == {3}


def test_every_personnummer_is_valid_and_matches_gender_and_birth_date(bundles: list[Bundle]) -> None:
    """Identifiers parse, are canonical and unique, agree with gender/birthDate, and drive ifNoneExist."""
    seen = set()
    for bundle in bundles[1:]:
        patients = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
        assert len(patients) == 1
        entry = patients[0]
        patient = entry["resource"]
        [ident] = patient["identifier"]
        parsed = parse_personnummer(ident["value"], today=DEFAULT_AS_OF)
        assert parsed.value == ident["value"]  # stored in canonical 12-digit form
        assert ident["system"] == (SAMORDNINGSNUMMER if parsed.is_samordningsnummer else PERSONNUMMER)
        assert patient["gender"] == parsed.sex
        assert patient["birthDate"] == parsed.birth_date.isoformat()
        assert entry["request"] == {
            "method": "POST",
            "url": "Patient",
            "ifNoneExist": f"identifier={ident['system']}|{ident['value']}",
        }
        seen.add(ident["value"])
    assert len(seen) == PATIENTS


def test_some_patients_have_samordningsnummer_or_protected_identity(bundles: list[Bundle]) -> None:
    """About 2% samordningsnummer and 1% sekretessmarkering, labelled with the documented system."""
    patients = resources(bundles, "Patient")
    samordning = [p for p in patients if p["identifier"][0]["system"] == SAMORDNINGSNUMMER]
    protected = [p for p in patients if "meta" in p]
    assert 1 <= len(samordning) <= 0.05 * PATIENTS
    assert 1 <= len(protected) <= 0.04 * PATIENTS
    for p in protected:
        labels = {(c["system"], c["code"]) for c in p["meta"]["security"]}
        assert (codes.SECURITY_LABEL_SYSTEM, codes.PROTECTED_INFORMATION) in labels


def test_ages_span_children_to_centenarians() -> None:
    """Large runs include newborns-to-teens and people aged 100+ (whose short form uses '+')."""
    ages = []
    for bundle in generate_region(2000, seed=11, resources_per_patient=3):
        for e in bundle["entry"]:
            if e["resource"]["resourceType"] == "Patient":
                born = date.fromisoformat(e["resource"]["birthDate"])
                ages.append((DEFAULT_AS_OF - born).days // 365)
    assert min(ages) < 5 and max(ages) >= 100


def test_every_reference_resolves_in_its_bundle_or_the_region(
    bundles: list[Bundle], region: dict[str, dict[str, Any]]
) -> None:
    """urn:uuid references hit a fullUrl in the same Bundle; `Type/id` ones hit the region Bundle."""
    for bundle in bundles[1:]:
        full_urls = [e["fullUrl"] for e in bundle["entry"]]
        assert len(set(full_urls)) == len(full_urls)
        assert all(re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", u) for u in full_urls)
        for entry in bundle["entry"]:
            assert entry["request"]["method"] == "POST"
            assert entry["request"]["url"] == entry["resource"]["resourceType"]
            for target in references(entry["resource"]):
                if target.startswith("urn:uuid:"):
                    assert target in full_urls, target
                else:
                    assert target in region, target


def test_hsa_ids_in_patient_data_point_at_region_staff_and_units(
    bundles: list[Bundle], region: dict[str, dict[str, Any]]
) -> None:
    """Fixed-id references from patient data are HSA-ids."""
    for res in resources(bundles, "Encounter") + resources(bundles, "MedicationRequest"):
        for target in references(res):
            if not target.startswith("urn:"):
                assert is_valid_hsa_id(target.split("/", 1)[1])


def test_encounters_are_well_formed(bundles: list[Bundle], region: dict[str, dict[str, Any]]) -> None:
    """Status, class, period and service provider agree; a few encounters are planned or ongoing."""
    statuses: Counter[str] = Counter()
    for enc in resources(bundles, "Encounter"):
        statuses[enc["status"]] += 1
        assert enc["class"]["system"] == codes.V3_ACT_CODE and enc["class"]["code"] in {"AMB", "EMER", "IMP"}
        unit = region[enc["serviceProvider"]["reference"]]
        assert "partOf" in unit and unit["name"] != "Klinisk kemi, Laboratoriemedicin Exempel"
        [participant] = enc["participant"]
        assert participant["individual"]["reference"].startswith("Practitioner/")
        start = parse_dt(enc["period"]["start"])
        if enc["status"] == "finished":
            assert parse_dt(enc["period"]["end"]) > start
            assert start.date() <= DEFAULT_AS_OF
        elif enc["status"] == "planned":
            assert start.date() > DEFAULT_AS_OF and "end" not in enc["period"]
        else:
            assert enc["status"] == "in-progress" and "end" not in enc["period"]
            assert enc["class"]["code"] == "IMP"
    assert statuses["finished"] > 10 * (statuses["planned"] + statuses["in-progress"]) > 0
    assert statuses["planned"] > 0 and statuses["in-progress"] > 0


def test_conditions_use_icd10se_and_consistent_status(bundles: list[Bundle]) -> None:
    """ICD-10-SE codes; abatement exactly when resolved; onset not after recording."""
    for cond in resources(bundles, "Condition"):
        [code] = cond["code"]["coding"]
        assert code["system"] == codes.ICD_10_SE
        assert re.fullmatch(r"[A-Z]\d\d(\.\d{1,2})?", code["code"]) and code["display"]
        clinical = cond["clinicalStatus"]["coding"][0]["code"]
        assert ("abatementDateTime" in cond) == (clinical == "resolved")
        assert cond["onsetDateTime"] <= cond["recordedDate"][:10]
        assert cond["subject"]["reference"].startswith("urn:uuid:")
        assert cond["encounter"]["reference"].startswith("urn:uuid:")


def test_lab_observations_are_npu_coded_with_consistent_flags(bundles: list[Bundle]) -> None:
    """NPU codes, UCUM units, H/L/N flags matching the range, samples taken during the encounter."""
    encounters = {}
    for bundle in bundles[1:]:
        for e in bundle["entry"]:
            if e["resource"]["resourceType"] == "Encounter":
                encounters[e["fullUrl"]] = e["resource"]
    observations = resources(bundles, "Observation")
    assert len(observations) > 10 * PATIENTS
    codes_seen: Counter[str] = Counter()
    for obs in observations:
        assert obs["status"] == "final"
        assert obs["category"][0]["coding"][0]["code"] == "laboratory"
        [code] = obs["code"]["coding"]
        assert code["system"] == codes.NPU and re.fullmatch(r"NPU\d{5}", code["code"])
        codes_seen[code["code"]] += 1
        qty = obs["valueQuantity"]
        assert qty["system"] == codes.UCUM and qty["value"] > 0
        low = obs["referenceRange"][0].get("low", {}).get("value")
        high = obs["referenceRange"][0].get("high", {}).get("value")
        expected = (
            "L" if low is not None and qty["value"] < low else "H" if high is not None and qty["value"] > high else "N"
        )
        assert obs["interpretation"][0]["coding"][0]["code"] == expected
        encounter = encounters[obs["encounter"]["reference"]]
        effective = parse_dt(obs["effectiveDateTime"])
        assert effective >= parse_dt(encounter["period"]["start"])
        assert parse_dt(obs["issued"]) >= effective
    hb = [o["valueQuantity"]["value"] for o in observations if o["code"]["coding"][0]["code"] == "NPU02319"]
    assert 120 < sum(hb) / len(hb) < 160  # g/L
    assert {"NPU02319", "NPU19748", "NPU04998", "NPU27300"} <= set(codes_seen)


def test_medication_requests_use_atc_and_have_one_current_order_per_chronic_drug(bundles: list[Bundle]) -> None:
    """ATC coded orders; for each chronic drug at most one prescription is active."""
    for bundle in bundles[1:]:
        problems = {
            e["fullUrl"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Condition"
            and e["resource"]["category"][0]["coding"][0]["code"] == "problem-list-item"
        }
        current: Counter[str] = Counter()
        for e in bundle["entry"]:
            req = e["resource"]
            if req["resourceType"] != "MedicationRequest":
                continue
            assert req["intent"] == "order"
            assert req["status"] in {"active", "completed", "stopped"}
            [code] = req["medicationCodeableConcept"]["coding"]
            assert code["system"] == codes.ATC and re.fullmatch(r"[A-Z]\d\d[A-Z]{2}\d\d", code["code"])
            assert req["requester"]["reference"].startswith("Practitioner/")
            assert parse_dt(req["authoredOn"]).date() <= DEFAULT_AS_OF
            reasons = {r["reference"] for r in req.get("reasonReference", [])}
            if reasons & problems and req["status"] == "active":
                current[code["code"]] += 1
        assert all(n == 1 for n in current.values())


def test_prescribers_are_doctors(bundles: list[Bundle], region: dict[str, dict[str, Any]]) -> None:
    """Only practitioners qualified as Läkare prescribe."""
    for req in resources(bundles, "MedicationRequest"):
        practitioner = region[req["requester"]["reference"]]
        assert practitioner["qualification"][0]["code"]["text"] == "Läkare"


def test_counts_scale_with_patients_and_the_configured_size() -> None:
    """Resource totals grow linearly with patients and follow resources_per_patient."""

    def totals(patients: int, size: int) -> Counter[str]:
        out: Counter[str] = Counter()
        for bundle in list(generate_region(patients, seed=5, resources_per_patient=size))[1:]:
            out.update(e["resource"]["resourceType"] for e in bundle["entry"])
        return out

    small, large = totals(100, 100), totals(300, 100)
    assert (small["Patient"], large["Patient"]) == (100, 300)
    assert 2.4 < sum(large.values()) / sum(small.values()) < 3.6
    assert 60 <= sum(large.values()) / 300 <= 120
    lean = totals(300, 30)
    assert sum(lean.values()) / 300 < 45


def test_patients_per_bundle_groups_patients() -> None:
    """Grouping changes only how entries are split into Bundles."""
    grouped = list(generate_region(25, seed=9, patients_per_bundle=10))
    assert len(grouped) == 1 + 3
    single = list(generate_region(25, seed=9))
    assert [e for b in grouped[1:] for e in b["entry"]] == [e for b in single[1:] for e in b["entry"]]


def test_write_region_writes_files_in_load_order_and_returns_counts(tmp_path: Path) -> None:
    """Region file first, then one file per patient; the returned counts match the files."""
    counts = write_region(tmp_path / "out", patients=4, seed=1)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [REGION_FILE] + [f"patient-{i:06d}.json" for i in range(1, 5)]
    seen: Counter[str] = Counter()
    for name in files:
        bundle = orjson.loads((tmp_path / "out" / name).read_bytes())
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
        seen.update(e["resource"]["resourceType"] for e in bundle["entry"])
    assert counts == dict(seen)
    assert counts["Patient"] == 4 and counts["Organization"] == 9


def test_write_region_removes_patient_files_left_from_a_larger_run(tmp_path: Path) -> None:
    """Rewriting a folder with fewer patients leaves exactly the new dataset (other files untouched)."""
    write_region(tmp_path, patients=5, seed=1)
    (tmp_path / "notes.txt").write_text("mine")
    write_region(tmp_path, patients=2, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        REGION_FILE,
        "notes.txt",
        "patient-000001.json",
        "patient-000002.json",
    ]


def test_generated_resources_validate_against_r4(bundles: list[Bundle]) -> None:
    """Every generated resource, and every Bundle, passes the project's R4 StructureDefinition validator."""
    validation = pytest.importorskip("samverka.validation")
    validator = validation.Validator.default()
    problems = []
    for bundle in bundles[:80]:
        problems += [(None, i) for i in validator.validate(bundle)]
        for entry in bundle["entry"]:
            problems += [(entry["resource"]["resourceType"], i) for i in validator.validate(entry["resource"])]
    assert problems == []


def test_generating_a_thousand_patients_is_fast() -> None:
    """1,000 patients (about 100k resources) generate well under 10 s."""
    started = time.process_time()  # CPU time, so a busy machine does not fail the test
    total = sum(len(b["entry"]) for b in generate_region(1000, seed=2))
    elapsed = time.process_time() - started
    assert total > 60_000
    assert elapsed < 10, f"{elapsed:.1f} s CPU for 1,000 patients"


@pytest.mark.parametrize(
    ("cet", "expected"),
    [
        (datetime(2026, 1, 15, 9, 30), "2026-01-15T09:30:00+01:00"),
        (datetime(2026, 7, 1, 14, 0), "2026-07-01T15:00:00+02:00"),
        (datetime(2026, 3, 29, 1, 59), "2026-03-29T01:59:00+01:00"),  # CEST starts 01:00 UTC on 29 March 2026
        (datetime(2026, 3, 29, 2, 0), "2026-03-29T03:00:00+02:00"),
        (datetime(2026, 10, 25, 1, 59), "2026-10-25T02:59:00+02:00"),  # and ends 01:00 UTC on 25 October
        (datetime(2026, 10, 25, 2, 0), "2026-10-25T02:00:00+01:00"),
    ],
)
def test_timestamps_are_shown_in_swedish_local_time(cet: datetime, expected: str) -> None:
    """Internal CET times are shown as CET or CEST with the right offset, without gaps or overlaps."""
    assert fhir_datetime(cet) == expected


def test_timestamps_stay_in_order_across_daylight_saving_changes() -> None:
    """Minute by minute over both change days, the shown instants strictly increase."""
    for day in (date(2024, 3, 31), date(2024, 10, 27)):
        shown = [
            parse_dt(fhir_datetime(datetime(day.year, day.month, day.day) + timedelta(minutes=m))) for m in range(300)
        ]
        assert all(a < b for a, b in itertools.pairwise(shown))
