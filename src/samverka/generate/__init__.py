"""Synthetic Swedish regional data as FHIR R4 transaction Bundles, reproducible from a seed.

`generate_region(patients, seed)` yields the region Bundle first (provider, care units, practitioners
and their roles, PUT to fixed ids that are their HSA-ids), then one Bundle per patient (or per
`patients_per_bundle` patients) that POSTs its own resources with `urn:uuid:` fullUrls. Patients are
created with `ifNoneExist` on their personnummer, so loading a dataset twice does not duplicate them.
The per-patient size is set by `resources_per_patient` (an average; default 100).

Each patient has its own rng stream derived from (seed, index), so the first N patients of a larger
run are the same as a run of N patients. Datasets from different seeds share the region but are
separate populations: load one seed per database, since personnummer may repeat across seeds.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from random import Random

import orjson

from samverka.generate.common import Resource
from samverka.generate.patient import (
    DEFAULT_AS_OF,
    DEFAULT_RESOURCES_PER_PATIENT,
    PatientBuilder,
    Settings,
)
from samverka.generate.region import build_region

REGION_FILE = "00-region.json"
_PATIENT_FILE = re.compile(r"patient-\d{6}\.json")

__all__ = [
    "DEFAULT_AS_OF",
    "DEFAULT_RESOURCES_PER_PATIENT",
    "REGION_FILE",
    "generate_region",
    "write_region",
]


def generate_region(
    patients: int,
    seed: int,
    *,
    resources_per_patient: int = DEFAULT_RESOURCES_PER_PATIENT,
    as_of: date = DEFAULT_AS_OF,
    patients_per_bundle: int = 1,
) -> Iterator[Resource]:
    """Yield the region transaction Bundle, then the patient transaction Bundles."""
    if patients < 0 or patients_per_bundle < 1 or resources_per_patient < 1:
        raise ValueError("patients must be >= 0, patients_per_bundle and resources_per_patient >= 1")
    region = build_region()
    yield region.bundle
    settings = Settings(as_of=as_of, resources_per_patient=resources_per_patient)
    used: set[str] = set()
    entries: list[dict[str, object]] = []
    for index in range(patients):
        rng = Random(f"samverka:{seed}:patient:{index}")
        entries.extend(PatientBuilder(region, rng, settings, used).build())
        if (index + 1) % patients_per_bundle == 0 or index == patients - 1:
            yield {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            entries = []


def write_region(
    out_dir: Path,
    patients: int,
    seed: int,
    *,
    resources_per_patient: int = DEFAULT_RESOURCES_PER_PATIENT,
    as_of: date = DEFAULT_AS_OF,
    patients_per_bundle: int = 1,
) -> dict[str, int]:
    """Write `00-region.json` and one `patient-NNNNNN.json` per Bundle; return resources per type.

    Files sort in load order. `patient-NNNNNN.json` files left over from a larger earlier run are
    removed, so the folder always holds exactly one dataset; files with other names are left alone.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    bundles = generate_region(
        patients,
        seed,
        resources_per_patient=resources_per_patient,
        as_of=as_of,
        patients_per_bundle=patients_per_bundle,
    )
    written = set()
    for number, bundle in enumerate(bundles):
        counts.update(entry["resource"]["resourceType"] for entry in bundle["entry"])
        name = REGION_FILE if number == 0 else f"patient-{number:06d}.json"
        (out_dir / name).write_bytes(orjson.dumps(bundle))
        written.add(name)
    for stale in out_dir.glob("patient-*.json"):
        if _PATIENT_FILE.fullmatch(stale.name) and stale.name not in written:
            stale.unlink()
    return dict(sorted(counts.items()))
