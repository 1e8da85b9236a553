"""AuditEvent records in the IHE BALP shapes, https://profiles.ihe.net/ITI/BALP/ (FHIR R4 AuditEvent,
https://hl7.org/fhir/R4/auditevent.html), carrying the Swedish log content (PDL 4:3, HSLF-FS 2016:40).

`Who` is the requester (user, care unit, care provider, client module, source address, purpose);
`event` builds one AuditEvent; `columns` reads back the searchable values from an AuditEvent, so the
store's columns and `samverka audit verify` agree on what a record says.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from ..fhir.instant import format_instant, now_us, parse_instant

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
HSA = "urn:oid:1.2.752.29.4.19"
CLIENT_ID = "urn:ietf:params:oauth:client-id"
EVENT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
              "display": "Restful Operation"}
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
USER_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type", "code": "humanuser",
             "display": "human user"}
APP_TYPE = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150", "display": "Application"}
UNIT_TYPE = {"system": ROLE_CLASS, "code": "SDLOC", "display": "care unit (vårdenhet)"}
PROVIDER_TYPE = {"system": ROLE_CLASS, "code": "PROV", "display": "care provider (vårdgivare)"}
SYSTEM_HSA_ID = "SE0000000000-samverka"  # default; `Settings.system_hsa_id` overrides it when present

# restful-interaction subtype -> AuditEvent.action (https://hl7.org/fhir/R4/valueset-audit-event-action.html)
ACTIONS = {"read": "R", "vread": "R", "search-type": "R", "search-system": "R", "search": "R",
           "history-instance": "R", "history-type": "R", "history-system": "R", "history": "R",
           "create": "C", "update": "U", "patch": "U", "delete": "D", "operation": "E",
           "transaction": "E", "batch": "E", "export": "R"}
# subtypes that are not restful-interaction codes: a Bulk Data export (kick-off or download)
LOCAL_SUBTYPES = "https://samverka.se/fhir/CodeSystem/audit-subtype"
# action -> the BALP profile name (Patient... when patients are concerned)
PROFILES = {"R": "Read", "C": "Create", "U": "Update", "D": "Delete", "E": "Read"}


@dataclass(frozen=True)
class Who:
    """Who asks, from where, and why: the agents and purpose of every record of one request."""

    client_id: str | None = None
    user_id: str | None = None  # HSA-id
    user_name: str | None = None
    role: str | None = None
    unit_id: str | None = None  # the care unit the user acts for (HSA-id)
    provider_id: str | None = None  # its care provider (HSA-id)
    address: str | None = None
    emergency: bool = False
    emergency_patients: frozenset[str] = field(default_factory=frozenset)

    def purpose(self, patients: Iterable[str]) -> str:
        """ETREAT for an emergency access (nödåtkomst), TREAT otherwise."""
        if self.emergency or any(p in self.emergency_patients for p in patients):
            return "ETREAT"
        return "TREAT"


def _text(value: Any) -> str | None:
    return str(value) if value else None


def _first(obj: Any, *names: str) -> Any:
    claims = getattr(obj, "claims", None)
    for name in names:
        value = getattr(obj, name, None)
        if not value and isinstance(claims, dict):
            value = claims.get(name)
        if value:
            return value
    return None


def who_from_access(access: Any, address: str | None) -> Who:
    """A `Who` from an access context (auth.access.Access; user fields read defensively: absent for modules)."""
    if access is None:
        return Who(address=address)
    if hasattr(access, "user_hsa_id") and hasattr(access, "emergency_patients"):  # auth.access.Access: read directly
        return Who(client_id=access.client_id or None, user_id=access.user_hsa_id or None,
                   user_name=access.user_name or None, role=access.role or None, unit_id=access.care_unit or None,
                   provider_id=access.care_provider or None, address=address,
                   emergency_patients=frozenset(access.emergency_patients))
    emergency = _first(access, "emergency", "emergency_access")
    patients = _first(access, "emergency_patients") or ()
    if isinstance(emergency, (set, frozenset, dict, list, tuple)):  # a set of patients rather than a flag
        patients, emergency = emergency, False
    return Who(
        client_id=_text(_first(access, "client_id")),
        user_id=_text(_first(access, "user_hsa_id", "hsa_id", "user_id", "user")),
        user_name=_text(_first(access, "user_name", "name")),
        role=_text(_first(access, "role", "user_role")),
        unit_id=_text(_first(access, "care_unit", "unit_hsa_id", "unit", "assignment")),
        provider_id=_text(_first(access, "care_provider", "provider_hsa_id", "provider")),
        address=address,
        emergency=bool(emergency),
        emergency_patients=frozenset(str(p) for p in patients),
    )


@dataclass
class Entity:
    """A resource the event touched (`Type/id`, with its version when known)."""

    type: str
    id: str
    version: int | None = None

    @property
    def ref(self) -> str:
        return f"{self.type}/{self.id}"


def _agents(who: Who) -> list[dict[str, Any]]:
    """The agents of every record of `who` (a fresh copy: a record's JSON may be changed before it is stored)."""
    return orjson.loads(_agents_json(who))


@lru_cache(maxsize=4096)
def _agents_json(who: Who) -> bytes:
    return orjson.dumps(_build_agents(who))


def _build_agents(who: Who) -> list[dict[str, Any]]:
    network = {"address": who.address, "type": "2"} if who.address else None
    agents: list[dict[str, Any]] = []
    if who.user_id or who.user_name:
        user: dict[str, Any] = {"type": {"coding": [USER_TYPE]}, "requestor": True}
        who_ref: dict[str, Any] = {}
        if who.user_id:
            who_ref["identifier"] = {"system": HSA, "value": who.user_id}
        if who.user_name:
            who_ref["display"] = who.user_name
        user["who"] = who_ref
        if who.role:
            user["role"] = [{"text": who.role}]
        if network:
            user["network"] = network
        agents.append(user)
    app: dict[str, Any] = {"type": {"coding": [APP_TYPE]}, "requestor": not agents}
    app["who"] = ({"identifier": {"system": CLIENT_ID, "value": who.client_id}} if who.client_id
                  else {"display": "unauthenticated client"})
    if network and not agents:
        app["network"] = network
    agents.append(app)
    for value, type_ in ((who.unit_id, UNIT_TYPE), (who.provider_id, PROVIDER_TYPE)):
        if value:
            agents.append({"type": {"coding": [type_]}, "requestor": False,
                           "who": {"identifier": {"system": HSA, "value": value}}})
    return agents


def event(who: Who, subtype: str, outcome: str, patients: Sequence[str], entities: Sequence[Entity],
          system_hsa_id: str = SYSTEM_HSA_ID, query: str | None = None, description: str | None = None,
          recorded_us: int | None = None) -> dict[str, Any]:
    """One AuditEvent (BALP PatientRead, PatientQuery, PatientCreate, ... or their non-patient forms)."""
    action = ACTIONS.get(subtype, "E")
    name = PROFILES[action]
    if subtype.startswith(("search", "history", "export")) and action == "R":
        name = "Query"
    profile = BALP + ("Patient" + name if patients else name)
    us = (recorded_us if recorded_us is not None else now_us()) // 1000 * 1000
    ev: dict[str, Any] = {
        "resourceType": "AuditEvent", "id": str(uuid.uuid4()), "meta": {"profile": [profile]},
        "type": EVENT_TYPE,
        "subtype": [{"system": LOCAL_SUBTYPES if subtype == "export" else INTERACTION, "code": subtype}],
        "action": action, "recorded": format_instant(us), "outcome": outcome,
    }
    if description:
        ev["outcomeDesc"] = description[:1000]
    ev["purposeOfEvent"] = [{"coding": [{"system": ACT_REASON, "code": who.purpose(patients)}]}]
    ev["agent"] = _agents(who)
    ev["source"] = {"observer": {"identifier": {"system": HSA, "value": system_hsa_id}, "display": "Samverka"},
                    "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                              "display": "Application Server"}]}
    out: list[dict[str, Any]] = [
        {"what": {"reference": f"Patient/{p}"}, "type": {"system": ENTITY_TYPE, "code": "1"},
         "role": {"system": OBJECT_ROLE, "code": "1"}} for p in sorted(set(patients))]
    for e in entities:
        if e.type == "Patient" and e.id in patients and e.version is None:
            continue
        ref = e.ref + (f"/_history/{e.version}" if e.version is not None else "")
        out.append({"what": {"reference": ref}, "type": {"system": ENTITY_TYPE, "code": "2"},
                    "role": {"system": OBJECT_ROLE, "code": "4"}})
    if query is not None:
        import base64

        out.append({"type": {"system": ENTITY_TYPE, "code": "2"}, "role": {"system": OBJECT_ROLE, "code": "24"},
                    "query": base64.b64encode(query.encode()).decode()})
    if out:
        ev["entity"] = out
    return ev


@dataclass(frozen=True)
class Columns:
    """The searchable values of one AuditEvent, as stored beside it."""

    id: str
    recorded: int
    action: str
    outcome: str
    subtype: str
    purpose: str
    user_id: str | None
    unit_id: str | None
    provider_id: str | None
    client_id: str | None
    patients: tuple[str, ...]
    refs: tuple[str, ...]


_AGENT_CODES = (USER_TYPE["code"], UNIT_TYPE["code"], PROVIDER_TYPE["code"], APP_TYPE["code"])


def _agent_values(ev: dict[str, Any]) -> list[str | None]:
    """For each of _AGENT_CODES, the identifier of the first agent of that type (one pass over the agents)."""
    found: dict[str, str | None] = {}
    for a in ev.get("agent", []):
        for c in a.get("type", {}).get("coding", []):
            code = c.get("code")
            if code in _AGENT_CODES and code not in found:
                ident = a.get("who", {}).get("identifier")
                found[code] = str(ident["value"]) if ident else None
    return [found.get(code) for code in _AGENT_CODES]


def columns(ev: dict[str, Any]) -> Columns:
    """What the store indexes for `ev`: derived only from the AuditEvent itself."""
    patients: list[str] = []
    refs: dict[str, None] = {}  # ordered, without repeats
    for e in ev.get("entity", ()):
        ref = e.get("what", {}).get("reference")
        if not ref:
            continue
        parts = ref.split("/", 2)
        base = f"{parts[0]}/{parts[1]}" if len(parts) > 1 else parts[0]
        refs[base] = None
        if parts[0] == "Patient" and len(parts) > 1 and e.get("role", {}).get("code") == "1":
            patients.append(parts[1])
    purpose = ev["purposeOfEvent"][0]["coding"][0]["code"]
    user, unit, provider, client = _agent_values(ev)
    return Columns(ev["id"], parse_instant(ev["recorded"]), ev["action"], ev["outcome"], ev["subtype"][0]["code"],
                   purpose, user, unit, provider, client, tuple(patients), tuple(refs))
