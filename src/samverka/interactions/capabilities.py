"""capabilities: the CapabilityStatement at GET [base]/metadata, https://hl7.org/fhir/R4/http.html#capabilities

It states exactly what this server does, built from the same registries the handlers use.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from .. import __version__
from ..fhir.definitions import resource_types
from ..search.params import Registry

_TYPE_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance", "history-type",
                      "create", "search-type")
# the parameter types search.sql compiles (special parameters are not claimed)
_SEARCHABLE = {"string", "token", "reference", "date", "number", "quantity", "uri", "composite", "special"}


# the audit log is append-only: read and searched by auditors, never written through the API
_READ_ONLY = {"AuditEvent": ("read", "search-type")}


_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
OPERATIONS = "https://samverka.se/fhir/OperationDefinition"  # canonicals of our own operations
_VALIDATE = {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
# Patientdatalagen (auth.emergency_access, auth.lift_block): for users' tokens, so only with auth on
_PDL_OPERATIONS = ({"name": "emergency-access", "definition": f"{OPERATIONS}/Patient-emergency-access"},
                   {"name": "lift-block", "definition": f"{OPERATIONS}/Patient-lift-block"})
# operations on one type served whatever the settings (api.app routes them)
_BULK = "http://hl7.org/fhir/uv/bulkdata"  # Bulk Data Access 2.0.0 (interactions.export)
_OWN = {"SearchParameter": ({"name": "reindex", "definition": f"{OPERATIONS}/SearchParameter-reindex"},),
        "Patient": ({"name": "export", "definition": f"{_BULK}/OperationDefinition/patient-export"},),
        "Group": ({"name": "export", "definition": f"{_BULK}/OperationDefinition/group-export"},)}


def capability_statement(registry: Registry, base: str, formats: tuple[str, ...],
                         auth: bool = True, topics: Sequence[str] = ()) -> dict[str, Any]:
    """`topics`: the SubscriptionTopic canonical URLs Subscriptions may name (samverka.events)."""
    statement: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-26",
        "publisher": "Samverka",
        "kind": "instance",
        "software": {"name": "Samverka", "version": __version__},
        "implementation": {"description": "Samverka shared care record", "url": base},
        "fhirVersion": "4.0.1",
        "format": list(formats),
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "resource": [_resource(registry, t) for t in sorted(resource_types())],
            "interaction": [{"code": c} for c in ("transaction", "batch", "search-system", "history-system")],
            "operation": [dict(_VALIDATE),
                          {"name": "reindex", "definition": f"{OPERATIONS}/reindex"},
                          {"name": "reindex-status", "definition": f"{OPERATIONS}/reindex-status"},
                          {"name": "export", "definition": f"{_BULK}/OperationDefinition/export"}],
        }],
        "instantiates": [f"{_BULK}/CapabilityStatement/bulk-data"],
    }
    if topics:
        _subscriptions(statement, topics)
    if auth:
        patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
        patient["operation"] = [*patient["operation"], *(dict(o) for o in _PDL_OPERATIONS)]
        # https://hl7.org/fhir/smart-app-launch/conformance.html
        origin = base.removesuffix("/fhir")
        statement["rest"][0]["security"] = {
            "cors": False,
            "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                     "code": "SMART-on-FHIR"}]}],
            "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                           "extension": [{"url": "token", "valueUri": f"{origin}/auth/token"},
                                         {"url": "revoke", "valueUri": f"{origin}/auth/revoke"},
                                         {"url": "introspect", "valueUri": f"{origin}/auth/introspect"},
                                         {"url": "register", "valueUri": f"{origin}/auth/register"}]}],
            "description": "SMART on FHIR: bearer tokens from the built-in authorization server "
                           f"(see {base}/.well-known/smart-configuration)",
        }
    return statement


def _subscriptions(statement: dict[str, Any], topics: Sequence[str]) -> None:
    """Topic-based subscriptions, https://hl7.org/fhir/uv/subscriptions-backport/components.html#capabilitystatement"""
    statement["instantiates"] = [*statement.get("instantiates", []),
                                 f"{_BACKPORT}/CapabilityStatement/backport-subscription-server-r4"]
    statement["implementationGuide"] = [f"{_BACKPORT}/ImplementationGuide/hl7.fhir.uv.subscriptions-backport"]
    for res in statement["rest"][0]["resource"]:
        if res["type"] != "Subscription":
            continue
        res["extension"] = [{"url": f"{_BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical",
                             "valueCanonical": url} for url in topics]
        res["supportedProfile"] = [f"{_BACKPORT}/StructureDefinition/backport-subscription"]
        res["operation"] = [*res.get("operation", []),
                            {"name": "status",
                             "definition": f"{_BACKPORT}/OperationDefinition/backport-subscription-status"},
                            {"name": "events",
                             "definition": f"{_BACKPORT}/OperationDefinition/backport-subscription-events"},
                            {"name": "get-ws-binding-token", "definition":
                             f"{_BACKPORT}/OperationDefinition/backport-subscription-get-ws-binding-token"}]


@cache
def _searchable(registry: Registry, type_: str) -> tuple[tuple[str, str, str], ...]:
    # `_query` names queries, and this server defines none (search.sql answers 400): not claimed
    return tuple(sorted((p.code, p.type, p.url) for p in registry.for_type(type_)
                        if p.type in _SEARCHABLE and p.code != "_query"))


def _resource(registry: Registry, type_: str) -> dict[str, Any]:
    if type_ in _READ_ONLY:
        return {"type": type_, "profile": f"http://hl7.org/fhir/StructureDefinition/{type_}",
                "interaction": [{"code": c} for c in _READ_ONLY[type_]],
                "searchParam": [{"name": code, "type": t, "definition": url}
                                for code, t, url in _searchable(registry, type_)]}
    return {
        "type": type_,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{type_}",
        "interaction": [{"code": c} for c in _TYPE_INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "referencePolicy": ["literal"],
        "searchParam": [{"name": code, "type": t, "definition": url} for code, t, url in _searchable(registry, type_)],
        "operation": [dict(_VALIDATE), *(dict(o) for o in _OWN.get(type_, ()))],
    }
