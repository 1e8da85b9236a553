"""Bad input: malformed or hostile bodies, size limits, SQL metacharacters, unknown types and routes.

After each refusal the server must still answer /fhir/metadata. The size limits run on a second server
per backend started with a small `--max-body-bytes` and `--max-bundle-entries`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from support.server import BACKENDS, RunningServer, expect_outcome, launch

MAX_BODY = 4096
MAX_ENTRIES = 5
HOSTILE = ["'; DROP TABLE resources; --", "100%", "a_b", "back\\slash", 'say "hi"', "O'Brien", "x' OR '1'='1"]


@pytest.fixture(scope="module", params=BACKENDS)
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with --max-body-bytes 4096 and --max-bundle-entries 5."""
    backend = str(request.param)
    srv = launch(request, backend, tmp_path_factory.mktemp(f"limited-{backend}"),
                 ["--max-body-bytes", str(MAX_BODY), "--max-bundle-entries", str(MAX_ENTRIES)])
    try:
        yield srv
    finally:
        srv.stop()


def _still_serving(server: RunningServer) -> None:
    assert server.alive(), server.log()
    r = server.client.get("/metadata")
    assert r.status_code == 200
    assert r.json()["resourceType"] == "CapabilityStatement"


def _search_escape(value: str) -> str:
    """FHIR search escaping of `\\`, `,`, `$` and `|` (https://hl7.org/fhir/R4/search.html#escaping)."""
    for ch in ("\\", ",", "$", "|"):
        value = value.replace(ch, "\\" + ch)
    return value


@pytest.mark.parametrize("body", [b"{not json", b'{"resourceType": "Patient",}', b"\xff\xfe\x00", b'{"a": 1'],
                         ids=["garbage", "trailing-comma", "not-utf8", "truncated"])
def test_malformed_json_returns_400_outcome(server: RunningServer, body: bytes) -> None:
    """A body that is not JSON is a 400 OperationOutcome saying so; the server keeps serving."""
    issues = expect_outcome(server.client.post("/Patient", content=body,
                                               headers={"Content-Type": "application/fhir+json"}), 400)
    assert "JSON" in str(issues[0]["diagnostics"])
    _still_serving(server)


@pytest.mark.parametrize("body", [[{"resourceType": "Patient"}], "Patient", 42, None, True],
                         ids=["array", "string", "number", "null", "boolean"])
def test_json_that_is_not_a_resource_returns_400(server: RunningServer, body: Any) -> None:
    """A JSON array, string, number, null or boolean is not a resource: 400 with a clear outcome."""
    issues = expect_outcome(server.client.post("/Patient", content=json.dumps(body).encode(),
                                               headers={"Content-Type": "application/fhir+json"}), 400)
    assert "resource" in str(issues[0]["diagnostics"]).lower()
    _still_serving(server)


def test_empty_body_returns_400(server: RunningServer) -> None:
    """A create with no body is a 400."""
    expect_outcome(server.client.post("/Patient", content=b"", headers={"Content-Type": "application/fhir+json"}), 400)


def test_wrong_resource_type_in_body_returns_400(server: RunningServer) -> None:
    """POST /Patient with an Observation is refused with an outcome naming both types."""
    issues = expect_outcome(server.client.post("/Patient", json={"resourceType": "Observation"}), 400)
    assert "Observation" in str(issues[0]["diagnostics"]) and "Patient" in str(issues[0]["diagnostics"])


def test_unknown_resource_type_in_body_returns_4xx(server: RunningServer) -> None:
    """A body whose resourceType is not an R4 type is refused."""
    expect_outcome(server.client.post("/Patient", json={"resourceType": "Patientt"}), 400, 404, 422)


@pytest.mark.parametrize("shape", ["objects", "arrays"])
def test_json_nested_10000_deep_returns_4xx(server: RunningServer, shape: str) -> None:
    """JSON nested 10,000 levels deep is refused with a 4xx, not a crash."""
    depth = 10_000
    inner = '{"a":' * depth + "1" + "}" * depth if shape == "objects" else "[" * depth + "]" * depth
    body = '{"resourceType":"Patient","extension":' + inner + "}"
    r = server.client.post("/Patient", content=body.encode(), headers={"Content-Type": "application/fhir+json"})
    expect_outcome(r, 400, 413, 422)
    _still_serving(server)


def test_resource_nested_deeper_than_validator_limit_returns_4xx(server: RunningServer) -> None:
    """A parseable resource with 400 levels of nested extensions (800 JSON levels) is refused, not a 500."""
    levels = 400
    node = '{"url":"urn:x","extension":[' * levels + '{"url":"urn:x","valueString":"leaf"}' + "]}" * levels
    body = '{"resourceType":"Patient","extension":[' + node + "]}"
    r = server.client.post("/Patient", content=body.encode(), headers={"Content-Type": "application/fhir+json"})
    expect_outcome(r, 400, 413, 422)
    _still_serving(server)


def test_oversized_body_returns_413(limited: RunningServer) -> None:
    """A body over --max-body-bytes (with Content-Length) is a 413; the server keeps serving."""
    body = {"resourceType": "Patient", "name": [{"family": "x" * (MAX_BODY + 10)}]}
    expect_outcome(limited.client.post("/Patient", json=body), 413)
    _still_serving(limited)


def test_oversized_chunked_body_returns_413(limited: RunningServer) -> None:
    """A chunked body (no Content-Length) that grows past the limit is a 413 too."""
    def chunks() -> Iterator[bytes]:
        yield b'{"resourceType":"Patient","name":[{"family":"'
        for _ in range(10):
            yield b"y" * 1024
        yield b'"}]}'

    r = limited.client.post("/Patient", content=chunks(), headers={"Content-Type": "application/fhir+json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    expect_outcome(r, 413)
    _still_serving(limited)


def test_body_under_the_limit_is_accepted(limited: RunningServer) -> None:
    """A body just under --max-body-bytes is accepted (the limit is not off by much)."""
    body = {"resourceType": "Patient", "name": [{"family": "z" * (MAX_BODY - 200)}]}
    assert len(json.dumps(body)) < MAX_BODY
    assert limited.client.post("/Patient", json=body).status_code == 201


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_bundle_over_max_entries_returns_413(limited: RunningServer, kind: str) -> None:
    """A batch or transaction with more than --max-bundle-entries entries is a 413; nothing is stored."""
    entries = [{"request": {"method": "DELETE", "url": f"Patient/nothing-{i}"}} for i in range(MAX_ENTRIES + 1)]
    expect_outcome(limited.client.post("", json={"resourceType": "Bundle", "type": kind, "entry": entries}), 413)
    _still_serving(limited)
    ok = limited.client.post("", json={"resourceType": "Bundle", "type": kind, "entry": entries[:MAX_ENTRIES]})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("value", HOSTILE)
def test_sql_metacharacters_in_strings_are_stored_verbatim_and_searchable(
    server: RunningServer, uid: str, value: str
) -> None:
    """Quotes, %, _, backslashes and SQL fragments in a name are stored as text and match name:exact only."""
    system = f"urn:sql:{uid}"
    decoy = server.client.post("/Patient", json={"resourceType": "Patient", "identifier": [{"system": system}],
                                                 "name": [{"family": "plain"}]})
    r = server.client.post("/Patient", json={"resourceType": "Patient", "identifier": [{"system": system}],
                                             "name": [{"family": value, "given": [value]}]})
    assert r.status_code == 201, r.text
    id_ = r.json()["id"]
    stored = server.client.get(f"/Patient/{id_}").json()
    assert stored["name"] == [{"family": value, "given": [value]}]
    found = server.client.get("/Patient", params={"identifier": f"{system}|", "name:exact": _search_escape(value)})
    assert found.status_code == 200, found.text
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [id_]
    contains = server.client.get("/Patient", params={"identifier": f"{system}|",
                                                     "family:contains": _search_escape(value)})
    assert [e["resource"]["id"] for e in contains.json()["entry"]] == [id_]
    assert decoy.status_code == 201
    everyone = server.client.get("/Patient", params={"identifier": f"{system}|"}).json()
    assert everyone["total"] == 2  # the table is still there and holds both


def test_like_wildcards_do_not_match_everything(server: RunningServer, uid: str) -> None:
    """name:contains=% and name:contains=_ match only names that contain those characters."""
    system = f"urn:sql:{uid}"
    ids = {}
    for family in ("100%", "a_b", "plain"):
        r = server.client.post("/Patient", json={"resourceType": "Patient", "identifier": [{"system": system}],
                                                 "name": [{"family": family}]})
        ids[family] = r.json()["id"]
    for needle, family in (("%", "100%"), ("_", "a_b")):
        r = server.client.get("/Patient", params={"identifier": f"{system}|", "name:contains": needle})
        assert [e["resource"]["id"] for e in r.json()["entry"]] == [ids[family]]


def test_sql_metacharacters_in_token_values_are_literal(server: RunningServer, uid: str) -> None:
    """An identifier value with SQL in it is matched literally, and a near miss finds nothing."""
    value = "1' OR '1'='1"
    system = f"urn:sql:{uid}"
    r = server.client.post("/Patient", json={"resourceType": "Patient",
                                             "identifier": [{"system": system, "value": value}]})
    assert r.status_code == 201
    hit = server.client.get("/Patient", params={"identifier": f"{system}|{value}"}).json()
    assert [e["resource"]["id"] for e in hit["entry"]] == [r.json()["id"]]
    miss = server.client.get("/Patient", params={"identifier": f"{system}|1' OR 'x'='x"}).json()
    assert miss.get("entry", []) == []


@pytest.mark.parametrize("suffix", ["--1", "a.b--c", "x-.-y", "--"])
def test_ids_with_valid_punctuation_round_trip(server: RunningServer, uid: str, suffix: str) -> None:
    """Ids using '-' and '.' (SQL comment look-alikes included) are stored and read back verbatim."""
    id_ = f"{uid}{suffix}"
    r = server.client.put(f"/Patient/{id_}", json={"resourceType": "Patient", "id": id_})
    assert r.status_code == 201, r.text
    assert server.client.get(f"/Patient/{id_}").json()["id"] == id_
    found = server.client.get("/Patient", params={"_id": id_}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [id_]


@pytest.mark.parametrize("bad_id", ["'; DROP TABLE resources; --", "a'b", "a%b", "a_b", 'a"b', "a\\b"])
def test_ids_with_sql_metacharacters_are_refused(server: RunningServer, bad_id: str) -> None:
    """Ids outside the FHIR id alphabet are a 4xx (never executed); the store keeps working."""
    from urllib.parse import quote

    r = server.client.put(f"/Patient/{quote(bad_id, safe='')}", json={"resourceType": "Patient", "id": bad_id})
    expect_outcome(r, 400, 404)
    read = server.client.get(f"/Patient/{quote(bad_id, safe='')}")
    assert 400 <= read.status_code < 500
    _still_serving(server)
    assert server.client.get("/Patient", params={"_count": "1"}).status_code == 200


def test_search_by_id_with_sql_is_harmless(server: RunningServer) -> None:
    """_id=<SQL> finds nothing and breaks nothing."""
    r = server.client.get("/Patient", params={"_id": "x' OR '1'='1"})
    assert r.status_code in (200, 400)
    if r.status_code == 200:
        assert r.json().get("entry", []) == []
    _still_serving(server)


def test_unknown_resource_type_returns_404(server: RunningServer) -> None:
    """GET, POST and search on a type that is not in R4 answer 404 with an outcome."""
    expect_outcome(server.client.get("/Patientt/1"), 404)
    expect_outcome(server.client.get("/Patientt"), 404)
    expect_outcome(server.client.post("/Patientt", json={"resourceType": "Patientt"}), 404)


@pytest.mark.parametrize("path", ["/Patient/1/foo/bar/baz", "/Patient/1/_history/1/extra", "/_nothing/here"])
def test_unknown_route_returns_4xx_outcome(server: RunningServer, path: str) -> None:
    """A path that is no FHIR interaction answers a 4xx OperationOutcome."""
    r = server.client.get(path)
    assert 400 <= r.status_code < 500
    expect_outcome(r, r.status_code)


def test_unsupported_operation_returns_outcome(server: RunningServer) -> None:
    """An operation the server does not implement answers an OperationOutcome, not a crash."""
    r = server.client.post("/Patient/$everything", json={"resourceType": "Parameters"})
    assert r.status_code in (400, 404, 405, 501)
    expect_outcome(r, r.status_code)


def test_write_to_metadata_is_refused(server: RunningServer) -> None:
    """DELETE /metadata is refused with an outcome; metadata is still served."""
    r = server.client.delete("/metadata")
    assert 400 <= r.status_code < 500
    expect_outcome(r, r.status_code)
    _still_serving(server)
