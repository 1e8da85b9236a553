"""`samverka drill replace-module`: replace a running module with another vendor's, under load, with a
`kill -9` of the old module and of the platform along the way (issue 5's replacement drill).

1. Start the platform (`samverka serve --auth on` on a SQLite data folder or PostgreSQL), register
   `booking_a` and `lab` (`POST /admin/modules`, the admin API of `samverka module register`; keys
   generated now) and start them (`python -m examples.<name>`).
2. A clinic writes referrals, lab requests and desk bookings continuously (`load.Clinic`).
3. When booking_a has booked a few referrals, `kill -9` it; events for it pile up.
4. Register `booking_b` (standby), start it, and run `samverka module replace booking_a booking_b`.
5. While booking_b catches up, `kill -9` the platform and start it again on the same port.
Then wait until every subscription is drained and check (`checks`): booking_b knows every booking
booking_a made; booking_b's events are numbered 1..N without a gap and cover everything after the
handover point, with duplicates only where booking_a handled an event it had not acknowledged; every
referral is booked exactly once and every lab request reported; booking_a's token is refused; the audit
log has the `module-replace` record.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from joserfc.jwk import ECKey

from ..sdk import AuthError, BackendAuth, FhirClient
from . import checks
from .checks import APPOINTMENT, BOOKING_A_ID, REFERRAL, Report
from .load import SCOPE, Clinic
from .processes import DrillError, Platform, Process, free_port, module_process

MODULE_SCOPE = {"booking_a": "system/ServiceRequest.rs system/Appointment.cruds system/Patient.rs",
                "booking_b": "system/ServiceRequest.rs system/Appointment.cruds system/Patient.rs",
                "lab": "system/ServiceRequest.rus system/Observation.crs system/DiagnosticReport.crs system/Patient.rs"}


@dataclass
class Options:
    work: Path | None = None  # kept after the drill when given; else a temporary folder, removed on a pass
    database: str | None = None  # postgresql://... instead of a SQLite data folder
    examples: Path | None = None  # the folder that holds `examples/`
    kill_after: int = 6  # referrals booking_a books before it is killed
    backlog: float = 1.5  # seconds of writes while booking_a is down, before the replacement
    after_restart: int = 12  # items the clinic writes after the platform restart
    interval: float = 0.08  # seconds between the clinic's writes
    timeout: float = 60.0  # for every wait


def find_examples(hint: Path | None = None) -> Path:
    """The folder holding `examples/booking_a/manifest.yaml`: `hint`, the working directory or the checkout."""
    here = Path(__file__).resolve()
    for root in [hint, Path.cwd(), *here.parents]:
        if root is not None and (root / "examples" / "booking_a" / "manifest.yaml").exists():
            return root
    raise DrillError("examples/ not found: run from the repository checkout or pass --examples")


def wait(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DrillError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Drill:
    def __init__(self, options: Options) -> None:
        self.o = options
        self.root = find_examples(options.examples)
        self.work = options.work or Path(tempfile.mkdtemp(prefix="samverka-drill-"))
        self.work.mkdir(parents=True, exist_ok=True)
        store = ["--database", options.database] if options.database else ["--data-dir", str(self.work / "data")]
        self.platform = Platform(store, self.work / "platform.log")
        self.report = Report("postgresql" if options.database else "sqlite", work_dir=str(self.work))
        self.modules: dict[str, Process] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, Path] = {}
        self.admin_token = ""
        self.clinic_id = ""
        self.t0 = time.monotonic()

    def mark(self, step: str) -> None:
        self.report.timeline.append((step, round(time.monotonic() - self.t0, 1)))

    # --- steps -------------------------------------------------------------------------------------
    def key(self, name: str) -> Path:
        """A new ES384 key for `name` (private JWK file, mode 0600), generated for this drill only."""
        path = self.work / "keys" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        key = ECKey.generate_key("P-384", parameters={"alg": "ES384", "use": "sig"}, auto_kid=True)
        path.write_text(json.dumps(key.as_dict(private=True)))
        path.chmod(0o600)
        self.keys[name] = path
        return path

    def public(self, name: str) -> dict[str, Any]:
        jwk = json.loads(self.keys[name].read_text())
        return {"keys": [{k: v for k, v in jwk.items() if k != "d"}]}

    def admin(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A call to the platform's admin API (`/admin/modules`, `/auth/register`) with the admin token."""
        r = httpx.request(method, f"{self.platform.origin}{path}", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {self.admin_token}"})
        if r.status_code >= 300:
            raise DrillError(f"{method} {path} answered {r.status_code}: {r.text[:2000]}")
        return dict(r.json())

    def register(self, name: str) -> tuple[dict[str, Any], int]:
        """Register the example module (`POST /admin/modules`, as `samverka module register` does) with its
        manifest on a free port and a key generated now."""
        port = free_port()
        self.key(name)
        doc = yaml.safe_load((self.root / "examples" / name / "manifest.yaml").read_text())
        doc["endpoint"] = f"http://127.0.0.1:{port}/notify"
        doc.pop("jwks_uri", None)
        doc["jwks"] = self.public(name)
        path = self.work / f"{name}.manifest.json"
        path.write_text(json.dumps(doc, indent=2))
        view = self.admin("POST", "/admin/modules", doc)
        self.views[name] = view
        return view, port

    def spawn_module(self, name: str, view: dict[str, Any], port: int) -> Process:
        data = self.work / name
        data.mkdir(exist_ok=True)
        p = module_process(name, self.root, self.platform, self.keys[name], view["clientId"], port, data,
                           self.work / f"{name}.log")
        self.modules[name] = p.spawn()
        return p

    def view(self, module_id: str) -> dict[str, Any]:
        r = httpx.get(f"{self.platform.origin}/admin/modules/{module_id}", timeout=20,
                      headers={"Authorization": f"Bearer {self.admin_token}"})
        r.raise_for_status()
        return dict(r.json())

    def auth(self, name: str, client_id: str, scope: str) -> BackendAuth:
        return BackendAuth(client_id, json.loads(self.keys[name].read_text()), scope,
                           token_url=f"{self.platform.origin}/auth/token")

    def a_state(self) -> checks.Seen:
        return checks.booking_a_state(self.work / "booking_a" / "booking_a.json")

    def b_state(self) -> checks.Seen:
        return checks.booking_b_state(self.work / "booking_b" / "booking_b.sqlite")

    # --- the drill ---------------------------------------------------------------------------------
    def run(self) -> Report:
        o = self.o
        self.platform.start(o.timeout)
        self.mark("platform up")
        self.admin_token = self.platform.command("admin", "token").strip()
        self.key("clinic")
        self.clinic_id = str(self.admin("POST", "/auth/register", {
            "client_name": "drill clinic", "scope": SCOPE, "token_endpoint_auth_method": "private_key_jwt",
            "jwks": self.public("clinic")})["client_id"])
        a_view, a_port = self.register("booking_a")
        lab_view, lab_port = self.register("lab")
        for p in (self.spawn_module("booking_a", a_view, a_port), self.spawn_module("lab", lab_view, lab_port)):
            p.ready(o.timeout)
        self.mark("booking_a, lab up")
        clinic = Clinic(self.platform.base, self.auth("clinic", self.clinic_id, SCOPE), o.interval)
        clinic.setup()
        clinic.start()
        try:
            # 3. booking_a books a few referrals, then dies in the middle of the stream
            # watched closely, so that the kill can land between booking_a's handling of an event and the
            # platform's record of its acknowledgement (at-least-once then hands that event to booking_b too;
            # in practice the window is a few milliseconds and the overlap is usually 0)
            wait(lambda: len(self.a_state().booked) >= o.kill_after or clinic.error, o.timeout,
                 f"booking_a to book {o.kill_after} referrals", every=0.002)
            a_auth = self.auth("booking_a", a_view["clientId"], MODULE_SCOPE["booking_a"])
            with httpx.Client(timeout=20) as http:
                a_token = a_auth.get(http)
            self.modules["booking_a"].kill9()
            self.mark("booking_a killed")
            self.report.a_killed_after = len(self.a_state().booked)
            killed = time.monotonic()
            # 4. the other vendor's module takes the role over (after a backlog has piled up for booking_a)
            b_view, b_port = self.register("booking_b")
            if b_view["state"] != "standby":
                raise DrillError(f"booking_b registered as {b_view['state']}, not standby")
            self.spawn_module("booking_b", b_view, b_port).ready(o.timeout)
            time.sleep(max(0.0, o.backlog - (time.monotonic() - killed)))
            self.platform.command("module", "replace", "booking_a", "booking_b", "--json")
            self.mark("replaced")
            # 5. the platform dies while booking_b catches up, and comes back on the same port
            wait(lambda: self.b_state().events or clinic.error, o.timeout, "booking_b's first event")
            down = time.monotonic()
            self.platform.kill9()
            self.mark("platform killed")
            self.platform.start(o.timeout)
            self.mark("platform up again")
            self.report.platform_down_seconds = time.monotonic() - down
            self.report.platform_restarts = self.platform.starts - 1
            target = clinic.items + o.after_restart
            wait(lambda: clinic.items >= target or clinic.error, o.timeout, "the clinic's writes after the restart")
        finally:
            clinic.stop()
        if clinic.error is not None:
            raise DrillError(f"the clinic's writes failed: {clinic.error}")
        self.mark("writes done")
        self.drain()
        self.mark("drained")
        self.evaluate(clinic, a_token, a_auth)
        self.report.seconds = time.monotonic() - self.t0
        self.report.evaluate()
        return self.report

    def drain(self) -> None:
        """Wait until booking_b and lab have every event the platform numbered for them (twice in a row)."""
        last: list[Any] = []

        def drained() -> bool:
            views = [self.view("booking_b"), self.view("lab")]
            counts = [(s["id"], s["eventsSinceSubscriptionStart"], s["acknowledgedEvent"])
                      for v in views for s in v["subscriptions"]]
            b = self.b_state()
            done = all(n is not None and n == ack for _i, n, ack in counts) and all(
                max(b.numbers(i) or [0]) >= (n or 0) for i, n, _a in counts[:2])
            health = httpx.get(self.modules["booking_b"].health_url, timeout=10).json()
            done = done and int(health.get("imports_after_handshake", 0)) >= 1
            steady = bool(last) and counts == last[-1]
            last.append(counts)
            return done and steady

        wait(drained, self.o.timeout, "booking_b and lab to receive every event", every=0.5)

    def evaluate(self, clinic: Clinic, a_token: str, a_auth: BackendAuth) -> None:
        r = self.report
        r.referrals, r.lab_requests, r.desk_bookings = len(clinic.referrals), len(clinic.lab), len(clinic.desk)
        r.write_retries = clinic.retries
        a, b = self.a_state(), self.b_state()
        a_view, b_view, lab_view = self.view("booking_a"), self.view("booking_b"), self.view("lab")
        r.a_events = len(a.events)
        r.a_sent = sum(int(x.get("eventsSinceSubscriptionStart") or 0) for x in a_view["subscriptions"])
        r.a_acknowledged = sum(int(x.get("acknowledgedEvent") or 0) for x in a_view["subscriptions"])
        with FhirClient(self.platform.base, self.auth("clinic", self.clinic_id, SCOPE)) as fhir:
            appointments = list(fhir.search_all("Appointment", {"status": "booked", "_count": "500"}))
            reports = list(fhir.search_all("DiagnosticReport", {"_count": "500"}))
            audit = list(fhir.search_all("AuditEvent", {"subtype": "module-replace"}))
        booked = {f"Appointment/{x['id']}" for x in appointments}
        r.topics = [checks.topic_result(REFERRAL, {f"ServiceRequest/{i}" for i in clinic.referrals}, a, b, a_view,
                                        b_view),
                    checks.topic_result(APPOINTMENT, booked, a, b, a_view, b_view)]
        health = httpx.get(self.modules["booking_b"].health_url, timeout=10).json()
        r.b_redelivered, r.b_filled = int(health["duplicates"]), int(health["filled"])
        per_referral: dict[str, int] = {}
        for x in appointments:
            for based in x.get("basedOn", []):
                key = str(based.get("reference", "")).removeprefix("ServiceRequest/")
                per_referral[key] = per_referral.get(key, 0) + 1
        r.unbooked = sum(1 for i in clinic.referrals if per_referral.get(i, 0) == 0)
        r.double_booked = sum(1 for i in clinic.referrals if per_referral.get(i, 0) > 1)
        r.booked_by_a, r.booked_by_b = len(a.booked), len(b.booked)
        a_made = {x["id"] for x in appointments
                  if any(i.get("system") == BOOKING_A_ID for i in x.get("identifier", []))} | set(a.booked.values())
        r.a_bookings = len(a_made)
        r.a_bookings_unknown_to_b = len(a_made - b.appointments)
        [lab_sub] = lab_view["subscriptions"]
        lab_seen = json.loads((self.work / "lab" / "lab.events.json").read_text()).get(lab_sub["id"], 0)
        r.lab_sent, r.lab_received = int(lab_sub["eventsSinceSubscriptionStart"] or 0), int(lab_seen)
        r.lab_gaps = max(0, r.lab_sent - r.lab_received)
        reported = {str(b_.get("reference", "")).removeprefix("ServiceRequest/")
                    for x in reports for b_ in x.get("basedOn", [])}
        r.lab_unreported = len(set(clinic.lab) - reported)
        r.a_token_status = httpx.get(f"{self.platform.base}/Appointment", params={"_count": "1"}, timeout=20,
                                     headers={"Authorization": f"Bearer {a_token}"}).status_code
        try:
            with httpx.Client(timeout=20) as http:
                a_auth.get(http, force=True)
        except AuthError:
            r.a_new_token_refused = True
        names = [{e.get("name") for e in ev.get("entity", [])} for ev in audit]
        r.audit_handover = any({"booking_a", "booking_b"} <= n for n in names)

    def close(self) -> None:
        for p in self.modules.values():
            p.kill9()
        self.platform.kill9()


def run(options: Options) -> Report:
    """Run the drill; the report (failed checks listed) — DrillError when a step itself could not be done."""
    drill = Drill(options)
    try:
        report = drill.run()
    finally:
        drill.close()
    if options.work is None and report.passed:
        shutil.rmtree(drill.work, ignore_errors=True)
        report.work_dir = ""
    return report
