"""FHIR R4 knowledge: the shipped core definitions, FHIRPath, datatypes."""
