"""Swedish identifier systems and rules: personnummer, samordningsnummer, HSA-id, organisationsnummer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Literal

# Canonical FHIR identifier systems (HL7 Sweden base profiles).
PERSONNUMMER = "http://electronichealth.se/identifier/personnummer"
SAMORDNINGSNUMMER = "http://electronichealth.se/identifier/samordningsnummer"
NATIONELLT_RESERVNUMMER = "http://electronichealth.se/identifier/nationelltReservnummer"
HSA_ID = "urn:oid:1.2.752.29.4.19"
ORGANISATIONSNUMMER = "urn:oid:2.5.4.97"

# OIDs used in the national RIV-TA contracts.
PERSONNUMMER_OID = "1.2.752.129.2.1.3.1"
SAMORDNINGSNUMMER_OID = "1.2.752.129.2.1.3.3"
HSA_ID_RIV_OID = "1.2.752.129.2.1.4.1"

# Every spelling we accept for a system, mapped to the canonical one.
PERSONNUMMER_ALIASES = frozenset(
    {
        PERSONNUMMER,
        "https://terminology.hl7.se/sid/se-personnummer",
        f"urn:oid:{PERSONNUMMER_OID}",
        PERSONNUMMER_OID,
    }
)
SAMORDNINGSNUMMER_ALIASES = frozenset(
    {SAMORDNINGSNUMMER, f"urn:oid:{SAMORDNINGSNUMMER_OID}", SAMORDNINGSNUMMER_OID}
)
HSA_ID_ALIASES = frozenset({HSA_ID, f"urn:oid:{HSA_ID_RIV_OID}", HSA_ID_RIV_OID, "1.2.752.29.4.19"})

Sex = Literal["male", "female"]

_TWELVE = re.compile(r"(\d{8})-?(\d{4})")
_TEN = re.compile(r"(\d{6})([-+]?)(\d{4})")
_HSA = re.compile(r"SE\d{10}-[A-Za-z0-9]+")
_ORGNR = re.compile(r"(\d{6})-?(\d{4})")
HSA_ID_MAX_LENGTH = 31


def luhn_check_digit(nine_digits: str) -> int:
    """The mod-10 (Luhn) check digit for nine digits, weights 2,1,2,1,... from the left."""
    if len(nine_digits) != 9 or not nine_digits.isascii() or not nine_digits.isdigit():
        raise ValueError(f"expected exactly 9 digits, got {nine_digits!r}")
    total = 0
    for i, ch in enumerate(nine_digits):
        product = int(ch) * (2 if i % 2 == 0 else 1)
        total += product - 9 if product > 9 else product
    return (10 - total % 10) % 10


@dataclass(frozen=True)
class Personnummer:
    """A validated personnummer or samordningsnummer in its canonical 12-digit form."""

    value: str  # YYYYMMDDNNNC; for a samordningsnummer the day is the birth day + 60
    birth_date: date
    sex: Sex  # from the second-last digit: odd = male, even = female
    is_samordningsnummer: bool

    @property
    def system(self) -> str:
        """The canonical FHIR identifier system for this number."""
        return SAMORDNINGSNUMMER if self.is_samordningsnummer else PERSONNUMMER

    @property
    def formatted(self) -> str:
        """The 12-digit form with a hyphen, `YYYYMMDD-NNNC`, as shown to people."""
        return f"{self.value[:8]}-{self.value[8:]}"

    def short_form(self, today: date | None = None) -> str:
        """`YYMMDD-NNNC`, or `YYMMDD+NNNC` once the person has turned 100."""
        today = today or date.today()
        sep = "+" if _age(self.birth_date, today) >= 100 else "-"
        return f"{self.value[2:8]}{sep}{self.value[8:]}"


def _age(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _century_for(yy: int, mm: int, dd: int, plus: bool, today: date) -> int:
    """The full year for a `YYMMDD` given the separator, per Skatteverket's rule.

    With `-` the person is younger than 100: take the latest year ending in YY whose date is not in
    the future. With `+` the person is 100 or older: the same year less a century.
    """
    year = today.year // 100 * 100 + yy
    if (year, mm, dd) > (today.year, today.month, today.day):
        year -= 100
    if plus:
        year -= 100
    return year


def parse_personnummer(text: str, today: date | None = None) -> Personnummer:
    """Parse and validate a personnummer or samordningsnummer.

    Accepted forms: `YYYYMMDDNNNC`, `YYYYMMDD-NNNC`, `YYMMDD-NNNC`, `YYMMDDNNNC` (read as `-`) and
    `YYMMDD+NNNC` (100 years or older). `today` decides the century of the short forms and rejects
    birth dates in the future; it defaults to the current date. Raises ValueError naming the problem.
    """
    if not isinstance(text, str):
        raise ValueError(f"personnummer must be a string, got {type(text).__name__}")
    raw = text.strip()
    today = today or date.today()
    if not raw.isascii():
        raise ValueError(f"personnummer {text!r} contains non-ASCII characters")
    if m := _TWELVE.fullmatch(raw):
        digits = m.group(1) + m.group(2)
        year = int(digits[:4])
    elif m := _TEN.fullmatch(raw):
        short, sep, tail = m.groups()
        dd = int(short[4:6])
        year = _century_for(int(short[:2]), int(short[2:4]), dd - 60 if dd > 60 else dd, sep == "+", today)
        digits = f"{year:04d}{short[2:]}{tail}"
    else:
        raise ValueError(
            f"personnummer {text!r} has the wrong format: expected YYYYMMDDNNNC, YYYYMMDD-NNNC, "
            "YYMMDD-NNNC or YYMMDD+NNNC"
        )
    month, day = int(digits[4:6]), int(digits[6:8])
    samordning = 61 <= day <= 91
    birth_day = day - 60 if samordning else day
    if day > 60 and not samordning:
        raise ValueError(f"personnummer {text!r}: day {day:02d} is not a valid samordningsnummer day (61-91)")
    try:
        born = date(year, month, birth_day)
    except ValueError:
        kind = "samordningsnummer" if samordning else "personnummer"
        raise ValueError(
            f"{kind} {text!r}: {year:04d}-{month:02d}-{birth_day:02d} is not a valid date"
        ) from None
    if born > today:
        raise ValueError(f"personnummer {text!r}: birth date {born.isoformat()} is in the future")
    expected = luhn_check_digit(digits[2:11])
    if int(digits[11]) != expected:
        raise ValueError(
            f"personnummer {text!r}: check digit is {digits[11]}, "
            f"expected {expected} (Luhn over {digits[2:11]})"
        )
    sex: Sex = "male" if int(digits[10]) % 2 == 1 else "female"
    return Personnummer(value=digits, birth_date=born, sex=sex, is_samordningsnummer=samordning)


def make_personnummer(birth_date: date, serial: int, *, samordningsnummer: bool = False) -> str:
    """Build the canonical 12-digit number for a birth date and 3-digit serial (last digit odd = male)."""
    if not 0 <= serial <= 999:
        raise ValueError(f"serial must be 0-999, got {serial}")
    day = birth_date.day + (60 if samordningsnummer else 0)
    body = f"{birth_date.year:04d}{birth_date.month:02d}{day:02d}{serial:03d}"
    return body + str(luhn_check_digit(body[2:]))


def is_valid_hsa_id(text: str) -> bool:
    """Whether `text` is a well-formed HSA-id: `SE` + 10 digits + `-` + letters/digits, at most 31 chars."""
    return isinstance(text, str) and len(text) <= HSA_ID_MAX_LENGTH and _HSA.fullmatch(text) is not None


def is_valid_organisationsnummer(text: str) -> bool:
    """Whether `text` is an organisationsnummer (`NNNNNN-NNNC` or 10 digits) with a valid check digit.

    The third digit of an organisationsnummer is at least 2, which keeps it apart from personnummer.
    """
    if not isinstance(text, str) or (m := _ORGNR.fullmatch(text.strip())) is None:
        return False
    digits = m.group(1) + m.group(2)
    return int(digits[2]) >= 2 and luhn_check_digit(digits[:9]) == int(digits[9])


def canonical_identifier(system: str, value: str, today: date | None = None) -> tuple[str, str]:
    """Normalise a Swedish patient identifier to its canonical system and 12-digit value.

    Any personnummer or samordningsnummer alias is accepted; the *value* decides which canonical
    system it lands in, since a day of 61-91 makes it a samordningsnummer whatever the sender called
    it. Raises ValueError for an invalid number. Other systems are returned unchanged.
    """
    if system in PERSONNUMMER_ALIASES or system in SAMORDNINGSNUMMER_ALIASES:
        parsed = parse_personnummer(value, today)
        return parsed.system, parsed.value
    return system, value
