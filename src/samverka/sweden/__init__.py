"""Swedish national context: identifier systems and rules, and the code systems used in Swedish care."""

from samverka.sweden.identifiers import (
    HSA_ID,
    ORGANISATIONSNUMMER,
    PERSONNUMMER,
    SAMORDNINGSNUMMER,
    Personnummer,
    canonical_identifier,
    is_valid_hsa_id,
    is_valid_organisationsnummer,
    luhn_check_digit,
    make_personnummer,
    parse_personnummer,
)

__all__ = [
    "HSA_ID",
    "ORGANISATIONSNUMMER",
    "PERSONNUMMER",
    "SAMORDNINGSNUMMER",
    "Personnummer",
    "canonical_identifier",
    "is_valid_hsa_id",
    "is_valid_organisationsnummer",
    "luhn_check_digit",
    "make_personnummer",
    "parse_personnummer",
]
