"""Search basics over HTTP: token, _id, reference, string, date, :missing, paging, handling.

https://hl7.org/fhir/R4/search.html -- each test scopes its searches with an identifier system of its
own (`identifier=urn:search:<uid>|`), so data from other tests never matches.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.server import RunningServer, expect_outcome


def _ids(server: RunningServer, type_: str, params: Any) -> list[str]:
    r = server.client.get(f"/{type_}", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "searchset"
    return sorted(e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == "match")


class People:
    """A few Patients sharing one identifier system: `scope` restricts a search to them."""

    def __init__(self, server: RunningServer, uid: str) -> None:
        self.server = server
        self.system = f"urn:search:{uid}"
        self.scope = ("identifier", f"{self.system}|")

    def add(self, key: str, **fields: Any) -> str:
        body = {"resourceType": "Patient", "identifier": [{"system": self.system, "value": key}], **fields}
        r = self.server.client.post("/Patient", json=body)
        assert r.status_code == 201, r.text
        id_: str = r.json()["id"]
        return id_

    def find(self, *params: tuple[str, str]) -> list[str]:
        return _ids(self.server, "Patient", [self.scope, *params])


@pytest.fixture
def people(server: RunningServer, uid: str) -> People:
    return People(server, uid)


def test_token_system_and_value(people: People) -> None:
    """identifier=sys|val matches that identifier only."""
    a, b = people.add("a"), people.add("b")
    assert _ids(people.server, "Patient", {"identifier": f"{people.system}|a"}) == [a]
    assert _ids(people.server, "Patient", {"identifier": f"{people.system}|b"}) == [b]
    assert _ids(people.server, "Patient", {"identifier": f"{people.system}|c"}) == []


def test_token_system_only_matches_any_code(people: People) -> None:
    """identifier=sys| matches every identifier in that system."""
    ids = sorted([people.add("a"), people.add("b")])
    assert _ids(people.server, "Patient", {"identifier": f"{people.system}|"}) == ids


def test_token_code_without_system_matches_any_system(server: RunningServer, uid: str) -> None:
    """code=<code> matches the code in any system, and codes without a system."""
    code = f"c-{uid}"
    with_sys = server.client.post("/Observation", json={
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]}}).json()["id"]
    no_sys = server.client.post("/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"coding": [{"code": code}]}}).json()["id"]
    other_sys = server.client.post("/Observation", json={
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "urn:other", "code": code}]}}).json()["id"]
    assert _ids(server, "Observation", {"code": code}) == sorted([with_sys, no_sys, other_sys])
    assert _ids(server, "Observation", {"code": f"|{code}"}) == [no_sys]
    assert _ids(server, "Observation", {"code": f"http://loinc.org|{code}"}) == [with_sys]
    assert _ids(server, "Observation", {"code": f"http://loinc.org|{code},urn:other|{code}"}) == sorted(
        [with_sys, other_sys])


def test_token_gender_and_not(people: People) -> None:
    """gender=female matches; gender:not=female excludes."""
    f, m = people.add("f", gender="female"), people.add("m", gender="male")
    assert people.find(("gender", "female")) == [f]
    assert people.find(("gender:not", "female")) == [m]


def test_search_by_id_with_alternatives(people: People) -> None:
    """_id=a,b matches both resources; _id=a only the one."""
    a, b = people.add("a"), people.add("b")
    people.add("c")
    assert people.find(("_id", f"{a},{b}")) == sorted([a, b])
    assert people.find(("_id", a)) == [a]


def test_reference_by_type_and_id_and_by_bare_id(server: RunningServer, uid: str) -> None:
    """subject=Patient/x, subject=x, subject:Patient=x and patient=x all find the Observation about x."""
    pid = server.client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    other = server.client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": uid}}
    mine = server.client.post("/Observation", json={**obs, "subject": {"reference": f"Patient/{pid}"}}).json()["id"]
    server.client.post("/Observation", json={**obs, "subject": {"reference": f"Patient/{other}"}})
    for params in ({"subject": f"Patient/{pid}"}, {"subject": pid}, {"subject:Patient": pid}, {"patient": pid}):
        assert _ids(server, "Observation", params) == [mine], params
    assert _ids(server, "Observation", {"subject": f"Patient/none-{uid}"}) == []


@pytest.mark.parametrize(("query", "matches"), [
    ("oberg", ["Öberg"]), ("Öberg", ["Öberg"]), ("OBERG", ["Öberg"]), ("öb", ["Öberg"]),
    ("åsa", ["Åsa", "Asa"]), ("asa", ["Åsa", "Asa"]), ("Åsa", ["Åsa", "Asa"]),
    ("lindström", ["Lindström"]), ("lindstrom", ["Lindström"]), ("berg", []),
])
def test_string_search_ignores_case_and_swedish_accents(people: People, query: str, matches: list[str]) -> None:
    """name=<prefix> is case- and accent-insensitive: oberg finds Öberg, åsa finds Åsa (and Asa)."""
    ids = {n: people.add(n, name=[{"family": n}]) for n in ("Öberg", "Åsa", "Asa", "Lindström")}
    assert people.find(("name", query)) == sorted(ids[n] for n in matches)


def test_string_exact_is_case_and_accent_sensitive(people: People) -> None:
    """name:exact=Öberg matches only the exact string."""
    o = people.add("o", name=[{"family": "Öberg"}])
    people.add("p", name=[{"family": "Oberg"}])
    assert people.find(("name:exact", "Öberg")) == [o]
    assert people.find(("name:exact", "öberg")) == []


def test_string_given_and_family(people: People) -> None:
    """given= and family= search their own parts of the name."""
    a = people.add("a", name=[{"family": "Sjöberg", "given": ["Märta"]}])
    assert people.find(("given", "marta")) == [a]
    assert people.find(("family", "sjoberg")) == [a]
    assert people.find(("family", "marta")) == []


@pytest.mark.parametrize(("query", "matches"), [
    ("1980-04-05", ["b1980"]), ("eq1980-04-05", ["b1980"]), ("1980", ["b1980"]), ("1980-04", ["b1980"]),
    ("ne1980-04-05", ["b1975", "b1990"]), ("gt1980-04-05", ["b1990"]), ("ge1980-04-05", ["b1980", "b1990"]),
    ("lt1980-04-05", ["b1975"]), ("le1980", ["b1975", "b1980"]), ("sa1980", ["b1990"]), ("eb1980", ["b1975"]),
    ("gt2000", []),
])
def test_date_search_with_prefixes(people: People, query: str, matches: list[str]) -> None:
    """birthdate with eq/ne/gt/ge/lt/le/sa/eb prefixes and partial dates follows the spec's range rules."""
    ids = {"b1975": people.add("a", birthDate="1975-12-31"), "b1980": people.add("b", birthDate="1980-04-05"),
           "b1990": people.add("c", birthDate="1990-01-01")}
    assert people.find(("birthdate", query)) == sorted(ids[k] for k in matches)


def test_invalid_date_value_returns_400(people: People) -> None:
    """birthdate=<not a date> is a 400, not an empty result."""
    r = people.server.client.get("/Patient", params={"birthdate": "yesterday"})
    expect_outcome(r, 400)


def test_missing_modifier(people: People) -> None:
    """birthdate:missing=true finds those without a birth date; false those with one."""
    with_date = people.add("a", birthDate="2001-01-01")
    without = people.add("b")
    assert people.find(("birthdate:missing", "true")) == [without]
    assert people.find(("birthdate:missing", "false")) == [with_date]


def test_missing_modifier_with_bad_value_returns_400(people: People) -> None:
    """:missing takes only true or false."""
    expect_outcome(people.server.client.get("/Patient", params={"birthdate:missing": "maybe"}), 400)


def test_count_pages_with_next_links_through_all_matches(people: People) -> None:
    """_count=2 over 5 matches gives 3 pages via next links, each match once, none missing."""
    ids = sorted(people.add(str(n)) for n in range(5))
    r = people.server.client.get("/Patient", params=[people.scope, ("_count", "2")])
    seen: list[str] = []
    pages = 0
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        entries = [e for e in body.get("entry", []) if e["search"]["mode"] == "match"]
        assert len(entries) <= 2
        seen += [e["resource"]["id"] for e in entries]
        nxt = [link["url"] for link in body["link"] if link["relation"] == "next"]
        if not nxt:
            break
        assert nxt[0].startswith(people.server.base)
        r = people.server.client.get(nxt[0])
    assert pages == 3
    assert len(seen) == len(set(seen)) and sorted(seen) == ids


def test_total_is_reported_when_accurate_is_asked(people: People) -> None:
    """_total=accurate reports the number of matches even when paging."""
    for n in range(3):
        people.add(str(n))
    body = people.server.client.get("/Patient", params=[people.scope, ("_count", "1"), ("_total", "accurate")]).json()
    assert body["total"] == 3
    assert len(body["entry"]) == 1


def test_search_excludes_deleted_resources(people: People) -> None:
    """A deleted resource no longer matches; its update's new values do not linger either."""
    a, b = people.add("a"), people.add("b")
    assert people.server.client.delete(f"/Patient/{a}").status_code == 204
    assert people.find() == [b]


def test_search_sees_updated_values_only(people: People) -> None:
    """After an update, the old value no longer matches and the new one does."""
    a = people.add("a", gender="male")
    body = {"resourceType": "Patient", "id": a, "identifier": [{"system": people.system, "value": "a"}],
            "gender": "female"}
    assert people.server.client.put(f"/Patient/{a}", json=body).status_code == 200
    assert people.find(("gender", "male")) == []
    assert people.find(("gender", "female")) == [a]


def test_unknown_parameter_with_strict_handling_returns_400(people: People) -> None:
    """Prefer: handling=strict turns an unknown search parameter into a 400 naming it."""
    people.add("a")
    r = people.server.client.get("/Patient", params=[people.scope, ("shoe-size", "42")],
                                 headers={"Prefer": "handling=strict"})
    issues = expect_outcome(r, 400)
    assert "shoe-size" in str(issues)


def test_unknown_parameter_lenient_is_ignored_and_reported(people: People) -> None:
    """By default an unknown parameter is ignored and reported in an OperationOutcome entry."""
    a = people.add("a")
    r = people.server.client.get("/Patient", params=[people.scope, ("shoe-size", "42")])
    assert r.status_code == 200
    entries = r.json()["entry"]
    assert [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"] == [a]
    (outcome,) = [e["resource"] for e in entries if e["search"]["mode"] == "outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert any("shoe-size" in str(i) for i in outcome["issue"])
    self_link = next(link["url"] for link in r.json()["link"] if link["relation"] == "self")
    assert "shoe-size" not in self_link


def test_post_search_with_form_body(people: People) -> None:
    """POST [type]/_search with a form body searches like GET."""
    a = people.add("a", gender="other")
    r = people.server.client.post("/Patient/_search", data={"identifier": f"{people.system}|", "gender": "other"})
    assert r.status_code == 200, r.text
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [a]


def test_system_search_by_id(server: RunningServer, uid: str) -> None:
    """GET [base]?_id=x searches across types."""
    p = server.client.put(f"/Patient/sys-{uid}", json={"resourceType": "Patient", "id": f"sys-{uid}"})
    assert p.status_code == 201
    r = server.client.get("", params={"_id": f"sys-{uid}"})
    assert r.status_code == 200, r.text
    assert [(e["resource"]["resourceType"], e["resource"]["id"]) for e in r.json()["entry"]] == [
        ("Patient", f"sys-{uid}")]
