"""Extractor speed over Synthea bundles (https://hl7.org/fhir/R4/search.html).

Run as a script for the figures: `python tests/search/test_extract_bench.py [bundles]` prints the median
and mean µs per resource and index rows per resource over 10 Synthea bundles (urn:uuid references
rewritten to Type/id first, as a transaction would). The test below only checks the script runs.
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from samverka.search.extract import extract, patient_compartment
from samverka.search.params import Registry

_UUID = re.compile(r'"(urn:uuid:[0-9a-f-]+)"')
SYNTHEA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "synthea-r4"


def load(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(p for p in SYNTHEA.glob("*.json") if "Information" not in p.name)[:n]:
        bundle = orjson.loads(path.read_bytes())
        ids = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
        text = orjson.dumps([e["resource"] for e in bundle["entry"]]).decode()
        out.extend(orjson.loads(_UUID.sub(lambda m: orjson.dumps(ids.get(m[1], m[1])).decode(), text)))  # noqa: B023
    return out


def bench(resources: list[dict[str, Any]]) -> dict[str, float]:
    reg = Registry.default()
    for r in resources[:200]:  # compile the extractors of the types involved, warm caches
        extract(r, reg)
    times: list[float] = []
    rows = 0
    t_all = time.perf_counter()
    for r in resources:
        t0 = time.perf_counter()
        index = extract(r, reg)
        patient_compartment(r, reg)
        times.append(time.perf_counter() - t0)
        rows += index.count()
    total = time.perf_counter() - t_all
    return {
        "resources": len(resources),
        "median_us": statistics.median(times) * 1e6,
        "mean_us": total / len(resources) * 1e6,
        "rows_per_resource": rows / len(resources),
        "resources_per_s": len(resources) / total,
    }


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="shared reference material not present")
def test_bench_runs() -> None:
    result = bench(load(1))
    assert result["resources"] > 0 and result["rows_per_resource"] > 5


if __name__ == "__main__":
    res = load(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
    runs = [bench(res) for _ in range(5)]  # the machine is shared: report the least disturbed run
    for key, value in min(runs, key=lambda r: r["median_us"]).items():
        print(f"{key}: {value:,.1f}")
