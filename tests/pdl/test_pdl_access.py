"""Patientdatalagen for users' tokens against a live server (SQLite and PostgreSQL): care relationship,
spärr, sammanhållen journalföring, emergency access, spärr lifts and protected identity.

Issue 4; shared/docs/sweden.md; docs/architecture.md "PDL access rules".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from authkit import fresh_key
from loginkit import LaunchServer
from pdlkit import (
    AKUT,
    DOCTOR,
    MED_DOCTOR,
    ORTO,
    ORTO_DOCTOR,
    OTHER_PROVIDER,
    OTHER_UNIT,
    PERMISSION,
    PROVIDER,
    RECORDED_AT_PROVIDER,
    RECORDED_AT_UNIT,
    VC,
    Users,
    consent,
    encounter,
    observation,
    org,
    patient,
    put_all,
    when,
)


@pytest.fixture(scope="module")
def world(launch_server: LaunchServer) -> Users:
    """The patients of these tests, each with the one kind of relationship (or block) its test is about."""
    srv = launch_server
    put_all(srv, [
        {"resourceType": "Organization", "id": OTHER_PROVIDER, "name": "Privatvård AB",
         "identifier": [{"system": "urn:oid:1.2.752.29.4.19", "value": OTHER_PROVIDER}]},
        {"resourceType": "Organization", "id": OTHER_UNIT, "name": "Privatvård AB, mottagningen",
         "identifier": [{"system": "urn:oid:1.2.752.29.4.19", "value": OTHER_UNIT}], "partOf": org(OTHER_PROVIDER)},
        {"resourceType": "Location", "id": "loc-vc", "name": "Mottagning 1", "managingOrganization": org(VC.id)},
        # a: in-progress encounter at the doctor's unit; b: no relationship at all
        patient("a"), encounter("a-enc", "a", VC.id), observation("a-obs", "a", "a-enc"),
        patient("b"), encounter("b-enc", "b", ORTO.id, "finished", when(-400)), observation("b-obs", "b", "b-enc"),
        # c: finished 60 days ago (outside the 30-day window); d: finished 5 days ago; l: at a location of the unit
        patient("c"), encounter("c-enc", "c", VC.id, "finished", when(-60)),
        patient("d"), encounter("d-enc", "d", VC.id, "finished", when(-5)),
        patient("l"), encounter("l-enc", "l", None, "planned", location="loc-vc"),
        # e: an active episode of care at the unit; f: a care team with the doctor
        patient("e"), {"resourceType": "EpisodeOfCare", "id": "e-eoc", "status": "active",
                       "patient": {"reference": "Patient/e"}, "managingOrganization": org(VC.id)},
        patient("f"), {"resourceType": "CareTeam", "id": "f-team", "status": "active",
                       "subject": {"reference": "Patient/f"},
                       "participant": [{"member": {"reference": f"Practitioner/{DOCTOR.id}"}}]},
        patient("f2"), {"resourceType": "CareTeam", "id": "f2-team", "status": "inactive",
                        "subject": {"reference": "Patient/f2"},
                        "participant": [{"member": {"reference": f"Practitioner/{DOCTOR.id}"}}]},
        # g: treated at the doctor's unit and at orthopaedics, and has blocked orthopaedics (spärr)
        patient("g"), encounter("g-own", "g", VC.id), observation("g-obs-own", "g", "g-own"),
        encounter("g-orto", "g", ORTO.id, "finished", when(-2)), observation("g-obs-orto", "g", "g-orto"),
        consent("g-block", "g", "deny", [ORTO.id]),
        # h: like g, for the lift
        patient("h"), encounter("h-own", "h", VC.id), encounter("h-orto", "h", ORTO.id, "finished", when(-2)),
        observation("h-obs-orto", "h", "h-orto"), consent("h-block", "h", "deny", [ORTO.id]),
        consent("h-permit", "h", "permit", [VC.id]),
        # j: no relationship, for the doctor's emergency access
        patient("j"), encounter("j-enc", "j", ORTO.id, "finished", when(-300)), observation("j-obs", "j", "j-enc"),
        # k: treated at the doctor's unit and by another care provider
        patient("k"), encounter("k-own", "k", VC.id), observation("k-obs-own", "k", "k-own"),
        encounter("k-priv", "k", OTHER_UNIT, "finished", when(-3)), observation("k-obs-priv", "k", "k-priv"),
        # p: protected identity (sekretessmarkering), related to the doctor's unit and to the emergency unit
        patient("p", meta={"security": [{"system": "https://samverka.se/fhir/CodeSystem/security-label",
                                         "code": "protected-information"}]},
                address=[{"line": ["Hemliga gatan 1"], "city": "Västerås"}],
                telecom=[{"system": "phone", "value": "070-1234567"}]),
        encounter("p-enc", "p", VC.id), encounter("p-akut", "p", AKUT.id), observation("p-obs", "p", "p-enc"),
        # m: related to the doctor's unit; one record imported from another provider, stamped by the loader
        patient("m"), encounter("m-enc", "m", VC.id),
        {**observation("m-imported", "m", None), "meta": {"tag": [
            {"system": RECORDED_AT_PROVIDER, "code": OTHER_PROVIDER}]}},
    ])
    return Users(srv)


@pytest.fixture(scope="module")
def doctor(world: Users) -> Iterator[httpx.Client]:
    with world.fhir(DOCTOR.id, VC.id) as fhir:
        yield fhir


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
                  if e.get("search", {}).get("mode") == mode)


def _outcome(bundle: dict[str, Any]) -> str:
    return " ".join(i.get("diagnostics", "") for e in bundle.get("entry", [])
                    if e.get("search", {}).get("mode") == "outcome" for i in e["resource"]["issue"])


def _forbidden(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    text = body["issue"][0]["diagnostics"]
    for w in words:
        assert w in text, text


def test_no_care_relationship_is_refused_with_the_reason(doctor: httpx.Client) -> None:
    _forbidden(doctor.get("/Patient/b"), "no care relationship", "Patient/b", VC.id)
    _forbidden(doctor.get("/Observation/b-obs"), "no care relationship")
    _forbidden(doctor.get("/Observation/b-obs/_history"), "no care relationship")
    _forbidden(doctor.get("/Observation/b-obs/_history/1"), "no care relationship")
    # searches are narrowed inside the query: nothing leaks through _total either
    found = doctor.get("/Observation", params={"patient": "b", "_total": "accurate"}).json()
    assert found["total"] == 0 and _ids(found) == []
    found = doctor.get("/Patient", params={"_id": "a,b", "_total": "accurate"}).json()
    assert found["total"] == 1 and _ids(found) == ["Patient/a"]
    assert _ids(doctor.get("/Patient/b/Observation").json()) == []
    # non-patient resources stay visible
    assert doctor.get(f"/Organization/{ORTO.id}").status_code == 200


@pytest.mark.parametrize("pid", ["a", "d", "l", "e", "f"])
def test_each_kind_of_care_relationship_gives_access(doctor: httpx.Client, pid: str) -> None:
    """In-progress encounter, finished within 30 days, planned at a unit's location, episode of care, care team."""
    r = doctor.get(f"/Patient/{pid}")
    assert r.status_code == 200, r.text
    assert f"Patient/{pid}" in _ids(doctor.get("/Patient", params={"_id": pid}).json())


def test_expired_relationships_do_not_count(doctor: httpx.Client) -> None:
    """A finished encounter older than the window, and an inactive care team."""
    _forbidden(doctor.get("/Patient/c"), "no care relationship")
    _forbidden(doctor.get("/Patient/f2"), "no care relationship")


def test_other_users_and_system_tokens(world: Users, launch_server: LaunchServer) -> None:
    with world.fhir(ORTO_DOCTOR.id, ORTO.id) as orto:
        _forbidden(orto.get("/Patient/a"), "no care relationship")
        assert orto.get("/Patient/g").status_code == 200
    with launch_server.auth.fhir(launch_server.system_token) as system:  # backend services: no PDL
        assert system.get("/Observation/b-obs").status_code == 200
        assert system.get("/Observation/g-obs-orto").status_code == 200


def test_blocked_information_is_invisible_outside_the_blocked_unit(doctor: httpx.Client, world: Users) -> None:
    _forbidden(doctor.get("/Observation/g-obs-orto"), "blocked (spärr)")
    _forbidden(doctor.get("/Encounter/g-orto"), "blocked (spärr)")
    _forbidden(doctor.get("/Observation/g-obs-orto/_history"), "blocked")
    assert doctor.get("/Observation/g-obs-own").status_code == 200
    found = doctor.get("/Observation", params={"patient": "g", "_total": "accurate"}).json()
    assert found["total"] == 1 and _ids(found) == ["Observation/g-obs-own"]
    assert "blocked (spärr)" in _outcome(found) and "g-obs-orto" not in str(found)
    found = doctor.get("/Patient", params={"_id": "g", "_revinclude": "Observation:patient"}).json()
    assert _ids(found, "include") == ["Observation/g-obs-own"]
    found = doctor.get("/Patient/g/Encounter").json()
    assert _ids(found) == ["Encounter/g-own"] and "blocked" in _outcome(found)
    # no blocked information: no notice
    assert _outcome(doctor.get("/Observation", params={"patient": "a"}).json()) == ""
    # history across patients is not offered to users (it would bypass the rules)
    _forbidden(doctor.get("/Observation/_history"), "history across patients")
    _forbidden(doctor.get("/_history"), "history across patients")
    # inside the blocked unit the information is there
    with world.fhir(ORTO_DOCTOR.id, ORTO.id) as orto:
        assert orto.get("/Observation/g-obs-orto").status_code == 200
        assert _outcome(orto.get("/Observation", params={"patient": "g"}).json()) == ""


def test_information_of_another_care_provider_needs_consent(doctor: httpx.Client, launch_server: LaunchServer
                                                            ) -> None:
    _forbidden(doctor.get("/Observation/k-obs-priv"), "another care provider", "consent")
    assert _ids(doctor.get("/Observation", params={"patient": "k"}).json()) == ["Observation/k-obs-own"]
    put_all(launch_server, [consent("k-old", "k", "permit", [PROVIDER], {"start": when(-30), "end": when(-1)})])
    _forbidden(doctor.get("/Observation/k-obs-priv"), "another care provider")  # expired consent
    put_all(launch_server, [consent("k-now", "k", "permit", [PROVIDER], {"start": when(-1), "end": when(30)})])
    assert doctor.get("/Observation/k-obs-priv").status_code == 200
    assert _ids(doctor.get("/Observation", params={"patient": "k"}).json()) == [
        "Observation/k-obs-own", "Observation/k-obs-priv"]
    # a spärr always wins over consent
    put_all(launch_server, [consent("k-block", "k", "deny", [OTHER_PROVIDER])])
    _forbidden(doctor.get("/Observation/k-obs-priv"), "blocked")


def _audit(srv: LaunchServer, pid: str) -> list[dict[str, Any]]:
    key = fresh_key("ES384")
    token = srv.auth.token(srv.auth.register("system/AuditEvent.rs", key), key, "system/AuditEvent.rs")
    with srv.auth.fhir(token) as fhir:
        bundle = fhir.get("/AuditEvent", params={"patient": pid, "_count": "200"}).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def _purpose(ev: dict[str, Any]) -> str:
    return str(ev["purposeOfEvent"][0]["coding"][0]["code"])


def test_emergency_access(doctor: httpx.Client, launch_server: LaunchServer) -> None:
    _forbidden(doctor.get("/Observation/j-obs"), "no care relationship")
    r = doctor.post("/Patient/j/$emergency-access", json={"resourceType": "Parameters", "parameter": []})
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["expression"] == ["Parameters.parameter.where(name='reason')"]
    too_long = {"name": "duration", "valueDuration": {"value": 3, "code": "d", "system": "http://unitsofmeasure.org"}}
    r = doctor.post("/Patient/j/$emergency-access", json={"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "medvetslös"}, too_long]})
    assert r.status_code == 400 and "duration" in r.json()["issue"][0]["expression"][0]
    r = doctor.post("/Patient/j/$emergency-access", json={"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "medvetslös på akuten"},
        {"name": "duration", "valueDuration": {"value": 2, "code": "h", "system": "http://unitsofmeasure.org"}}]})
    assert r.status_code == 200, r.text
    out = {p["name"]: p for p in r.json()["parameter"]}
    assert out["expires"]["valueInstant"] > when(1 / 24) and out["expires"]["valueInstant"] < when(2.1 / 24)
    assert doctor.get("/Observation/j-obs").status_code == 200
    assert _ids(doctor.get("/Observation", params={"patient": "j"}).json()) == ["Observation/j-obs"]
    events = _audit(launch_server, "j")
    granted = [e for e in events if e["subtype"][0]["code"] == "operation" and e["outcome"] == "0"]
    reads = [e for e in events if e["subtype"][0]["code"] == "read" and e["outcome"] == "0"]
    refused = [e for e in events if e["outcome"] == "4" and e["subtype"][0]["code"] == "read"]
    assert granted and all(_purpose(e) == "ETREAT" for e in granted)
    assert reads and all(_purpose(e) == "ETREAT" for e in reads)
    assert refused and "no care relationship" in refused[0]["outcomeDesc"]
    users = {a["who"]["identifier"]["value"] for e in granted for a in e["agent"] if "identifier" in a["who"]}
    assert DOCTOR.id in users and VC.id in users


def test_emergency_access_never_passes_an_unlifted_block(world: Users) -> None:
    with world.fhir(MED_DOCTOR.id, AKUT.id) as akut:
        _forbidden(akut.get("/Observation/g-obs-own"), "no care relationship")
        reason = {"name": "reason", "valueString": "hjärtstopp"}
        r = akut.post("/Patient/g/$emergency-access", json={"resourceType": "Parameters", "parameter": [reason]})
        assert r.status_code == 200, r.text
        assert akut.get("/Observation/g-obs-own").status_code == 200
        _forbidden(akut.get("/Observation/g-obs-orto"), "blocked (spärr)")
        found = akut.get("/Observation", params={"patient": "g"}).json()
        assert _ids(found) == ["Observation/g-obs-own"] and "blocked" in _outcome(found)


def test_block_lift_at_most_seven_days_and_audited(doctor: httpx.Client, launch_server: LaunchServer) -> None:
    _forbidden(doctor.get("/Observation/h-obs-orto"), "blocked")
    week = {"name": "duration", "valueDuration": {"value": 8, "code": "d", "system": "http://unitsofmeasure.org"}}
    r = doctor.post("/Patient/h/$lift-block", json={"resourceType": "Parameters", "parameter": [
        {"name": "consent", "valueReference": {"reference": "Consent/h-permit"}}, week]})
    assert r.status_code == 400 and "at most 7 days" in r.text
    r = doctor.post("/Patient/h/$lift-block", json={"resourceType": "Parameters", "parameter": [
        {"name": "emergency", "valueBoolean": True}]})
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["Parameters.parameter.where(name='reason')"]
    r = doctor.post("/Patient/h/$lift-block", json={"resourceType": "Parameters", "parameter": [
        {"name": "consent", "valueReference": {"reference": "Consent/h-block"}}]})
    assert r.status_code == 400, r.text  # a deny is not the patient's consent to a lift
    r = doctor.post("/Patient/h/$lift-block", json={"resourceType": "Parameters", "parameter": [
        {"name": "consent", "valueReference": {"reference": "Consent/h-permit"}},
        {"name": "duration", "valueDuration": {"value": 7, "code": "d", "system": "http://unitsofmeasure.org"}}]})
    assert r.status_code == 200, r.text
    expires = {p["name"]: p for p in r.json()["parameter"]}["expires"]["valueInstant"]
    assert when(6.9) < expires <= when(7.01)
    assert doctor.get("/Observation/h-obs-orto").status_code == 200
    lifts = [e for e in _audit(launch_server, "h") if e["subtype"][0]["code"] == "operation" and e["outcome"] == "0"]
    assert len(lifts) == 1 and any(
        e["what"]["reference"] == "Patient/h" for e in lifts[0]["entity"] if "what" in e)


def test_protected_identity_is_stripped(doctor: httpx.Client, world: Users, launch_server: LaunchServer) -> None:
    def contact_free(body: dict[str, Any]) -> bool:
        return "address" not in body and "telecom" not in body and any(
            s.get("code") == "REDACTED" for s in body["meta"]["security"])

    assert contact_free(doctor.get("/Patient/p").json())
    found = doctor.get("/Patient", params={"_id": "p"}).json()
    assert contact_free(found["entry"][0]["resource"])
    found = doctor.get("/Observation", params={"patient": "p", "_include": "Observation:patient"}).json()
    included = [e["resource"] for e in found["entry"] if e["search"]["mode"] == "include"]
    assert len(included) == 1 and contact_free(included[0])
    assert contact_free(doctor.get("/Patient/p/_history").json()["entry"][0]["resource"])
    assert "Hemliga" not in doctor.get("/Patient/p/_history/1").text
    # an assignment with the explicit permission sees them
    role_id = f"{MED_DOCTOR.id}.uppdrag-2"
    with launch_server.auth.fhir(launch_server.system_token) as system:
        role = system.get(f"/PractitionerRole/{role_id}").json()
        role["code"] = [*role.get("code", []), {"coding": [PERMISSION]}]
        assert system.put(f"/PractitionerRole/{role_id}", json=role).status_code == 200
    with world.fhir(MED_DOCTOR.id, AKUT.id) as akut:
        body = akut.get("/Patient/p").json()
        assert body["address"][0]["line"] == ["Hemliga gatan 1"] and body["telecom"]



def test_users_writes_are_stamped_with_their_unit_and_provider(doctor: httpx.Client, world: Users) -> None:
    """What a user records is recorded at their unit: a spärr on that unit hides it; forged stamps are replaced."""
    forged = {**observation("a-by-doctor", "a", None), "meta": {"tag": [{"system": RECORDED_AT_UNIT,
                                                                         "code": ORTO.id}]}}
    r = doctor.put("/Observation/a-by-doctor", json=forged)
    assert r.status_code == 201, r.text
    tags = {(t["system"], t["code"]) for t in doctor.get("/Observation/a-by-doctor").json()["meta"]["tag"]}
    assert tags == {(RECORDED_AT_UNIT, VC.id), (RECORDED_AT_PROVIDER, PROVIDER)}
    with world.fhir(ORTO_DOCTOR.id, ORTO.id) as orto:  # g has blocked orthopaedics
        r = orto.put("/Observation/g-by-orto", json=observation("g-by-orto", "g", None))
        assert r.status_code == 201, r.text
        assert orto.get("/Observation/g-by-orto").status_code == 200
    _forbidden(doctor.get("/Observation/g-by-orto"), "blocked (spärr)")
    assert "Observation/g-by-orto" not in _ids(doctor.get("/Observation", params={"patient": "g"}).json())


def test_records_stamped_by_another_provider_need_consent(doctor: httpx.Client) -> None:
    _forbidden(doctor.get("/Observation/m-imported"), "another care provider")
    assert doctor.get("/Encounter/m-enc").status_code == 200
    assert _ids(doctor.get("/Observation", params={"patient": "m"}).json()) == []


def test_a_remembered_read_decision_follows_a_change_to_the_resource(doctor: httpx.Client,
                                                                     launch_server: LaunchServer) -> None:
    """The policy reuses its decision on a resource until any write (auth.pdl.Policy.check): re-stamping an
    Observation as another provider's record is no write the policy depends on, but must still count."""
    put_all(launch_server, [observation("a-obs-restamp", "a", "a-enc")])
    for _ in range(3):  # decided once, then remembered
        assert doctor.get("/Observation/a-obs-restamp").status_code == 200
    put_all(launch_server, [{**observation("a-obs-restamp", "a", None), "meta": {"tag": [
        {"system": RECORDED_AT_PROVIDER, "code": OTHER_PROVIDER}]}}])
    _forbidden(doctor.get("/Observation/a-obs-restamp"), "another care provider")
    put_all(launch_server, [observation("a-obs-restamp", "a", "a-enc")])
    assert doctor.get("/Observation/a-obs-restamp").status_code == 200


def test_conditional_interactions_match_only_what_the_user_may_see(doctor: httpx.Client,
                                                                   launch_server: LaunchServer) -> None:
    r = doctor.delete("/Observation", params={"_id": "b-obs"})
    assert r.status_code in (200, 204), r.text
    r = doctor.delete("/Observation", params={"_id": "g-obs-orto"})
    assert r.status_code in (200, 204), r.text
    with launch_server.auth.fhir(launch_server.system_token) as system:
        assert system.get("/Observation/b-obs").status_code == 200
        assert system.get("/Observation/g-obs-orto").status_code == 200
    _forbidden(doctor.delete("/Observation/b-obs"), "no care relationship")


def test_batch_and_transaction_entries_are_checked(doctor: httpx.Client) -> None:
    def get(url: str) -> dict[str, Any]:
        return {"request": {"method": "GET", "url": url}}

    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [get("Observation/a-obs"), get("Observation/b-obs"), get("Observation/g-obs-orto"),
                       get("Observation?patient=b")]}
    r = doctor.post("", json=batch)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["200", "403", "403", "200"]
    assert "no care relationship" in entries[1]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert entries[1]["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert "blocked" in entries[2]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert entries[3]["resource"].get("total", 0) == 0 and not entries[3]["resource"].get("entry")
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [get("Observation/a-obs"),
                                                                              get("Observation/b-obs")]}
    _forbidden(doctor.post("", json=transaction), "no care relationship")
