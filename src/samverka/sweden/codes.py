"""Code systems used in Swedish care, and the Samverka-defined systems and extensions for PDL rules."""

from __future__ import annotations

# National and international code systems (see docs: sweden.md, "Code systems in use").
SNOMED_CT = "http://snomed.info/sct"
SNOMED_CT_SWEDISH_MODULE = "45991000052106"
ICD_10_SE = "urn:oid:1.2.752.116.1.1.1.1.3"  # no official FHIR URI exists; the OID is used
KVA = "urn:oid:1.2.752.116.1.3.2.1.4"  # Klassifikation av vårdåtgärder (procedures)
NPU = "urn:oid:1.2.752.108.1"  # laboratory codes
ATC = "http://www.whocc.no/atc"
NPL_ID = "urn:oid:1.2.752.129.2.1.5.1"
NPL_PACK_ID = "urn:oid:1.2.752.129.2.1.5.2"
KV_KON = "urn:oid:1.2.752.129.2.2.1.1"
UCUM = "http://unitsofmeasure.org"

# HL7 terminology used alongside them.
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
V3_OBSERVATION_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"

# Samverka-defined. There is no national FHIR code for sekretessmarkering, so Samverka defines one
# code system for its security labels. A Patient with a protected identity carries
#   meta.security = [{system: SECURITY_LABEL_SYSTEM, code: PROTECTED_INFORMATION}]
# and its address and other contact details must not be released. Generated data also adds the
# standard v3-Confidentiality "R" (restricted) label for consumers that know only HL7 labels.
SECURITY_LABEL_SYSTEM = "https://samverka.se/fhir/CodeSystem/security-label"
PROTECTED_INFORMATION = "protected-information"
PROTECTED_INFORMATION_DISPLAY = "Sekretessmarkering"

# The purpose of a medarbetaruppdrag (assignment), carried on PractitionerRole as an extension
# with a valueCoding from ASSIGNMENT_PURPOSE_SYSTEM. The same text is also put in PractitionerRole.code.
ASSIGNMENT_PURPOSE_EXTENSION = "https://samverka.se/fhir/StructureDefinition/assignment-purpose"
ASSIGNMENT_PURPOSE_SYSTEM = "https://samverka.se/fhir/CodeSystem/assignment-purpose"
ASSIGNMENT_PURPOSES: dict[str, str] = {
    "vard-och-behandling": "Vård och behandling",
    "administration": "Administration",
    "kvalitetssakring": "Kvalitetssäkring",
    "statistik": "Statistik",
}
