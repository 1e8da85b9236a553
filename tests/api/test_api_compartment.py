"""Compartment search, `GET /fhir/Patient/{id}/{type}?...`: https://hl7.org/fhir/R4/compartmentdefinition.html"""

from __future__ import annotations

from typing import Any

from support.server import RunningServer


def _ids(server: RunningServer, path: str, **params: Any) -> set[str]:
    r = server.client.get(path, params=params)
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"}


def _post(server: RunningServer, body: dict[str, Any]) -> str:
    r = server.client.post(f"/{body['resourceType']}", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_compartment_search_returns_only_that_patients_resources(server: RunningServer, uid: str) -> None:
    """Observations by subject or performer are in the compartment; another patient's are not."""
    a = _post(server, {"resourceType": "Patient", "name": [{"family": f"Comp{uid}"}]})
    b = _post(server, {"resourceType": "Patient", "name": [{"family": f"Other{uid}"}]})
    code = {"coding": [{"system": "urn:comp", "code": uid}]}
    own = _post(server, {"resourceType": "Observation", "status": "final", "code": code,
                         "subject": {"reference": f"Patient/{a}"}})
    performed = _post(server, {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                               "performer": [{"reference": f"Patient/{a}"}]})
    _post(server, {"resourceType": "Observation", "status": "final", "code": code,
                   "subject": {"reference": f"Patient/{b}"}})
    assert _ids(server, f"/Patient/{a}/Observation") == {own, performed}
    assert _ids(server, f"/Patient/{a}/Observation", code=f"urn:comp|{uid}") == {own}
    assert _ids(server, f"/Patient/{b}/Observation", code=f"urn:comp|{uid}") != {own}


def test_compartment_search_of_a_type_outside_the_compartment_is_empty(server: RunningServer, uid: str) -> None:
    """Organization has no Patient-compartment parameters, so nothing of it is in a patient's compartment."""
    a = _post(server, {"resourceType": "Patient", "name": [{"family": f"Comp{uid}"}]})
    _post(server, {"resourceType": "Organization", "name": f"Org {uid}"})
    assert _ids(server, f"/Patient/{a}/Organization") == set()


def test_the_patient_is_in_its_own_compartment(server: RunningServer, uid: str) -> None:
    """`Patient/{id}/Patient` finds the patient itself (and patients linking to it)."""
    a = _post(server, {"resourceType": "Patient", "name": [{"family": f"Comp{uid}"}]})
    assert a in _ids(server, f"/Patient/{a}/Patient")


def test_compartment_search_explains_that_it_starts_from_the_patient(server: RunningServer, uid: str) -> None:
    """The plan drives from the patient's references, not by walking every resource of the type."""
    a = _post(server, {"resourceType": "Patient", "name": [{"family": f"Comp{uid}"}]})
    r = server.client.get(f"/Patient/{a}/Observation", params={"_explain": "true"})
    outcome = next(e for e in r.json()["entry"] if e["search"]["mode"] == "outcome")["resource"]
    assert "driven by Patient/" in outcome["issue"][-1]["diagnostics"]
