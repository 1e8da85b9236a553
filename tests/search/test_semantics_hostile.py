"""Absurd search input against a running server: a clean 400 naming the parameter, or an empty result.

https://hl7.org/fhir/R4/search.html#errors -- never a 500 and never a hang; after each request the server
still answers /fhir/metadata. One `samverka serve` subprocess per backend for this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.server import BACKENDS, RunningServer, expect_outcome, launch


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A running server on SQLite or PostgreSQL with one Patient and one Observation."""
    srv = launch(request, str(request.param), Path(tmp_path_factory.mktemp(f"hostile-{request.param}")))
    srv.client.put("/Patient/h1", json={"resourceType": "Patient", "id": "h1", "name": [{"family": "Öberg"}],
                                        "birthDate": "1950-01-01"})
    srv.client.put("/Observation/h2", json={"resourceType": "Observation", "id": "h2", "status": "final",
                                            "code": {"text": "x"}, "valueQuantity": {"value": 1}})
    try:
        yield srv
    finally:
        srv.stop()


def _still_alive(server: RunningServer) -> None:
    assert server.client.get("/metadata").status_code == 200


def _rejected(server: RunningServer, type_: str, name: str, value: str) -> None:
    r = server.client.post(f"/{type_}/_search", data={name: value})
    issues = expect_outcome(r, 400)
    assert issues[0].get("expression") == [name], issues
    _still_alive(server)


def _empty(server: RunningServer, type_: str, name: str, value: str) -> None:
    r = server.client.post(f"/{type_}/_search", data={name: value})
    assert r.status_code == 200, r.text
    assert [e for e in r.json().get("entry", []) if e["search"]["mode"] == "match"] == []
    _still_alive(server)


SQL = ["' OR 1=1 --", "x'; DROP TABLE resources; --", "\" OR \"\"=\"", "%' OR '%'='", "1) OR (1=1", "\\'; --"]


@pytest.mark.parametrize("value", SQL)
@pytest.mark.parametrize(("type_", "name"), [
    ("Patient", "name"), ("Patient", "name:exact"), ("Patient", "name:contains"), ("Patient", "identifier"),
    ("Patient", "gender:not"), ("Patient", "_id"), ("Patient", "general-practitioner"), ("Patient", "_profile"),
    ("Observation", "value-quantity"), ("Observation", "code-value-quantity"), ("Patient", "birthdate"),
])
def test_sql_metacharacters_are_plain_data(server: RunningServer, type_: str, name: str, value: str) -> None:
    """SQL metacharacters either match nothing or are rejected as malformed, never executed."""
    r = server.client.post(f"/{type_}/_search", data={name: value})
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        ids = [e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]
        assert ids == (["h1"] if name.endswith(":not") else [])  # :not: every Patient lacks that gender
    else:
        assert expect_outcome(r, 400)[0]["expression"] == [name]
    assert server.client.get("/Patient/h1").status_code == 200
    _still_alive(server)


@pytest.mark.parametrize(("type_", "name", "value"), [
    ("Patient", "_id", ",".join(f"id{i}" for i in range(10_000))),
    ("Patient", "name", ",".join("x" * 3 for _ in range(10_000))),
    ("Patient", "birthdate", "x" * 9000),
    ("Patient", "name", "a" * 9000),
    ("Patient", "birthdate", "2013-13-45"), ("Patient", "birthdate", "gt"), ("Patient", "birthdate", "xx2013"),
    ("Patient", "birthdate", "\x00"), ("Patient", "name", "a\x00b"), ("Patient", "identifier", "\x00|\x00"),
    ("Patient", "_id", "\x00"), ("Observation", "value-quantity", "1e99999999"),
    ("Observation", "value-quantity", "gt"), ("Observation", "value-quantity", "1|2|3|4"),
    ("Observation", "value-quantity", "zz5"), ("Patient", "name:foo", "x"), ("Patient", "birthdate:exact", "2013"),
    ("Patient", "gender:contains", "f"), ("Patient", "_id:below", "x"),
    ("Patient", "identifier:in", "urn:no-such-value-set"),
])
def test_malformed_values_are_a_400_naming_the_parameter(server: RunningServer, type_: str, name: str,
                                                         value: str) -> None:
    """Too many alternatives, oversized, malformed, NUL-bearing values and unknown modifiers: 400."""
    _rejected(server, type_, name, value)


def test_fifty_deep_chain_is_a_400(server: RunningServer) -> None:
    """A chain 50 links deep is refused, naming the parameter."""
    name = "organization" + ".partof" * 49 + ".name"
    _rejected(server, "Patient", name, "x")


@pytest.mark.parametrize(("type_", "name", "value"), [
    ("Patient", "name", "\x01\x02\x1f"), ("Patient", "name", "a" * 8000), ("Patient", "identifier", "|||"),
    ("Patient", "name", "\U0010ffff"), ("Patient", "_profile", "\u202e\ufeff"), ("Patient", "name:contains", "%%__"),
])
def test_odd_but_valid_values_give_an_empty_result(server: RunningServer, type_: str, name: str, value: str) -> None:
    """Control characters, long values and LIKE wildcards are searched as text and match nothing."""
    _empty(server, type_, name, value)
