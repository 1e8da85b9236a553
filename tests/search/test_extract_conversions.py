"""Index value conversions: dates, numbers, strings, tokens, references, composites (https://hl7.org/fhir/R4/search.html)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from samverka.search.extract import extract, patient_compartment, raw_values
from samverka.search.normalize import (
    DATE_MAX_US,
    DATE_MIN_US,
    date_range,
    norm_string,
    number_range,
    parse_reference,
)
from samverka.search.params import Registry, param_id
from samverka.store.hashing import h64

REG = Registry.default()


def us(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> int:
    return int(datetime(y, m, d, hh, mm, ss, tzinfo=UTC).timestamp()) * 1_000_000


def pid(rtype: str, code: str) -> int:
    p = REG.get(rtype, code)
    assert p is not None
    return p.id


# --- dates ---------------------------------------------------------------------------------------


def test_date_precisions() -> None:
    assert date_range("2020") == (us(2020, 1, 1), us(2021, 1, 1) - 1)
    assert date_range("2020-02") == (us(2020, 2, 1), us(2020, 3, 1) - 1)
    assert date_range("2020-12") == (us(2020, 12, 1), us(2021, 1, 1) - 1)
    assert date_range("2020-02-29") == (us(2020, 2, 29), us(2020, 3, 1) - 1)
    assert date_range("2020-02-29T10:11:12Z") == (us(2020, 2, 29, 10, 11, 12), us(2020, 2, 29, 10, 11, 13) - 1)
    assert date_range("2020-02-29T10:11") == (us(2020, 2, 29, 10, 11), us(2020, 2, 29, 10, 12) - 1)


def test_date_fractions() -> None:
    base = us(2020, 1, 1, 10, 0, 0)
    assert date_range("2020-01-01T10:00:00.5Z") == (base + 500_000, base + 599_999)
    assert date_range("2020-01-01T10:00:00.123Z") == (base + 123_000, base + 123_999)
    assert date_range("2020-01-01T10:00:00.123456Z") == (base + 123_456, base + 123_456)
    assert date_range("2020-01-01T10:00:00.1234567Z") == (base + 123_456, base + 123_456)


def test_date_offsets_and_utc_default() -> None:
    assert date_range("2020-01-01T10:00:00+02:00")[0] == us(2020, 1, 1, 8)
    assert date_range("2020-01-01T10:00:00-05:30")[0] == us(2020, 1, 1, 15, 30)
    assert date_range("2020-01-01T10:00:00")[0] == us(2020, 1, 1, 10)  # no offset: UTC
    assert date_range("2020-01-01T10:00:00Z")[0] == us(2020, 1, 1, 10)
    assert date_range("1969-12-31") == (-86_400_000_000, -1)


@pytest.mark.parametrize("bad", ["20", "2020-13", "2020-02-30", "2020-01-01T25:00:00Z", "yesterday", ""])
def test_date_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        date_range(bad)


def test_period_timing_and_lastupdated_rows() -> None:
    enc = {"resourceType": "Encounter", "id": "e", "period": {"start": "2020-01-01"},
           "meta": {"lastUpdated": "2021-05-06T07:08:09.123+00:00"}}
    rows = extract(enc, REG)
    assert (pid("Encounter", "date"), us(2020, 1, 1), DATE_MAX_US) in rows.dates
    ts = us(2021, 5, 6, 7, 8, 9) + 123_000
    assert (pid("Encounter", "_lastUpdated"), ts, ts + 999) in rows.dates
    med = {"resourceType": "MedicationRequest", "id": "m",
           "dosageInstruction": [{"timing": {"event": ["2020-03-04", "2020-03-05T10:00:00Z"]}}]}
    got = {r for r in extract(med, REG).dates if r[0] == pid("MedicationRequest", "date")}
    assert got == {(pid("MedicationRequest", "date"), *date_range("2020-03-04")),
                   (pid("MedicationRequest", "date"), *date_range("2020-03-05T10:00:00Z"))}
    end_only = extract({"resourceType": "Encounter", "period": {"end": "2020"}}, REG)
    assert (pid("Encounter", "date"), DATE_MIN_US, us(2021, 1, 1) - 1) in end_only.dates


# --- numbers and quantities ---------------------------------------------------------------------


def test_number_significant_digits() -> None:
    assert number_range(100) == (99.5, 100.5)
    assert number_range(1.5) == pytest.approx((1.45, 1.55))
    assert number_range("1.50") == pytest.approx((1.495, 1.505))
    assert number_range(0.001) == pytest.approx((0.0005, 0.0015))
    assert number_range("1e2") == (50.0, 150.0)
    assert number_range(-3) == (-3.5, -2.5)
    with pytest.raises(ValueError):
        number_range("abc")


def test_quantity_rows_use_code_else_unit() -> None:
    obs = {"resourceType": "Observation", "id": "o", "code": {"text": "x"},
           "valueQuantity": {"value": 72, "unit": "beats/min", "system": "http://unitsofmeasure.org",
                             "code": "/min"}}
    rows = extract(obs, REG)
    assert (pid("Observation", "value-quantity"), h64("http://unitsofmeasure.org"), h64("/min"), 71.5, 72.5) \
        in rows.quantities
    obs["valueQuantity"] = {"value": 7.25, "unit": "mmol/L"}
    rows = extract(obs, REG)
    q = [r for r in rows.quantities if r[0] == pid("Observation", "value-quantity")]
    assert len(q) == 1 and q[0][:3] == (pid("Observation", "value-quantity"), 0, h64("mmol/L"))
    assert q[0][3:] == pytest.approx((7.245, 7.255))


# --- strings ------------------------------------------------------------------------------------


def test_swedish_normalisation() -> None:
    assert norm_string("Åsa  Öberg") == "asa oberg"
    assert norm_string("Ärlig") == norm_string("arlig") == "arlig"
    assert norm_string("Åse") == norm_string("ase") == norm_string("ÅSE")
    assert norm_string("  Straße\tMüller ") == "strasse muller"
    assert norm_string("ﬁne") == "fine"  # NFKD compatibility folding


def test_human_name_and_address_rows() -> None:
    patient = {"resourceType": "Patient", "id": "p1",
               "name": [{"family": "Öberg", "given": ["Åsa", "Maria"], "prefix": ["Dr"], "text": "Åsa Öberg"}],
               "address": [{"line": ["Storgatan 1"], "city": "Göteborg", "postalCode": "411 01",
                            "country": "SE"}]}
    rows = extract(patient, REG)
    name = {(n, e) for p_, n, e in rows.strings if p_ == pid("Patient", "name")}
    assert name == {("oberg", "Öberg"), ("asa", "Åsa"), ("maria", "Maria"), ("dr", "Dr"),
                    ("asa oberg", "Åsa Öberg")}
    family = {(n, e) for p_, n, e in rows.strings if p_ == pid("Patient", "family")}
    assert family == {("oberg", "Öberg")}
    addr = {n for p_, n, _e in rows.strings if p_ == pid("Patient", "address")}
    assert addr == {"storgatan 1", "goteborg", "411 01", "se"}
    assert ("goteborg", "Göteborg") in {(n, e) for p_, n, e in rows.strings if p_ == pid("Patient", "address-city")}


# --- tokens -------------------------------------------------------------------------------------


def test_token_forms() -> None:
    loinc = "http://loinc.org"
    obs = {"resourceType": "Observation", "id": "o1", "status": "final",
           "code": {"coding": [{"system": loinc, "code": "8867-4", "display": "Heart rate"}], "text": "Puls"},
           "identifier": [{"system": "urn:oid:1.2.3", "value": "A-1"}],
           "meta": {"tag": [{"system": "urn:t", "code": "x"}], "security": [{"code": "R"}],
                    "profile": ["http://example.org/p"], "source": "urn:src"}}
    rows = extract(obs, REG)
    assert (pid("Observation", "code"), h64(loinc), h64("8867-4")) in rows.tokens
    assert {(pid("Observation", "code"), "heart rate"), (pid("Observation", "code"), "puls")} <= set(
        rows.token_texts)
    assert (pid("Observation", "status"), 0, h64("final")) in rows.tokens
    assert (pid("Observation", "identifier"), h64("urn:oid:1.2.3"), h64("A-1")) in rows.tokens
    assert (pid("Observation", "_id"), 0, h64("o1")) in rows.tokens
    assert (pid("Observation", "_tag"), h64("urn:t"), h64("x")) in rows.tokens
    assert (pid("Observation", "_security"), 0, h64("R")) in rows.tokens
    assert (pid("Observation", "_profile"), "http://example.org/p") in rows.uris
    assert (pid("Observation", "_source"), "urn:src") in rows.uris


def test_boolean_and_contactpoint_tokens() -> None:
    p = {"resourceType": "Patient", "id": "p", "active": True, "deceasedDateTime": "2020-01-01",
         "telecom": [{"system": "phone", "value": "+46 8 123"}, {"system": "email", "value": "a@b.se"}]}
    rows = extract(p, REG)
    assert (pid("Patient", "active"), 0, h64("true")) in rows.tokens
    assert (pid("Patient", "deceased"), 0, h64("true")) in rows.tokens
    assert (pid("Patient", "phone"), 0, h64("+46 8 123")) in rows.tokens
    assert (pid("Patient", "email"), 0, h64("a@b.se")) in rows.tokens
    assert (pid("Patient", "email"), 0, h64("+46 8 123")) not in rows.tokens
    p2 = {"resourceType": "Patient", "id": "q", "deceasedBoolean": False}
    assert (pid("Patient", "deceased"), 0, h64("false")) in extract(p2, REG).tokens
    # no deceased[x] at all: `exists() and ...` is false, so a living patient matches deceased=false
    alive = extract({"resourceType": "Patient"}, REG).tokens
    assert [r for r in alive if r[0] == pid("Patient", "deceased")] == [(pid("Patient", "deceased"), 0, h64("false"))]


# --- references ---------------------------------------------------------------------------------


def test_reference_parsing() -> None:
    assert parse_reference("Patient/1") == ("Patient", "1", "Patient/1")
    assert parse_reference("Patient/1/_history/3") == ("Patient", "1", "Patient/1")
    url = "https://other.example/fhir/Patient/9"
    assert parse_reference(url) == ("Patient", url, url)
    assert parse_reference(url + "/_history/2") == ("Patient", url, url)
    assert parse_reference("urn:uuid:0f0e") == ("", "urn:uuid:0f0e", "urn:uuid:0f0e")
    assert parse_reference("#contained") is None
    assert parse_reference("Patient?identifier=x") is None


def test_reference_rows_and_resolve_filters() -> None:
    obs = {"resourceType": "Observation", "id": "o",
           "subject": {"reference": "Patient/p1/_history/2"},
           "performer": [{"reference": "Practitioner/d1"}, {"reference": "#c1"},
                         {"identifier": {"system": "urn:hsa", "value": "SE123"}}],
           "basedOn": [{"reference": "https://x.example/fhir/ServiceRequest/s"}]}
    rows = extract(obs, REG)
    subject, patient = pid("Observation", "subject"), pid("Observation", "patient")
    assert (subject, h64("Patient/p1"), "Patient", "p1") in rows.references
    assert (patient, h64("Patient/p1"), "Patient", "p1") in rows.references
    perf = [r for r in rows.references if r[0] == pid("Observation", "performer")]
    assert perf == [(pid("Observation", "performer"), h64("Practitioner/d1"), "Practitioner", "d1")]
    assert (pid("Observation", "performer"), h64("urn:hsa"), h64("SE123")) in rows.tokens
    url = "https://x.example/fhir/ServiceRequest/s"
    assert (pid("Observation", "based-on"), h64(url), "ServiceRequest", url) in rows.references
    # where(resolve() is Patient): a Group subject is not a patient
    rows2 = extract({"resourceType": "Observation", "subject": {"reference": "Group/g"}}, REG)
    assert not [r for r in rows2.references if r[0] == patient]


def test_canonical_reference() -> None:
    q = {"resourceType": "QuestionnaireResponse", "questionnaire": "http://ex.org/Questionnaire/q|2.0"}
    rows = extract(q, REG)
    p = pid("QuestionnaireResponse", "questionnaire")
    assert (p, h64("http://ex.org/Questionnaire/q|2.0"), "", "http://ex.org/Questionnaire/q|2.0") in rows.references
    assert (p, h64("http://ex.org/Questionnaire/q"), "", "http://ex.org/Questionnaire/q") in rows.references


def test_patient_compartment() -> None:
    assert patient_compartment({"resourceType": "Patient", "id": "p9"}) == "p9"
    obs = {"resourceType": "Observation", "subject": {"reference": "Group/g"},
           "performer": [{"reference": "Practitioner/x"}, {"reference": "Patient/p2"}]}
    assert patient_compartment(obs) == "p2"
    obs["subject"] = {"reference": "Patient/p1"}
    assert patient_compartment(obs) == "p1"  # subject is listed before performer
    assert patient_compartment({"resourceType": "Organization", "id": "o"}) is None
    assert patient_compartment({"resourceType": "Encounter", "subject": {"reference": "urn:uuid:1"}}) is None


# --- composites ---------------------------------------------------------------------------------


def test_code_value_quantity_composite() -> None:
    loinc = "http://loinc.org"
    obs = {"resourceType": "Observation", "id": "bp", "status": "final",
           "code": {"coding": [{"system": loinc, "code": "85354-9"}]},
           "component": [
               {"code": {"coding": [{"system": loinc, "code": "8480-6"}]},
                "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
               {"code": {"coding": [{"system": loinc, "code": "8462-4"}]},
                "valueQuantity": {"value": 80.5, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]}
    rows = extract(obs, REG)
    comp = pid("Observation", "component-code-value-quantity")
    got = sorted(r for r in rows.composites if r[0] == comp)
    want = sorted([(comp, h64(loinc), h64("8480-6"), h64("mm[Hg]"), 119.5, 120.5),
                   (comp, h64(loinc), h64("8462-4"), h64("mm[Hg]"), 80.45, 80.55)])
    assert [g[:4] for g in got] == [w[:4] for w in want]
    assert [g[4:] for g in got] == [pytest.approx(w[4:]) for w in want]
    # the top-level value is absent, so code-value-quantity has no row; combo covers the components
    assert not [r for r in rows.composites if r[0] == pid("Observation", "code-value-quantity")]
    assert len([r for r in rows.composites if r[0] == pid("Observation", "combo-code-value-quantity")]) == 2


def test_raw_values_and_ids() -> None:
    obs = {"resourceType": "Observation", "valueQuantity": {"value": 1}, "valueString": "x"}
    assert raw_values(obs, "value-quantity", REG) == [({"value": 1}, "Quantity")]
    assert param_id("http://hl7.org/fhir/SearchParameter/Resource-id") == pid("Patient", "_id")
    assert 0 < param_id("x") < 2**31
