"""Manifest validation: every problem is reported with the key at fault (samverka.modules.manifest)."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from modkit import APPOINTMENTS, manifest, private_jwk

from samverka.modules.manifest import ManifestError, load, validate
from support.server import samverka_command


def problems(doc: Any) -> dict[str, str]:
    with pytest.raises(ManifestError) as info:
        validate(doc)
    return dict(info.value.problems)


def test_a_valid_manifest_loads_from_yaml_and_json() -> None:
    doc = manifest("booking-a")
    from_yaml = load(yaml.safe_dump(doc, sort_keys=False))
    from_json = load(json.dumps(doc))
    assert from_yaml == from_json
    assert from_yaml.scopes == ("system/Appointment.cruds", "system/Patient.rs")
    assert from_yaml.subscriptions[0].topic == APPOINTMENTS
    assert from_yaml.subscriptions[0].filter == "Appointment?status=booked"
    assert from_yaml.client_metadata()["scope"] == "system/Appointment.cruds system/Patient.rs"


@pytest.mark.parametrize(("change", "key", "words"), [
    (lambda d: d["subscriptions"].append({"topic": APPOINTMENTS, "payload": "everything"}),
     "subscriptions[1].payload", "empty, id-only, full-resource"),
    (lambda d: d["subscriptions"][0].pop("topic"), "subscriptions[0].topic", "required"),
    (lambda d: d["subscriptions"][0].update(topic="appointments"), "subscriptions[0].topic", "absolute"),
    (lambda d: d["subscriptions"][0].update(filter="Appointment?status"), "subscriptions[0].filter",
     "name=value"),
    (lambda d: d["subscriptions"][0].update(filter="appointment?status=booked"), "subscriptions[0].filter",
     "resource type"),
    (lambda d: d["subscriptions"][0].update(channel="websocket"), "subscriptions[0].channel", "unknown key"),
    (lambda d: d["scopes"].append("system/Observation.xyz"), "scopes[2]", "permissions"),
    (lambda d: d["scopes"].append("patient/Observation.rs"), "scopes[2]", "system/ scopes only"),
    (lambda d: d["scopes"].append("admin"), "scopes[2]", "admin scope"),
    (lambda d: d["scopes"].append("system/Observation.rs?category=laboratory"), "scopes[2]", "query-narrowed"),
    (lambda d: d.update(scopes=[]), "scopes", "non-empty"),
    (lambda d: d.update(version=1.0), "version", "quote it"),
    (lambda d: d.update(role="Booking Role"), "role", "lower-case"),
    (lambda d: d.update(id="Booking A"), "id", "lower-case"),
    (lambda d: d.pop("vendor"), "vendor", "required"),
    (lambda d: d.update(profiles=["booking"]), "profiles[0]", "absolute"),
    (lambda d: d.update(endpoint="http://modules.example.se/notify"), "endpoint", "https"),
    (lambda d: d.pop("endpoint"), "endpoint", "required when there are subscriptions"),
    (lambda d: d.update(jwks_uri="http://127.0.0.1:1/jwks"), "jwks", "exactly one"),
    (lambda d: d.update(jwks={"keys": [private_jwk("ES384")]}), "jwks", "public keys only"),
    (lambda d: (d.pop("jwks"), d.update(jwks_uri="https://keys.example.se/jwks")), "jwks_uri", "loopback"),
    (lambda d: d.update(colour="blue"), "colour", "unknown key"),
])
def test_each_problem_names_its_key(change: Any, key: str, words: str) -> None:
    doc = copy.deepcopy(manifest("booking-a"))
    change(doc)
    found = problems(doc)
    assert key in found, found
    assert words in found[key], found[key]


def test_all_problems_are_reported_at_once() -> None:
    doc = manifest("booking-a")
    doc["subscriptions"][0]["payload"] = "all"
    doc["scopes"] = ["user/*.rs"]
    del doc["name"]
    assert set(problems(doc)) == {"subscriptions[0].payload", "scopes[0]", "name"}


def test_a_manifest_that_is_not_a_mapping_or_not_yaml() -> None:
    assert "" in problems(["id", "name"])
    with pytest.raises(ManifestError, match="not valid YAML"):
        load("id: [unclosed")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load('{"id": ')


def test_cli_register_rejects_an_invalid_manifest_naming_the_key(tmp_path: Path) -> None:
    doc = manifest("booking-a")
    doc["subscriptions"].append({"topic": APPOINTMENTS, "payload": "everything"})
    path = tmp_path / "booking.yaml"
    path.write_text(yaml.safe_dump(doc))
    r = subprocess.run([*samverka_command(), "module", "register", str(path), "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "subscriptions[1].payload" in r.stderr
    listed = subprocess.run([*samverka_command(), "module", "list", "--data-dir", str(tmp_path / "d")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert listed.returncode == 0 and listed.stdout == "", listed.stdout + listed.stderr
