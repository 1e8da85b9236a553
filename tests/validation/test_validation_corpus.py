"""Validation over real corpora: official R4 examples and Synthea bundles (https://hl7.org/fhir/R4/validation.html)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from samverka.fhir.definitions import resource_types
from samverka.validation import Validator

EXAMPLES = Path("/work/shared/examples/fhir-r4-examples")
SYNTHEA = Path("/work/shared/data/synthea-r4")

# Official examples with genuine problems, and why (checked against the R4 definitions): name ->
# pattern of the expressions of all their errors (indexes stripped).
KNOWN_BAD = {
    # A generated Questionnaire whose nested display items have no linkId (Questionnaire.item.linkId 1..1).
    "bundle-questionnaire.json": r"Questionnaire(\.item)+\.linkId",
    # DeviceMetric.parent is Reference(Device) in R4; the example points to a DeviceDefinition.
    "devicemetric-example.json": "DeviceMetric.parent.reference",
    # DeviceUseStatement.reasonReference does not allow Procedure in R4.
    "deviceusestatement-example.json": "DeviceUseStatement.reasonReference.reference",
    # MedicationRequest.dispenseRequest.performer is Reference(Organization); the example uses a Practitioner.
    "medicationrequest0301.json": "MedicationRequest.dispenseRequest.performer.reference",
}


def _examples() -> list[Path]:
    if not EXAMPLES.is_dir():
        return []
    out = []
    for path in sorted(EXAMPLES.glob("*.json")):
        data = orjson.loads(path.read_bytes())
        if isinstance(data, dict) and data.get("resourceType") in resource_types():
            out.append(path)
    return out


def _bundles() -> list[Path]:
    return sorted(SYNTHEA.glob("*.json"))[:5] if SYNTHEA.is_dir() else []


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.default()


def test_default_is_cached() -> None:
    assert Validator.default() is Validator.default()


def test_examples_are_present() -> None:
    if not EXAMPLES.is_dir():
        pytest.skip("shared examples not available")
    assert len(_examples()) >= 60


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_official_example(validator: Validator, path: Path) -> None:
    resource = orjson.loads(path.read_bytes())
    errors = [i for i in validator.validate(resource, resource["resourceType"]) if i.severity == "error"]
    if path.name in KNOWN_BAD:
        assert errors, f"{path.name} is listed as bad but validates"
        # every error is the explained one: its expression, indexes stripped, matches the listed pattern
        for issue in errors:
            assert re.fullmatch(KNOWN_BAD[path.name], re.sub(r"\[\d+\]", "", issue.expression or "")), issue
    else:
        assert errors == []


@pytest.mark.parametrize("path", _bundles(), ids=lambda p: p.name[:24])
def test_synthea_bundle(validator: Validator, path: Path) -> None:
    bundle = orjson.loads(path.read_bytes())
    assert validator.validate(bundle, "Bundle") == []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert validator.validate(resource, resource["resourceType"]) == [], resource["id"]
