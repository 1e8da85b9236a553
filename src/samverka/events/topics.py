"""The subscription topics this server ships, and whether a resource change triggers one.

A topic is the R5 SubscriptionTopic (https://hl7.org/fhir/R5/subscriptiontopic.html) as the R4
backport uses it (https://hl7.org/fhir/uv/subscriptions-backport/topics.html): a canonical URL that a
Subscription names in `criteria`, with resource triggers (a type, the interactions create/update/delete,
and criteria on the version before and after the change) and the search parameters a subscriber may
filter on (`canFilterBy`). Criteria are FHIRPath over `%previous` and `%current` (an absent version is an
empty collection), or search queries on the two versions (`QueryCriteria`, evaluated by `matching`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..fhir import fhirpath

BASE = "https://samverka.se/fhir/SubscriptionTopic"
LAB_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


@dataclass(frozen=True)
class QueryCriteria:
    """SubscriptionTopic.resourceTrigger.queryCriteria: search queries on the two versions.

    `previous`/`current` are query strings for the resource's type ("status=final"); None places no
    condition. `result_for_create`/`result_for_delete` stand in for the missing version ("test-passes"
    → True, "test-fails" → False); `require_both` needs both tests to pass rather than either.
    """

    previous: str | None = None
    current: str | None = None
    result_for_create: bool = False
    result_for_delete: bool = False
    require_both: bool = True


@dataclass(frozen=True)
class Trigger:
    """One SubscriptionTopic.resourceTrigger."""

    resource: str
    interactions: frozenset[str]  # create | update | delete
    fhirpath: str | None = None  # over %previous and %current
    query: QueryCriteria | None = None
    description: str = ""


@dataclass(frozen=True)
class Topic:
    url: str
    title: str
    description: str
    triggers: tuple[Trigger, ...]
    can_filter_by: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # type -> parameter codes

    @property
    def types(self) -> frozenset[str]:
        return frozenset(t.resource for t in self.triggers)


TOPICS: tuple[Topic, ...] = (
    Topic(
        f"{BASE}/encounter-start-end", "Encounter started or ended",
        "An Encounter becomes in-progress (the patient arrives) or finished (the patient leaves).",
        (Trigger("Encounter", frozenset({"create", "update"}),
                 fhirpath="(%current.status = 'in-progress' and %previous.where(status = 'in-progress').empty())"
                          " or (%current.status = 'finished' and %previous.where(status = 'finished').empty())",
                 description="status changes to in-progress or to finished"),),
        {"Encounter": ("patient", "subject", "class", "type", "location", "service-provider", "practitioner",
                       "participant", "status")},
    ),
    Topic(
        f"{BASE}/lab-result", "New laboratory result",
        "An Observation in the laboratory category is created.",
        (Trigger("Observation", frozenset({"create"}),
                 query=QueryCriteria(current=f"category={LAB_CATEGORY}"),
                 description="a new Observation with category laboratory"),),
        {"Observation": ("patient", "subject", "code", "performer", "based-on", "encounter", "status")},
    ),
    Topic(
        f"{BASE}/referral", "Referral created or changed status",
        "A ServiceRequest is created, or its status changes.",
        (Trigger("ServiceRequest", frozenset({"create", "update"}),
                 fhirpath="%previous.empty() or (%previous.status = %current.status).not()",
                 description="a new ServiceRequest, or a new status"),),
        {"ServiceRequest": ("patient", "subject", "code", "category", "performer", "requester", "status",
                            "intent", "encounter")},
    ),
    Topic(
        f"{BASE}/appointment-booked-cancelled", "Appointment booked or cancelled",
        "An Appointment becomes booked or cancelled.",
        (Trigger("Appointment", frozenset({"create", "update"}),
                 fhirpath="(%current.status = 'booked' and %previous.where(status = 'booked').empty())"
                          " or (%current.status = 'cancelled' and %previous.where(status = 'cancelled').empty())",
                 description="status changes to booked or to cancelled"),),
        {"Appointment": ("patient", "actor", "practitioner", "location", "service-type", "specialty", "status")},
    ),
    Topic(
        f"{BASE}/patient-demographics", "Patient demographics changed",
        "A Patient's identifiers, name, gender, birth date, address, telecom, deceased or marital status change.",
        (Trigger("Patient", frozenset({"update"}),
                 fhirpath=" or ".join(f"(%previous.{e} ~ %current.{e}).not()" for e in (
                     "identifier", "name", "gender", "birthDate", "address", "telecom", "deceased",
                     "maritalStatus")),
                 description="a demographic element differs between the two versions"),),
        {"Patient": ("_id", "identifier", "organization", "general-practitioner")},
    ),
)

BY_URL: dict[str, Topic] = {t.url: t for t in TOPICS}


def get(url: str) -> Topic | None:
    return BY_URL.get(url)


def fhirpath_passes(expression: str, previous: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
    """True when the FHIRPath criteria evaluate to true on the two versions."""
    env = {"previous": previous if previous is not None else [],
           "current": current if current is not None else []}
    result = fhirpath.compile(expression)(current or previous or {}, env)
    return result == [True]


__all__ = ["BY_URL", "TOPICS", "QueryCriteria", "Topic", "Trigger", "fhirpath_passes", "get"]
