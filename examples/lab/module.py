"""Lab module: for every new laboratory ServiceRequest (the `referral` topic, filtered on the category
laboratory procedure) it posts the results — two Observations (haemoglobin, CRP) and a DiagnosticReport
that lists them, all `basedOn` the request — and completes the request.

Every write is a conditional create on an identifier derived from the request, so an event handled
twice (at-least-once delivery) posts nothing twice. Event numbers are kept with the SDK's `FileState`
and the reports in `lab.json`, both in the data folder.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from samverka.sdk import FileState, Notification, NotificationReceiver

from .._module import Context, Startup, run

NAME = "lab"
SCOPE = ("system/ServiceRequest.rus system/Observation.crs system/DiagnosticReport.crs system/Patient.rs")
REFERRAL = "https://samverka.se/fhir/SubscriptionTopic/referral"
RESULT_ID = "https://lab.example.se/result"
LAB = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}
TESTS = (("718-7", "Hemoglobin [Mass/volume] in Blood", 138, "g/L"),
         ("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", 4, "mg/L"))


def observation(request: dict[str, Any], code: str, display: str, value: float, unit: str, at: str
                ) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "status": "final",
        "identifier": [{"system": RESULT_ID, "value": f"{request['id']}-{code}"}],
        "basedOn": [{"reference": f"ServiceRequest/{request['id']}"}],
        "category": [{"coding": [LAB]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
        "subject": request["subject"], "effectiveDateTime": at, "issued": at,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }


def report(request: dict[str, Any], results: list[str], at: str) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport", "status": "final",
        "identifier": [{"system": RESULT_ID, "value": request["id"]}],
        "basedOn": [{"reference": f"ServiceRequest/{request['id']}"}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
        "code": request.get("code") or {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]},
        "subject": request["subject"], "effectiveDateTime": at, "issued": at,
        "result": [{"reference": f"Observation/{r}"} for r in results],
    }


def build(ctx: Context) -> tuple[NotificationReceiver, Startup | None]:
    path = ctx.options.data / f"{NAME}.json"
    reports: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    async def create(body: dict[str, Any]) -> dict[str, Any]:
        ident = body["identifier"][0]
        found: dict[str, Any] = await ctx.fhir.request(
            "POST", body["resourceType"], json=body,
            headers={"If-None-Exist": f"identifier={ident['system']}|{ident['value']}",
                     "Prefer": "return=representation"})
        return found

    async def on_event(e: Notification) -> None:
        if e.focus is None:
            return
        request = e.resource or await ctx.fhir.read("ServiceRequest", e.focus.rsplit("/", 1)[1])
        if request.get("status") != "active":
            return
        at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        results = [(await create(observation(request, *t, at)))["id"] for t in TESTS]
        dr = await create(report(request, results, at))
        done = await ctx.fhir.read("ServiceRequest", request["id"])
        if done.get("status") == "active":
            await ctx.fhir.request("PUT", f"ServiceRequest/{request['id']}", json={**done, "status": "completed"})
        reports[request["id"]] = {"report": dr["id"], "observations": results, "event": e.number}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(reports))
        os.replace(tmp, path)

    state = FileState(ctx.options.data / f"{NAME}.events.json")
    return NotificationReceiver(on_event, client=ctx.fhir, topics=[REFERRAL], state=state), None


def main() -> None:
    run(NAME, 8103, SCOPE, build)
