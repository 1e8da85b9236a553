"""Concurrency drills over real HTTP: optimistic locking (If-Match) and conditional create races.

Each drill runs against a real `samverka serve --workers 2` on SQLite and on PostgreSQL, so the
store's cross-process locking is what keeps the results right (within one worker the handlers run
one at a time on the event loop, which would hide a missing lock).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import Server

pytestmark = pytest.mark.slow

CLIENTS = 20
CREATES = 10
CREATE_ROUNDS = 3
MARKER_SYSTEM = "urn:samverka:drill:marker"
DEADLINE = 60.0  # seconds for any one drill's client phase


@pytest.fixture
def server(busy_server: Server) -> Server:
    """The module's two-worker server on each backend (each drill uses resources of its own)."""
    return busy_server


def count(client: httpx.Client, path: str) -> int:
    """`total` of a `_summary=count` search."""
    r = client.get(f"{path}{'&' if '?' in path else '?'}_summary=count")  # (httpx params= would drop the query)
    assert r.status_code == 200, r.text
    total = r.json().get("total")
    assert isinstance(total, int), r.text
    return total


def run_together(work: Callable[[int, httpx.Client], Any], clients: list[httpx.Client]) -> list[Any]:
    """Run `work(i, clients[i])` in one thread per client, released together; results by i."""
    n = len(clients)
    barrier = threading.Barrier(n, timeout=30)
    results: list[Any] = [None] * n

    def target(i: int) -> None:
        try:
            clients[i].get("metadata")  # connect before the barrier, so the requests really race
            barrier.wait()
            results[i] = work(i, clients[i])
        except Exception as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + DEADLINE + 30
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "clients still running after the deadline"
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"client errors: {errors[:3]}"
    return results


def _markers(resource: dict[str, Any]) -> set[str]:
    return {i["value"] for i in resource.get("identifier", []) if i.get("system") == MARKER_SYSTEM}


def _history(client: httpx.Client, type_: str, id_: str) -> list[dict[str, Any]]:
    r = client.get(f"{type_}/{id_}/_history", params={"_count": 1000})
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert not any(link.get("relation") == "next" for link in bundle.get("link", [])), "history is paged"
    return [e["resource"] for e in bundle.get("entry", []) if "resource" in e]


@pytest.fixture
def clients(server: Server) -> Iterator[list[httpx.Client]]:
    """One HTTP client (connection) per concurrent caller."""
    made = [server.client(timeout=DEADLINE) for _ in range(CLIENTS)]
    yield made
    for c in made:
        c.close()


def test_if_match_updates_lose_nothing(server: Server, clients: list[httpx.Client]) -> None:
    """20 racing If-Match updates: one 200, 19 412; 20 retrying read-modify-writes lose nothing, versions contiguous."""
    id_ = f"drill-{uuid.uuid4().hex[:12]}"
    patient = {"resourceType": "Patient", "id": id_, "name": [{"family": "Drill"}]}
    with server.client() as c:
        r = c.put(f"Patient/{id_}", json=patient)
        assert r.status_code == 201, r.text
        assert r.headers["etag"] == 'W/"1"'

    def racing_update(i: int, client: httpx.Client) -> int:
        body = dict(patient, identifier=[{"system": MARKER_SYSTEM, "value": f"race-{i}"}])
        return client.put(f"Patient/{id_}", json=body, headers={"If-Match": 'W/"1"'}).status_code

    t0 = time.monotonic()
    statuses = run_together(racing_update, clients)
    race_s = time.monotonic() - t0
    assert sorted(statuses) == [200] + [412] * (CLIENTS - 1), statuses

    attempts = [0] * CLIENTS

    def read_modify_write(i: int, client: httpx.Client) -> int:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            attempts[i] += 1
            got = client.get(f"Patient/{id_}")
            assert got.status_code == 200, got.text
            resource = got.json()
            resource.setdefault("identifier", []).append({"system": MARKER_SYSTEM, "value": f"client-{i}"})
            put = client.put(f"Patient/{id_}", json=resource, headers={"If-Match": got.headers["etag"]})
            if put.status_code == 200:
                return int(put.json()["meta"]["versionId"])
            assert put.status_code in (412, 503), f"{put.status_code}: {put.text}"
        raise AssertionError(f"client {i} did not get its update in within {DEADLINE} s")

    t0 = time.monotonic()
    won = run_together(read_modify_write, clients)
    rmw_s = time.monotonic() - t0
    assert len(set(won)) == CLIENTS, f"two clients were told they wrote the same version: {sorted(won)}"

    with server.client() as c:
        final = c.get(f"Patient/{id_}").json()
        history = _history(c, "Patient", id_)
    winners = _markers(final) - {f"client-{i}" for i in range(CLIENTS)}
    assert len(winners) == 1 and winners.pop().startswith("race-"), _markers(final)
    assert {f"client-{i}" for i in range(CLIENTS)} <= _markers(final), "an update was lost"
    n = 1 + 1 + CLIENTS  # create, the race's one winner, every read-modify-write client
    assert final["meta"]["versionId"] == str(n)
    versions = sorted(int(v["meta"]["versionId"]) for v in history)
    assert versions == list(range(1, n + 1)), f"versions not contiguous: {versions}"
    by_version = {int(v["meta"]["versionId"]): _markers(v) for v in history}
    for v in range(3, n + 1):  # each version is its predecessor plus exactly one client's marker
        added = by_version[v] - by_version[v - 1]
        assert by_version[v - 1] <= by_version[v] and len(added) == 1, (v, by_version[v - 1], by_version[v])
    print(f"[{server.store.backend} x{server.workers}] If-Match race {race_s:.2f} s; "
          f"read-modify-write {rmw_s:.2f} s, {sum(attempts)} attempts for {CLIENTS} updates")


def test_conditional_creates_make_one_resource(server: Server, clients: list[httpx.Client]) -> None:
    """10 racing If-None-Exist creates with one identifier make one resource: one 201, nine 200s naming it."""
    timings = []
    for _round in range(CREATE_ROUNDS):  # a few rounds: a race lost to scheduling once should not pass unseen
        system = f"urn:samverka:drill:{uuid.uuid4().hex[:12]}"
        body = {"resourceType": "Patient", "identifier": [{"system": system, "value": "same"}],
                "name": [{"family": "Drill"}]}

        def conditional_create(i: int, client: httpx.Client, body: Any = body, system: str = system) -> Any:
            r = client.post("Patient", json=body, headers={"If-None-Exist": f"identifier={system}|same"})
            return r.status_code, r.json().get("id", r.text)

        t0 = time.monotonic()
        results = run_together(conditional_create, clients[:CREATES])
        timings.append(time.monotonic() - t0)
        statuses = sorted(s for s, _ in results)
        assert statuses == [200] * (CREATES - 1) + [201], results
        assert len({id_ for _, id_ in results}) == 1, f"responses name different resources: {results}"
        with server.client() as c:
            assert count(c, f"Patient?identifier={system}|same") == 1
            assert count(c, f"Patient?identifier={system}|") == 1
    print(f"[{server.store.backend} x{server.workers}] {CREATE_ROUNDS} rounds of {CREATES} conditional creates, "
          f"{max(timings):.2f} s at most")
