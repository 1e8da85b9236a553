"""The module replacement drill (issue 5), end to end: `samverka drill replace-module` starts the platform
(auth on) and the example modules as real processes, kills booking_a and the platform with kill -9 along
the way, replaces booking_a by booking_b, and checks that nothing is lost. Runs on SQLite and PostgreSQL.

The checks themselves are tested on made-up module states first, so a drill that reports no gaps is a
drill that would have reported one.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from samverka.drill import checks
from samverka.drill.checks import APPOINTMENT, REFERRAL, Seen
from samverka.modules.manifest import parse_text, validate
from support.server import samverka_command

if TYPE_CHECKING:
    from conftest import Store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ("booking_a", "booking_b", "lab")


def _views(a_sub: str, b_sub: str, after: int, sent: int) -> tuple[dict[str, Any], dict[str, Any]]:
    a = {"subscriptions": [{"id": a_sub, "topic": REFERRAL}]}
    b = {"subscriptions": [{"id": b_sub, "topic": REFERRAL, "eventsSinceSubscriptionStart": sent,
                            "handover": {"afterEvent": after}}]}
    return a, b


def _seen(sub: str, numbered: dict[int, str]) -> Seen:
    return Seen([(sub, REFERRAL, n, f"http://x/fhir/ServiceRequest/{f}") for n, f in numbered.items()])


def test_the_checks_count_gaps_misses_and_duplicates_beyond_the_handover_point() -> None:
    universe = {f"ServiceRequest/r{i}" for i in range(1, 8)}
    # booking_a handled r1..r4 (acknowledged up to 3); booking_b got r4..r7 as its events 1..4: clean
    a = _seen("A", {1: "r1", 2: "r2", 3: "r3", 4: "r4"})
    a_view, b_view = _views("A", "B", 3, 4)
    clean = checks.topic_result(REFERRAL, universe, a, _seen("B", {1: "r4", 2: "r5", 3: "r6", 4: "r7"}), a_view,
                                b_view)
    assert (clean.gaps, clean.missed, clean.overlap, clean.beyond, clean.unrecorded) == (0, 0, 1, 0, 0)
    # event 3 never handled by booking_b: a gap in its numbering and a referral nobody got
    holed = checks.topic_result(REFERRAL, universe, a, _seen("B", {1: "r4", 2: "r5", 4: "r7"}), a_view, b_view)
    assert (holed.gaps, holed.missed) == (1, 1)
    # booking_b got r2, which booking_a had acknowledged: more than at-least-once allows
    again = checks.topic_result(REFERRAL, universe, a, _seen("B", {1: "r2", 2: "r4", 3: "r5", 4: "r6", 5: "r7"}),
                                a_view, _views("A", "B", 3, 5)[1])
    assert (again.beyond, again.gaps, again.missed) == (1, 0, 0)
    # booking_a acknowledged event 2 without a record of it: lost on booking_a's side
    lossy = checks.topic_result(REFERRAL, universe, _seen("A", {1: "r1", 3: "r3"}),
                                _seen("B", {1: "r4", 2: "r5", 3: "r6", 4: "r7"}), a_view, b_view)
    assert lossy.unrecorded == 1 and lossy.missed == 1
    report = checks.Report("sqlite", topics=[holed], platform_restarts=1, a_token_status=401,
                           a_new_token_refused=True, audit_handover=True, a_killed_after=3)
    report.evaluate()
    assert not report.passed and report.failures == ["referral: gaps = 1", "referral: missed = 1"]
    assert "FAIL" in report.text()


def test_the_example_manifests_are_valid_and_keygen_writes_a_private_key(tmp_path: Path) -> None:
    for name in EXAMPLES:
        m = validate(parse_text((ROOT / "examples" / name / "manifest.yaml").read_bytes()))
        assert m.id == name and m.subscriptions
        assert (ROOT / "examples" / name / "README.md").exists()
    assert {validate(parse_text((ROOT / "examples" / n / "manifest.yaml").read_bytes())).role
            for n in ("booking_a", "booking_b")} == {"booking"}
    key = tmp_path / "key.json"
    r = subprocess.run([sys.executable, "-m", "examples.booking_b", "keygen", str(key)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    public = json.loads(r.stdout)["keys"][0]
    private = json.loads(key.read_text())
    assert "d" in private and "d" not in public and public["x"] == private["x"] and public["alg"] == "ES384"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


@pytest.mark.slow
def test_replace_module_drill(store: Store, tmp_path: Path) -> None:
    work = tmp_path / "drill"
    cmd = [*samverka_command(), "drill", "replace-module", "--work-dir", str(work), "--json", "--timeout", "90"]
    if store.database:
        cmd += ["--database", store.database]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400, check=False, cwd=ROOT)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}"
    report = json.loads(r.stdout)
    assert report["passed"] and report["failures"] == [] and report["backend"] == store.backend
    topics = {t["topic"]: t for t in report["topics"]}
    assert set(topics) == {REFERRAL.rsplit("/", 1)[1], APPOINTMENT.rsplit("/", 1)[1]}
    for t in topics.values():
        assert t["sent"] > 0 and t["received"] == t["sent"]
        assert t["gaps"] == t["missed"] == t["beyond"] == t["unrecorded"] == 0
    # booking_a worked before it died, booking_b after; every referral booked once; the lab answered all
    assert report["a_killed_after"] >= 6 and report["booked_by_b"] > 0
    # booking_a fell behind while it was down: the events it never acknowledged are booking_b's first ones
    assert report["a_sent"] > report["a_acknowledged"] == sum(t["after_event"] for t in topics.values())
    assert report["referrals"] > 0
    assert report["unbooked"] == report["double_booked"] == 0
    assert report["a_bookings"] >= report["a_killed_after"] and report["a_bookings_unknown_to_b"] == 0
    assert report["lab_sent"] == report["lab_received"] == report["lab_requests"] > 0
    assert report["lab_unreported"] == 0
    assert report["platform_restarts"] == 1 and report["a_token_status"] == 401 and report["a_new_token_refused"]
    assert report["audit_handover"]
