"""read, vread, create, update, delete, patch, If-Match / If-None-Match / If-Modified-Since and Prefer.

https://hl7.org/fhir/R4/http.html -- every test runs against a real server on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from support.server import RunningServer, expect_outcome

PATCH_JSON = {"Content-Type": "application/json-patch+json"}


def _patient(uid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": f"urn:test:{uid}", "value": "1"}], **extra}


def test_create_returns_201_with_location_etag_last_modified_and_meta(server: RunningServer, uid: str) -> None:
    """POST stores version 1 and answers 201 with Location, ETag W/"1", Last-Modified and meta set."""
    r = server.client.post("/Patient", json=_patient(uid, gender="female"))
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    id_ = body["id"]
    assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", id_)
    assert body["meta"]["versionId"] == "1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", body["meta"]["lastUpdated"])
    assert r.headers["etag"] == 'W/"1"'
    location = r.headers["location"]
    assert location.endswith(f"Patient/{id_}/_history/1")
    # the Location resolves (RFC 3986, against the request URL) to the new version
    followed = server.client.get(str(r.request.url.join(location)))
    assert followed.status_code == 200, followed.text
    assert followed.json()["id"] == id_
    modified = parsedate_to_datetime(r.headers["last-modified"])
    assert modified.strftime("%Y-%m-%dT%H:%M:%S") == body["meta"]["lastUpdated"][:19]
    assert body["gender"] == "female"


def test_create_ignores_client_id_in_body(server: RunningServer, uid: str) -> None:
    """A create assigns its own id; an id in the body is ignored and not stored under that id."""
    client_id = f"mine-{uid}"
    r = server.client.post("/Patient", json=_patient(uid, id=client_id))
    assert r.status_code == 201, r.text
    assert r.json()["id"] != client_id
    assert server.client.get(f"/Patient/{client_id}").status_code == 404


def test_create_strips_client_version_and_last_updated(server: RunningServer, uid: str) -> None:
    """meta.versionId and meta.lastUpdated sent by the client are replaced by the server's values."""
    meta = {"versionId": "7", "lastUpdated": "2001-01-01T00:00:00Z"}
    r = server.client.post("/Patient", json=_patient(uid, meta=meta))
    assert r.status_code == 201, r.text
    assert r.json()["meta"]["versionId"] == "1"
    assert not r.json()["meta"]["lastUpdated"].startswith("2001")


def test_read_returns_current_version_with_etag(server: RunningServer, uid: str, make: Any) -> None:
    """GET [type]/[id] returns the stored resource with ETag and Last-Modified."""
    created = make(_patient(uid, birthDate="1970-05-06"))
    r = server.client.get(f"/Patient/{created['id']}")
    assert r.status_code == 200
    assert r.json() == created
    assert r.headers["etag"] == 'W/"1"'
    assert "last-modified" in r.headers


def test_read_unknown_id_returns_404_outcome(server: RunningServer, uid: str) -> None:
    """Reading an id that was never stored is a 404 with an OperationOutcome."""
    issues = expect_outcome(server.client.get(f"/Patient/never-{uid}"), 404)
    assert issues[0]["code"] == "not-found"


def test_read_invalid_id_returns_400(server: RunningServer) -> None:
    """An id outside [A-Za-z0-9-.]{1,64} is rejected with 400."""
    expect_outcome(server.client.get("/Patient/" + "x" * 65), 400)
    expect_outcome(server.client.get("/Patient/a_b"), 400)


def test_vread_returns_each_version(server: RunningServer, uid: str, make: Any) -> None:
    """GET [type]/[id]/_history/[vid] returns exactly that version's content."""
    v1 = make(_patient(uid, gender="male"))
    id_ = v1["id"]
    upd = server.client.put(f"/Patient/{id_}", json=_patient(uid, id=id_, gender="female"))
    assert upd.status_code == 200
    r1 = server.client.get(f"/Patient/{id_}/_history/1")
    r2 = server.client.get(f"/Patient/{id_}/_history/2")
    assert (r1.status_code, r2.status_code) == (200, 200)
    assert r1.json()["gender"] == "male" and r1.json()["meta"]["versionId"] == "1"
    assert r2.json()["gender"] == "female" and r2.json()["meta"]["versionId"] == "2"
    assert r1.headers["etag"] == 'W/"1"' and r2.headers["etag"] == 'W/"2"'


def test_vread_unknown_version_returns_404(server: RunningServer, uid: str, make: Any) -> None:
    """A version number that does not exist (or is not a number) is a 404."""
    id_ = make(_patient(uid))["id"]
    expect_outcome(server.client.get(f"/Patient/{id_}/_history/2"), 404)
    expect_outcome(server.client.get(f"/Patient/{id_}/_history/abc"), 404)


def test_update_returns_200_and_version_2(server: RunningServer, uid: str, make: Any) -> None:
    """PUT of an existing resource stores version 2 and answers 200 with ETag W/"2"."""
    id_ = make(_patient(uid))["id"]
    r = server.client.put(f"/Patient/{id_}", json=_patient(uid, id=id_, active=True))
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == 'W/"2"'
    assert r.json()["meta"]["versionId"] == "2"
    assert r.json()["active"] is True
    assert server.client.get(f"/Patient/{id_}").json()["active"] is True


def test_update_location_header_resolves_to_new_version(server: RunningServer, uid: str, make: Any) -> None:
    """The Location of an update, resolved against the request URL, is [base]/Patient/[id]/_history/2."""
    id_ = make(_patient(uid))["id"]
    r = server.client.put(f"/Patient/{id_}", json=_patient(uid, id=id_))
    assert r.status_code == 200
    target = r.request.url.join(r.headers["location"])
    assert str(target) == f"{server.base}/Patient/{id_}/_history/2"


def test_update_as_create_with_client_id_returns_201(server: RunningServer, uid: str) -> None:
    """PUT to a new id creates the resource under the client's id with 201 and version 1."""
    id_ = f"client-{uid}"
    r = server.client.put(f"/Patient/{id_}", json=_patient(uid, id=id_))
    assert r.status_code == 201, r.text
    assert r.headers["etag"] == 'W/"1"'
    assert r.json()["id"] == id_
    assert server.client.get(f"/Patient/{id_}").status_code == 200


def test_update_without_id_in_body_returns_400(server: RunningServer, uid: str) -> None:
    """An update whose body has no id is rejected (the spec requires the id)."""
    issues = expect_outcome(server.client.put(f"/Patient/noid-{uid}", json=_patient(uid)), 400)
    assert any("Patient.id" in (i.get("expression") or []) for i in issues)


def test_delete_returns_204_then_read_returns_410(server: RunningServer, uid: str, make: Any) -> None:
    """DELETE answers 204; a later read answers 410 Gone."""
    id_ = make(_patient(uid))["id"]
    r = server.client.delete(f"/Patient/{id_}")
    assert r.status_code == 204
    assert r.content == b""
    issues = expect_outcome(server.client.get(f"/Patient/{id_}"), 410)
    assert issues[0]["code"] == "deleted"


def test_delete_keeps_old_versions_readable(server: RunningServer, uid: str, make: Any) -> None:
    """After a delete, vread of the old version still answers 200."""
    id_ = make(_patient(uid, gender="other"))["id"]
    assert server.client.delete(f"/Patient/{id_}").status_code == 204
    r = server.client.get(f"/Patient/{id_}/_history/1")
    assert r.status_code == 200
    assert r.json()["gender"] == "other"


def test_delete_appears_in_instance_history(server: RunningServer, uid: str, make: Any) -> None:
    """The history of a deleted resource starts with a DELETE entry with no resource."""
    id_ = make(_patient(uid))["id"]
    assert server.client.delete(f"/Patient/{id_}").status_code == 204
    bundle = server.client.get(f"/Patient/{id_}/_history").json()
    assert bundle["type"] == "history"
    assert bundle["total"] == 2
    first, second = bundle["entry"]
    assert first["request"]["method"] == "DELETE"
    assert "resource" not in first
    assert first["response"]["etag"] == 'W/"2"'
    assert second["request"]["method"] == "POST"
    assert second["resource"]["meta"]["versionId"] == "1"


def test_delete_of_unknown_resource_returns_204(server: RunningServer, uid: str) -> None:
    """Deleting a resource that does not exist is not an error (nothing to do)."""
    assert server.client.delete(f"/Patient/nothing-{uid}").status_code in (200, 204)


def test_update_after_delete_recreates_with_next_version(server: RunningServer, uid: str, make: Any) -> None:
    """A PUT after a delete brings the resource back as version 3 with 201."""
    id_ = make(_patient(uid))["id"]
    assert server.client.delete(f"/Patient/{id_}").status_code == 204
    r = server.client.put(f"/Patient/{id_}", json=_patient(uid, id=id_))
    assert r.status_code == 201, r.text
    assert r.json()["meta"]["versionId"] == "3"
    assert server.client.get(f"/Patient/{id_}").status_code == 200


def test_patch_applies_json_patch(server: RunningServer, uid: str, make: Any) -> None:
    """PATCH with application/json-patch+json applies the operations and stores version 2."""
    id_ = make(_patient(uid, gender="male", name=[{"family": "Lind"}]))["id"]
    ops = [{"op": "replace", "path": "/gender", "value": "female"},
           {"op": "add", "path": "/name/0/given", "value": ["Kim"]},
           {"op": "test", "path": "/name/0/family", "value": "Lind"}]
    r = server.client.patch(f"/Patient/{id_}", json=ops, headers=PATCH_JSON)
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == 'W/"2"'
    stored = server.client.get(f"/Patient/{id_}").json()
    assert stored["gender"] == "female"
    assert stored["name"] == [{"family": "Lind", "given": ["Kim"]}]
    assert stored["meta"]["versionId"] == "2"


def test_patch_failing_test_op_returns_422_and_changes_nothing(server: RunningServer, uid: str, make: Any) -> None:
    """A JSON Patch whose `test` fails is rejected and the resource stays at version 1."""
    id_ = make(_patient(uid, gender="male"))["id"]
    ops = [{"op": "test", "path": "/gender", "value": "female"}, {"op": "remove", "path": "/gender"}]
    expect_outcome(server.client.patch(f"/Patient/{id_}", json=ops, headers=PATCH_JSON), 400, 409, 422)
    assert server.client.get(f"/Patient/{id_}").json()["meta"]["versionId"] == "1"


def test_patch_producing_invalid_resource_is_rejected(server: RunningServer, uid: str, make: Any) -> None:
    """A patch whose result fails validation is refused with the issue's expression; nothing is stored."""
    id_ = make(_patient(uid))["id"]
    ops = [{"op": "add", "path": "/gender", "value": "nonsense"}]
    issues = expect_outcome(server.client.patch(f"/Patient/{id_}", json=ops, headers=PATCH_JSON), 400, 422)
    assert any("Patient.gender" in (i.get("expression") or []) for i in issues)
    assert server.client.get(f"/Patient/{id_}").json()["meta"]["versionId"] == "1"


def test_patch_with_plain_json_content_type_returns_415(server: RunningServer, uid: str, make: Any) -> None:
    """PATCH needs application/json-patch+json; another media type is 415."""
    id_ = make(_patient(uid))["id"]
    r = server.client.patch(f"/Patient/{id_}", json=[{"op": "remove", "path": "/identifier"}],
                            headers={"Content-Type": "application/fhir+json"})
    expect_outcome(r, 415)


def test_patch_cannot_change_id(server: RunningServer, uid: str, make: Any) -> None:
    """A patch that rewrites the id is refused."""
    id_ = make(_patient(uid))["id"]
    r = server.client.patch(f"/Patient/{id_}", json=[{"op": "replace", "path": "/id", "value": "other"}],
                            headers=PATCH_JSON)
    expect_outcome(r, 400, 422)


def test_update_with_matching_if_match_succeeds(server: RunningServer, uid: str, make: Any) -> None:
    """If-Match with the current ETag lets the update through."""
    id_ = make(_patient(uid))["id"]
    r = server.client.put(f"/Patient/{id_}", json=_patient(uid, id=id_), headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text


def test_update_with_stale_if_match_returns_412(server: RunningServer, uid: str, make: Any) -> None:
    """If-Match with an old version is 412 and the resource is unchanged."""
    id_ = make(_patient(uid))["id"]
    assert server.client.put(f"/Patient/{id_}", json=_patient(uid, id=id_, active=True)).status_code == 200
    r = server.client.put(f"/Patient/{id_}", json=_patient(uid, id=id_, active=False), headers={"If-Match": 'W/"1"'})
    expect_outcome(r, 412)
    current = server.client.get(f"/Patient/{id_}").json()
    assert current["meta"]["versionId"] == "2" and current["active"] is True


def test_patch_with_stale_if_match_returns_412(server: RunningServer, uid: str, make: Any) -> None:
    """PATCH with If-Match on a version that is not current is 412."""
    id_ = make(_patient(uid))["id"]
    ops = [{"op": "add", "path": "/active", "value": True}]
    expect_outcome(server.client.patch(f"/Patient/{id_}", json=ops, headers={**PATCH_JSON, "If-Match": 'W/"2"'}), 412)
    ok = server.client.patch(f"/Patient/{id_}", json=ops, headers={**PATCH_JSON, "If-Match": 'W/"1"'})
    assert ok.status_code == 200, ok.text


def test_delete_with_stale_if_match_returns_412(server: RunningServer, uid: str, make: Any) -> None:
    """DELETE with a mismatching If-Match is 412 and the resource stays readable."""
    id_ = make(_patient(uid))["id"]
    expect_outcome(server.client.delete(f"/Patient/{id_}", headers={"If-Match": 'W/"5"'}), 412)
    assert server.client.get(f"/Patient/{id_}").status_code == 200
    assert server.client.delete(f"/Patient/{id_}", headers={"If-Match": 'W/"1"'}).status_code == 204


def test_malformed_if_match_returns_400(server: RunningServer, uid: str, make: Any) -> None:
    """An If-Match that is not an ETag is a 400."""
    id_ = make(_patient(uid))["id"]
    expect_outcome(server.client.put(f"/Patient/{id_}", json=_patient(uid, id=id_), headers={"If-Match": "abc"}), 400)


def test_read_with_matching_if_none_match_returns_304(server: RunningServer, uid: str, make: Any) -> None:
    """If-None-Match with the current ETag answers 304 with no body; another ETag gets 200."""
    id_ = make(_patient(uid))["id"]
    r = server.client.get(f"/Patient/{id_}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == 'W/"1"'
    assert server.client.get(f"/Patient/{id_}", headers={"If-None-Match": 'W/"0"'}).status_code == 200


def test_read_with_if_modified_since_returns_304_when_unchanged(server: RunningServer, uid: str, make: Any) -> None:
    """If-Modified-Since at or after Last-Modified answers 304; an earlier date answers 200."""
    id_ = make(_patient(uid))["id"]
    last_modified = server.client.get(f"/Patient/{id_}").headers["last-modified"]
    r = server.client.get(f"/Patient/{id_}", headers={"If-Modified-Since": last_modified})
    assert r.status_code == 304
    assert r.content == b""
    earlier = format_datetime(parsedate_to_datetime(last_modified).replace(year=2001), usegmt=True)
    assert server.client.get(f"/Patient/{id_}", headers={"If-Modified-Since": earlier}).status_code == 200


def test_prefer_return_minimal_sends_no_body(server: RunningServer, uid: str) -> None:
    """Prefer: return=minimal answers 201 with headers and an empty body."""
    r = server.client.post("/Patient", json=_patient(uid), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201
    assert r.content == b""
    assert r.headers["etag"] == 'W/"1"'
    assert "/_history/1" in r.headers["location"]


def test_prefer_return_representation_sends_resource(server: RunningServer, uid: str, make: Any) -> None:
    """Prefer: return=representation answers with the stored resource."""
    id_ = make(_patient(uid))["id"]
    r = server.client.put(f"/Patient/{id_}", json=_patient(uid, id=id_), headers={"Prefer": "return=representation"})
    assert r.status_code == 200
    assert r.json()["resourceType"] == "Patient" and r.json()["meta"]["versionId"] == "2"


def test_prefer_return_operation_outcome_sends_outcome(server: RunningServer, uid: str) -> None:
    """Prefer: return=OperationOutcome answers with an OperationOutcome instead of the resource."""
    r = server.client.post("/Patient", json=_patient(uid), headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 201
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "information"
    assert r.headers["etag"] == 'W/"1"'


def test_meta_source_tags_security_and_profiles_survive_create_and_update(server: RunningServer, uid: str) -> None:
    """meta.source, meta.tag, meta.security and meta.profile are kept by create and by update."""
    meta = {
        "source": f"urn:source:{uid}#abc",
        "profile": ["http://example.org/StructureDefinition/my-patient"],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
        "tag": [{"system": "urn:tags", "code": f"t-{uid}", "display": "test"}],
    }
    created = server.client.post("/Patient", json=_patient(uid, meta=meta))
    assert created.status_code == 201, created.text
    id_ = created.json()["id"]
    for key, value in meta.items():
        assert created.json()["meta"][key] == value
    meta2 = {**meta, "tag": [*meta["tag"], {"system": "urn:tags", "code": "second"}]}
    updated = server.client.put(f"/Patient/{id_}", json=_patient(uid, id=id_, meta=meta2))
    assert updated.status_code == 200, updated.text
    stored = server.client.get(f"/Patient/{id_}").json()["meta"]
    assert stored["versionId"] == "2"
    for key, value in meta2.items():
        assert stored[key] == value
    assert server.client.get(f"/Patient/{id_}/_history/1").json()["meta"]["tag"] == meta["tag"]


def test_created_resource_is_found_by_lastupdated(server: RunningServer, uid: str, make: Any) -> None:
    """The stamped meta.lastUpdated is indexed: _lastUpdated=ge<that instant> finds the resource."""
    created = make(_patient(uid))
    since = created["meta"]["lastUpdated"]
    r = server.client.get("/Patient", params={"_id": created["id"], "_lastUpdated": f"ge{since}"})
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [created["id"]]
    r = server.client.get("/Patient", params={"_id": created["id"], "_lastUpdated": "lt2001-01-01"})
    assert r.json().get("entry", []) == []


def test_head_read_answers_without_body(server: RunningServer, uid: str, make: Any) -> None:
    """HEAD on a resource answers 200 with the ETag and no body."""
    id_ = make(_patient(uid))["id"]
    r = server.client.head(f"/Patient/{id_}")
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"1"'
    assert r.content == b""

