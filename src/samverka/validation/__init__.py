"""Validation of written resources against the base R4 definitions (https://hl7.org/fhir/R4/validation.html).

Usage: `Validator.default().validate(resource, expected_type)` returns a list of
`samverka.errors.Issue` (empty when valid).
"""

from samverka.validation.validator import Validator

__all__ = ["Validator"]
