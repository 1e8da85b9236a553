"""AuditEvents for module administration (https://hl7.org/fhir/R4/auditevent.html), appended to the
audit chain (`audit.chain`) in the same transaction as the registry change they record.

type is DICOM 110113 Security Alert (a change of the security configuration); subtype is the
Samverka module action (`module-register`, `module-disable`, `module-enable`, `module-replace`), so
`GET /fhir/AuditEvent?subtype=module-replace` finds every handover. The administrator is the
requesting agent, the module's client the other; entities are the Subscriptions concerned, with the
handover point as an entity detail.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..audit.model import APP_TYPE, CLIENT_ID, SYSTEM_HSA_ID, Entity, Who, event

ACTION_SYSTEM = "https://samverka.se/fhir/CodeSystem/module-action"
MODULE_ID = "https://samverka.se/fhir/NamingSystem/module-id"
SECURITY_ALERT = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110113",
                  "display": "Security Alert"}
_ACTIONS = {"register": "C", "disable": "U", "enable": "U", "replace": "U"}


def module_event(who: Who, action: str, module_id: str, client_id: str, subscriptions: Sequence[str],
                 description: str, details: dict[str, dict[str, Any]] | None = None,
                 other_client: str | None = None, other_module: str | None = None) -> dict[str, Any]:
    """One AuditEvent for `samverka module <action>`; `details` maps a Subscription id to its handover point."""
    ev = event(who, "operation", "0", [], [Entity("Subscription", s) for s in subscriptions], SYSTEM_HSA_ID,
               description=description)
    ev.pop("meta", None)  # not a BALP RESTful event
    ev["type"] = SECURITY_ALERT
    ev["subtype"] = [{"system": ACTION_SYSTEM, "code": f"module-{action}", "display": f"module {action}"}]
    ev["action"] = _ACTIONS[action]
    agents = [a for a in ev["agent"] if a.get("who", {}).get("display") != "unauthenticated client"]
    for cid in (client_id, other_client):
        if cid:
            agents.append({"type": {"coding": [APP_TYPE]}, "requestor": False,
                           "who": {"identifier": {"system": CLIENT_ID, "value": cid}}})
    if not any(a.get("requestor") for a in agents):
        agents[0]["requestor"] = True
    ev["agent"] = agents
    entities = ev.setdefault("entity", [])
    for e in entities:
        sub = str(e["what"]["reference"]).removeprefix("Subscription/")
        if details and sub in details:
            e["detail"] = [{"type": "handover", "valueString": json.dumps(details[sub], sort_keys=True)}]
    for mid in (module_id, other_module):
        if mid:
            entities.append({"what": {"identifier": {"system": MODULE_ID, "value": mid}},
                             "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                                      "code": "2"},
                             "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4"},
                             "name": mid})
    return ev


def administrator(address: str | None = None, via: str = "samverka CLI") -> Who:
    """The local administrator (the holder of an admin token, or the CLI on the server's store)."""
    return Who(user_name=f"local administrator ({via})", address=address)
