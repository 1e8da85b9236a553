"""The official FHIRPath R4 test suite (fhir-test-cases r4/fhirpath) run against samverka.fhir.fhirpath."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fhirpathpy.engine.nodes import FP_DateTime, FP_Quantity, FP_Time

from samverka.fhir.fhirpath import FHIRPathError, evaluate
from samverka.fhir.xml import parse_xml

HERE = Path(__file__).resolve().parent
SUITE = HERE.parents[1].parent / "shared" / "conformance" / "fhirpath"
KNOWN_FAILURES_FILE = HERE / "fhirpath_known_failures.txt"
REQUIRED_RATE = 0.95


@dataclass(frozen=True)
class Case:
    """One <test> of the suite."""

    id: str
    name: str
    expression: str
    inputfile: str | None
    invalid: str | None
    predicate: bool
    outputs: tuple[tuple[str | None, str], ...]


def _cases() -> list[Case]:
    root = ET.parse(SUITE / "tests-fhir-r4.xml").getroot()
    cases: list[Case] = []
    seen: set[str] = set()
    for group in root.iter("group"):
        for index, test in enumerate(group.iter("test")):
            name = test.get("name") or f"unnamed{index}"
            case_id = f"{group.get('name')}/{name}"
            while case_id in seen:
                case_id += "+"
            seen.add(case_id)
            expr = test.find("expression")
            assert expr is not None and expr.text is not None
            outputs = tuple((o.get("type"), o.text or "") for o in test.findall("output"))
            cases.append(
                Case(
                    id=case_id,
                    name=name,
                    expression=expr.text,
                    inputfile=test.get("inputfile"),
                    invalid=expr.get("invalid"),
                    predicate=test.get("predicate") == "true",
                    outputs=outputs,
                )
            )
    return cases


CASES = _cases()


def _known_failures() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in KNOWN_FAILURES_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition(" | ")
            out[name.strip()] = reason.strip()
    return out


KNOWN_FAILURES = _known_failures()


@cache
def _load_input(name: str) -> bytes:
    return (SUITE / "input" / name).read_bytes()


def _resource(name: str | None) -> dict[str, Any]:
    if name is None:
        return {}
    raw = _load_input(name)
    # A fresh copy per test: fhirpathpy may annotate what it walks.
    return parse_xml(raw) if name.endswith(".xml") else json.loads(raw)


def _render(value: Any) -> tuple[str, str]:
    """A result as (type, text) in the suite's notation."""
    if isinstance(value, bool):
        return "boolean", "true" if value else "false"
    if isinstance(value, int):
        return "integer", str(value)
    if isinstance(value, Decimal | float):
        return "decimal", str(value)
    if isinstance(value, FP_Quantity):
        return "Quantity", f"{value.value} {value.unit}"
    if isinstance(value, FP_Time):
        return "time", "@T" + (value.asStr or str(value)).removeprefix("T")
    if isinstance(value, FP_DateTime):
        text = value.asStr or str(value)
        return ("date" if re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", text) else "dateTime"), "@" + text
    if isinstance(value, str):
        return "string", value
    return type(value).__name__, json.dumps(value, default=str)


def _instant(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.lstrip("@"))
    except ValueError:
        return None


def _same(got: tuple[str, str], expected: tuple[str | None, str]) -> bool:
    got_type, got_text = got
    want_type, want_text = expected
    if got_text == want_text and want_type in (None, got_type):
        return True
    if want_type in (None, "dateTime") and got_type in ("string", "dateTime") and "T" in want_text:
        # Date arithmetic may come back normalised to UTC: compare the instants and the precision.
        a, b = _instant(got_text), _instant(want_text)
        return a is not None and a == b and len(got_text.lstrip("@")) == len(want_text.lstrip("@"))
    if got_type == "string" and want_type in ("code", "id", "uri", "date", "dateTime", "time"):
        # Values read from JSON carry no FHIR type; their text must still match exactly.
        return got_text == want_text.lstrip("@").removeprefix("T" if want_type == "time" else "")
    if got_type == "Quantity" and want_type in (None, "Quantity"):
        number, _, unit = want_text.partition(" ")
        return got_text == f"{number} {unit}" or got_text == f"{Decimal(number)} {unit}"
    if got_type == "decimal" and want_type in (None, "decimal"):
        return want_type == "decimal" and Decimal(got_text) == Decimal(want_text)
    return False


def outcome(case: Case) -> tuple[bool, str]:
    """Run one case; (passed, explanation)."""
    try:
        result = evaluate(_resource(case.inputfile), case.expression)
    except FHIRPathError as exc:
        if case.invalid:
            return True, f"raised as expected: {exc}"
        return False, f"unexpected error: {exc}"
    if case.invalid:
        return False, f"expected a {case.invalid} error, got {result!r}"
    if case.predicate:
        result = [bool(result)]
    got = [_render(v) for v in result]
    if len(got) == len(case.outputs) and all(_same(g, e) for g, e in zip(got, case.outputs, strict=True)):
        return True, "ok"
    return False, f"got {got}, expected {list(case.outputs)}"


def _param(case: Case) -> Any:
    marks = []
    if case.name in KNOWN_FAILURES:
        marks.append(pytest.mark.xfail(reason=KNOWN_FAILURES[case.name], strict=True))
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_fhirpath_suite_case(case: Case) -> None:
    """Each official case gives the expected output, or fails when the suite says it is invalid."""
    passed, why = outcome(case)
    assert passed, f"{case.expression!r}: {why}"


def test_known_failures_name_real_cases() -> None:
    """Every name in the known-failures list is a test of the suite."""
    names = {c.name for c in CASES}
    assert sorted(set(KNOWN_FAILURES) - names) == []


def test_pass_rate_at_least_95_percent() -> None:
    """At least 95% of the 935 official cases pass."""
    passed = sum(outcome(c)[0] for c in CASES)
    rate = passed / len(CASES)
    message = f"FHIRPath conformance: {passed}/{len(CASES)} passed ({rate:.1%})"
    print(message)
    assert len(CASES) == 935
    assert rate >= REQUIRED_RATE, message
