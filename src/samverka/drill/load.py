"""The drill's clinic: patients, referrals, lab requests and desk bookings written while events flow.

Every write is a conditional create on its own identifier (`If-None-Exist`), retried until the platform
answers: a write whose answer was lost in a `kill -9` of the platform is found again, not made twice.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from ..sdk import BackendAuth, FhirClient, FhirClientError

DRILL = "urn:samverka:drill"
SNOMED = "http://snomed.info/sct"
REFERRAL_CATEGORY = {"system": SNOMED, "code": "3457005", "display": "Patient referral"}
LAB_CATEGORY = {"system": SNOMED, "code": "108252007", "display": "Laboratory procedure"}
SCOPE = ("system/Patient.cruds system/ServiceRequest.cruds system/Appointment.cruds system/DiagnosticReport.rs "
         "system/Observation.rs system/AuditEvent.rs system/Subscription.rs")
RETRY_FOR = 90.0  # seconds a write is retried (a platform restart takes a few)


class Clinic:
    """Writes in a thread: of every four items two referrals, one lab request and one desk booking."""

    def __init__(self, base: str, auth: BackendAuth, interval: float = 0.1) -> None:
        self.fhir = FhirClient(base, auth, timeout=20.0)
        self.interval = interval
        self.patients: list[str] = []
        self.referrals: list[str] = []
        self.lab: list[str] = []
        self.desk: list[str] = []
        self.retries = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-clinic", daemon=True)
        self._n = 0

    @property
    def items(self) -> int:
        return len(self.referrals) + len(self.lab) + len(self.desk)

    def create(self, body: dict[str, Any]) -> str:
        """Conditional create on the body's first identifier, retried through connection errors and 5xx."""
        ident = body["identifier"][0]
        deadline = time.monotonic() + RETRY_FOR
        while True:
            try:
                found: dict[str, Any] = self.fhir.request(
                    "POST", body["resourceType"], json=body,
                    headers={"If-None-Exist": f"identifier={ident['system']}|{ident['value']}",
                             "Prefer": "return=representation"})
                return str(found["id"])
            except (httpx.HTTPError, FhirClientError) as exc:
                if (isinstance(exc, FhirClientError) and 0 < exc.status < 500) or time.monotonic() > deadline:
                    raise
                self.retries += 1
                time.sleep(0.2)

    def setup(self, patients: int = 4) -> None:
        for i in range(patients):
            self.patients.append(self.create({
                "resourceType": "Patient", "identifier": [{"system": f"{DRILL}:patient", "value": str(i)}],
                "name": [{"family": "Övningsdotter", "given": [f"Test{i}"]}], "gender": "female",
                "birthDate": "1980-01-01"}))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=RETRY_FOR + 10)
        self.fhir.close()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.step()
                self._stop.wait(self.interval)
        except BaseException as exc:  # reported by the drill as a failed step
            self.error = exc

    def step(self) -> None:
        n, self._n = self._n, self._n + 1
        patient = {"reference": f"Patient/{self.patients[n % len(self.patients)]}"}
        kind = n % 4
        if kind in (0, 1):
            self.referrals.append(self.create(_request(f"referral-{n}", REFERRAL_CATEGORY, patient, {
                "system": SNOMED, "code": "306206005", "display": "Referral to service"})))
        elif kind == 2:
            self.lab.append(self.create(_request(f"lab-{n}", LAB_CATEGORY, patient, {
                "system": "http://loinc.org", "code": "58410-2", "display": "CBC panel - Blood by Automated count"})))
        else:
            self.desk.append(self.create({
                "resourceType": "Appointment", "status": "booked",
                "identifier": [{"system": f"{DRILL}:desk", "value": str(n)}],
                "description": "Bokad i receptionen", "start": "2030-01-07T08:00:00Z", "end": "2030-01-07T08:15:00Z",
                "participant": [{"actor": patient, "status": "accepted"}]}))


def _request(value: str, category: dict[str, str], patient: dict[str, str], code: dict[str, str]
             ) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"system": f"{DRILL}:request", "value": value}],
            "category": [{"coding": [category]}], "code": {"coding": [code]}, "subject": patient}
