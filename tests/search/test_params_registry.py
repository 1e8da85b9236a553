"""The search parameter registry (https://hl7.org/fhir/R4/searchparameter.html)."""

from __future__ import annotations

import pytest

from samverka.fhir.definitions import resource_types, resources_of
from samverka.search.compile_extract import parts_for_type, split_union_text
from samverka.search.extract import extract
from samverka.search.params import Registry, SearchParam, param_id
from samverka.store.hashing import h64

REG = Registry.default()


def test_all_shipped_parameters_loaded_with_unique_ids() -> None:
    shipped = resources_of("search-parameters")
    assert len(shipped) == 1377
    assert len(REG.all()) == 1377
    assert len({p.id for p in REG.all()}) == 1377
    assert Registry.default() is REG


@pytest.mark.parametrize("code", ["_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"])
def test_generic_parameters_on_every_type(code: str) -> None:
    ids = {REG.get(t, code).id for t in resource_types()}  # type: ignore[union-attr]
    assert len(ids) == 1
    assert REG.get("Resource", code) is not None


def test_text_only_on_domain_resources() -> None:
    assert REG.get("Patient", "_text") is not None
    assert REG.get("Bundle", "_text") is None
    assert REG.get("Binary", "_text") is None


def test_lookup_and_fields() -> None:
    p = REG.get("Observation", "code")
    assert p is not None and p.type == "token" and "Observation" in p.base
    assert p.url == "http://hl7.org/fhir/SearchParameter/clinical-code"
    assert p.id == param_id(p.url)
    assert "text" in p.modifiers
    subject = REG.get("Observation", "subject")
    assert subject is not None and set(subject.targets) == {"Group", "Device", "Patient", "Location"}
    cvq = REG.get("Observation", "code-value-quantity")
    assert cvq is not None and cvq.components[1] == (
        "http://hl7.org/fhir/SearchParameter/Observation-value-quantity", "value.as(Quantity)")
    date = REG.get("Observation", "date")
    assert date is not None and "ge" in date.comparators
    assert REG.get("Observation", "nonexistent") is None
    codes = {p.code for p in REG.for_type("Patient")}
    assert {"name", "family", "birthdate", "identifier", "_id", "_lastUpdated"} <= codes


def test_multi_base_expressions_split_by_type() -> None:
    p = REG.get("Condition", "code")
    assert p is not None
    assert parts_for_type(p.expression, "Condition") == ["Condition.code"]
    q = REG.get("Observation", "value-quantity")
    assert q is not None
    assert parts_for_type(q.expression, "Observation") == [
        "(Observation.value as Quantity)", "(Observation.value as SampledData)"]
    assert split_union_text("a.where(x='|') | b") == ["a.where(x='|')", "b"]


def test_every_r4_expression_compiles_without_fallback() -> None:
    fallbacks, unsupported = [], []
    for t in sorted(resource_types()):
        for code, c in REG.extractor(t).compiled.items():
            fallbacks += [(t, code)] * bool(c.fallback)
            unsupported += [(t, code)] * bool(c.unsupported)
    assert fallbacks == [] and unsupported == []


def test_custom_parameter_and_fallback() -> None:
    custom = {
        "resourceType": "SearchParameter", "id": "pat-birthplace", "url": "http://ex.org/sp/birthplace",
        "code": "birthplace", "base": ["Patient"], "type": "string", "status": "active",
        "expression": "Patient.extension('http://hl7.org/fhir/StructureDefinition/patient-birthPlace').value",
    }
    odd = {  # uses a function the compiler does not know: evaluated by fhirpathpy instead
        "resourceType": "SearchParameter", "url": "http://ex.org/sp/given-upper", "code": "given-upper",
        "base": ["Patient"], "type": "token", "expression": "Patient.name.given.upper()",
    }
    reg = Registry.with_custom([custom, odd])
    assert reg.get("Patient", "birthplace") is not None and REG.get("Patient", "birthplace") is None
    c = reg.compiled("Patient", "given-upper")
    assert c is not None and c.fallback == ["Patient.name.given.upper()"]
    patient = {"resourceType": "Patient", "id": "p", "name": [{"given": ["Åsa"]}], "extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
         "valueAddress": {"city": "Malmö"}},
        {"url": "http://other", "valueString": "nope"}]}
    rows = extract(patient, reg)
    bp = reg.get("Patient", "birthplace")
    assert bp is not None
    assert [(n, e) for p_, n, e in rows.strings if p_ == bp.id] == [("malmo", "Malmö")]
    gu = reg.get("Patient", "given-upper")
    assert gu is not None and (gu.id, 0, h64("ÅSA")) in rows.tokens


def test_invalid_custom_parameter() -> None:
    with pytest.raises(ValueError):
        SearchParam.from_resource({"resourceType": "SearchParameter", "code": "x", "type": "token"})
