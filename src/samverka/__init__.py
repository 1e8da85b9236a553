"""Samverka: a shared, vendor-neutral FHIR R4 record for a modular care information environment."""

__version__ = "0.1.0"
