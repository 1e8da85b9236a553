"""The cached PDL policies (auth.pdl_cache) never answer from a stale cache, on SQLite and PostgreSQL.

Each test warms the server's cache with a first request of the user, makes one change (a write, or the
clock passing a boundary) and asserts that the very next request sees it: without the invalidation by
the change counters of migration 0013 and the policy's `valid_until`, the second answer would be the
first one. Issue 4; docs/architecture.md "PDL access rules".
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from loginkit import LaunchServer
from pdlkit import DOCTOR, ORTO, VC, Users, consent, encounter, observation, org, patient, put_all, when


@pytest.fixture(scope="module")
def users(launch_server: LaunchServer) -> Users:
    return Users(launch_server)


@pytest.fixture
def doctor(users: Users) -> Iterator[httpx.Client]:
    with users.fhir(DOCTOR.id, VC.id) as client:
        yield client


def _status(client: httpx.Client, path: str) -> int:
    return client.get(path).status_code


def _ids(client: httpx.Client, pid: str) -> list[str]:
    r = client.get("/Observation", params={"patient": pid})
    assert r.status_code == 200, r.text
    return sorted(e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match")


@pytest.mark.parametrize("kind", ["encounter", "episode", "careteam"])
def test_new_relationship_grants_on_the_next_request(launch_server: LaunchServer, doctor: httpx.Client,
                                                     kind: str) -> None:
    pid = f"cache-new-{kind}"
    put_all(launch_server, [patient(pid), observation(f"{pid}-obs", pid, None)])
    assert _status(doctor, f"/Observation/{pid}-obs") == 403
    assert _ids(doctor, pid) == []
    made = {"encounter": encounter(f"{pid}-enc", pid, VC.id),
            "episode": {"resourceType": "EpisodeOfCare", "id": f"{pid}-eoc", "status": "active",
                        "patient": {"reference": f"Patient/{pid}"}, "managingOrganization": org(VC.id)},
            "careteam": {"resourceType": "CareTeam", "id": f"{pid}-team", "status": "active",
                         "subject": {"reference": f"Patient/{pid}"},
                         "participant": [{"member": {"reference": f"Practitioner/{DOCTOR.id}"}}]}}
    put_all(launch_server, [made[kind]])
    assert _status(doctor, f"/Observation/{pid}-obs") == 200
    assert _ids(doctor, pid) == [f"{pid}-obs"]


def test_block_and_its_revocation_on_the_next_request(launch_server: LaunchServer, doctor: httpx.Client) -> None:
    pid = "cache-block"
    put_all(launch_server, [patient(pid), encounter(f"{pid}-own", pid, VC.id),
                            encounter(f"{pid}-orto", pid, ORTO.id, "finished", when(-2)),
                            observation(f"{pid}-obs", pid, f"{pid}-orto")])
    assert _status(doctor, f"/Observation/{pid}-obs") == 200
    block = consent(f"{pid}-deny", pid, "deny", [ORTO.id])
    put_all(launch_server, [block])
    assert _status(doctor, f"/Observation/{pid}-obs") == 403
    assert _ids(doctor, pid) == []
    put_all(launch_server, [{**block, "status": "inactive"}])
    assert _status(doctor, f"/Observation/{pid}-obs") == 200
    assert _ids(doctor, pid) == [f"{pid}-obs"]


def test_emergency_access_and_lift_on_the_next_request(launch_server: LaunchServer, doctor: httpx.Client) -> None:
    pid = "cache-grants"
    put_all(launch_server, [patient(pid), observation(f"{pid}-obs", pid, None)])
    assert _status(doctor, f"/Observation/{pid}-obs") == 403
    r = doctor.post(f"/Patient/{pid}/$emergency-access", json={"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "medvetslös"}]})
    assert r.status_code == 200, r.text
    assert _status(doctor, f"/Observation/{pid}-obs") == 200
    lid = "cache-lift"
    put_all(launch_server, [patient(lid), encounter(f"{lid}-own", lid, VC.id),
                            encounter(f"{lid}-orto", lid, ORTO.id, "finished", when(-2)),
                            observation(f"{lid}-obs", lid, f"{lid}-orto"),
                            consent(f"{lid}-deny", lid, "deny", [ORTO.id]),
                            consent(f"{lid}-permit", lid, "permit", [VC.id])])
    assert _status(doctor, f"/Observation/{lid}-obs") == 403
    r = doctor.post(f"/Patient/{lid}/$lift-block", json={"resourceType": "Parameters", "parameter": [
        {"name": "consent", "valueReference": {"reference": f"Consent/{lid}-permit"}}]})
    assert r.status_code == 200, r.text
    assert _status(doctor, f"/Observation/{lid}-obs") == 200


def _until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.time()))


def _at(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def test_time_boundaries_without_any_write(launch_server: LaunchServer, doctor: httpx.Client) -> None:
    """A grant's expiry, a Consent period's start and end and the 30-day window of a finished Encounter
    change the answer with no write in between: only `valid_until` makes the cache see them.

    The boundaries are whole seconds (as the resources state them) counted from `base`, far enough
    ahead that the setup on a loaded machine is done before the first one."""
    gid, sid, eid, wid = "cache-expiry", "cache-period", "cache-ended", "cache-window"
    base = float(int(time.time()) + 9)
    put_all(launch_server, [
        patient(gid), observation(f"{gid}-obs", gid, None),
        # a spärr from base + 1 s to base + 4 s
        patient(sid), encounter(f"{sid}-own", sid, VC.id), encounter(f"{sid}-orto", sid, ORTO.id, "finished", when(-2)),
        observation(f"{sid}-obs", sid, f"{sid}-orto"),
        consent(f"{sid}-deny", sid, "deny", [ORTO.id], {"start": _at(base + 1), "end": _at(base + 4)}),
        # a finished Encounter leaving the 30-day window at base + 4 s
        patient(wid), encounter(f"{wid}-enc", wid, VC.id, "finished", _at(base + 4 - 30 * 86400)),
        observation(f"{wid}-obs", wid, f"{wid}-enc"),
        patient(eid)])
    granted = time.time()
    r = doctor.post(f"/Patient/{gid}/$emergency-access", json={"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "medvetslös"},
        {"name": "duration", "valueDuration": {"value": 3, "code": "s", "system": "http://unitsofmeasure.org"}}]})
    assert r.status_code == 200, r.text
    paths = [f"/Observation/{gid}-obs", f"/Observation/{sid}-obs", f"/Observation/{wid}-obs"]
    assert [_status(doctor, p) for p in paths] == [200, 200, 200]
    assert time.time() < base + 1, "the setup took longer than the margin before the first boundary"
    _until(granted + 3.5)
    assert _status(doctor, paths[0]) == 403  # the emergency access expired
    _until(base + 1.5)
    assert _status(doctor, paths[1]) == 403  # the spärr is in force
    assert _ids(doctor, sid) == []
    _until(base + 5.5)  # a second-precision end covers its whole second
    assert _status(doctor, paths[1]) == 200  # and over
    assert _status(doctor, paths[2]) == 403  # the Encounter left the window
