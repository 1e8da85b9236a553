"""Behaviour of the Swedish identifier rules: personnummer, samordningsnummer, HSA-id, organisationsnummer."""

from __future__ import annotations

from datetime import date

import pytest

from samverka.sweden.identifiers import (
    HSA_ID,
    PERSONNUMMER,
    SAMORDNINGSNUMMER,
    canonical_identifier,
    is_valid_hsa_id,
    is_valid_organisationsnummer,
    luhn_check_digit,
    make_personnummer,
    parse_personnummer,
)

TODAY = date(2026, 1, 15)


def with_check(body12_without_check: str) -> str:
    """Append the correct check digit to an 11-digit YYYYMMDDNNN."""
    return body12_without_check + str(luhn_check_digit(body12_without_check[2:]))


@pytest.mark.parametrize(
    ("nine", "expected"),
    [("811218987", 6), ("121212121", 2), ("000000000", 0), ("999999999", 9), ("640823323", 4)],
)
def test_luhn_check_digit_known_values(nine: str, expected: int) -> None:
    """The Luhn digit matches hand-computed values (weights 2,1,2,...; two-digit products summed)."""
    assert luhn_check_digit(nine) == expected


@pytest.mark.parametrize("bad", ["12345678", "1234567890", "12345678a", "", "１２３４５６７８９"])
def test_luhn_check_digit_rejects_anything_but_nine_ascii_digits(bad: str) -> None:
    """Only exactly nine ASCII digits are accepted."""
    with pytest.raises(ValueError, match="9 digits"):
        luhn_check_digit(bad)


@pytest.mark.parametrize(
    "text", ["198112189876", "19811218-9876", "811218-9876", "8112189876", " 811218-9876 "]
)
def test_parse_accepts_every_documented_form(text: str) -> None:
    """All input forms give the same canonical 12-digit value, birth date and sex."""
    pnr = parse_personnummer(text, TODAY)
    assert pnr.value == "198112189876"
    assert pnr.birth_date == date(1981, 12, 18)
    assert pnr.sex == "male"
    assert not pnr.is_samordningsnummer
    assert pnr.system == PERSONNUMMER
    assert pnr.formatted == "19811218-9876"


def test_sex_comes_from_second_last_digit() -> None:
    """Odd second-last digit is male, even is female."""
    male = parse_personnummer(with_check("19900101123"), TODAY)
    female = parse_personnummer(with_check("19900101124"), TODAY)
    assert (male.sex, female.sex) == ("male", "female")


@pytest.mark.parametrize("wrong", range(10))
def test_every_wrong_check_digit_is_rejected(wrong: int) -> None:
    """Only the single correct check digit passes, and the message names the expected digit."""
    if wrong == 6:
        assert parse_personnummer("19811218987" + str(wrong), TODAY).value == "198112189876"
        return
    with pytest.raises(ValueError, match=r"check digit is .*expected 6"):
        parse_personnummer("19811218987" + str(wrong), TODAY)


def test_february_29_only_in_leap_years() -> None:
    """1900 was not a leap year (divisible by 100), 2000 was (divisible by 400)."""
    with pytest.raises(ValueError, match="1900-02-29 is not a valid date"):
        parse_personnummer(with_check("19000229123"), TODAY)
    assert parse_personnummer(with_check("20000229123"), TODAY).birth_date == date(2000, 2, 29)
    assert parse_personnummer(with_check("19960229123"), TODAY).birth_date == date(1996, 2, 29)
    with pytest.raises(ValueError, match="2023-02-29 is not a valid date"):
        parse_personnummer(with_check("20230229123"), TODAY)


@pytest.mark.parametrize("mmdd", ["1301", "0001", "0100", "0431", "0632"])
def test_invalid_month_or_day_is_rejected(mmdd: str) -> None:
    """Months outside 1-12 and days past the month's end are invalid dates."""
    with pytest.raises(ValueError, match="not a valid date"):
        parse_personnummer(with_check(f"1985{mmdd}123"), TODAY)


def test_short_form_century_with_hyphen_is_latest_past_year() -> None:
    """With '-' the person is under 100: the latest year with that YY not in the future."""
    same_day = "260115" + with_check("20260115123")[8:]
    assert parse_personnummer(same_day[:6] + "-" + same_day[6:], TODAY).birth_date == date(2026, 1, 15)
    next_day_body = with_check("19260116123")
    assert parse_personnummer(f"{next_day_body[2:8]}-{next_day_body[8:]}", TODAY).birth_date == date(
        1926, 1, 16
    )


def test_short_form_plus_means_a_hundred_years_or_older() -> None:
    """'+' moves the birth year back a century, so 121212+1212 is born 1912."""
    assert parse_personnummer("121212+1212", TODAY).value == "191212121212"
    assert parse_personnummer("121212-1212", TODAY).value == "201212121212"
    old = parse_personnummer("260116+" + with_check("18260116123")[8:], TODAY)
    assert old.birth_date == date(1826, 1, 16)


def test_plus_form_of_000229_is_1900_and_therefore_invalid() -> None:
    """000229-NNNC is 2000-02-29 (valid); 000229+NNNC would be 1900-02-29 (invalid)."""
    tail = with_check("20000229123")[8:]
    assert parse_personnummer(f"000229-{tail}", TODAY).birth_date == date(2000, 2, 29)
    with pytest.raises(ValueError, match="1900-02-29"):
        parse_personnummer(f"000229+{tail}", TODAY)


def test_short_form_round_trips_through_short_form() -> None:
    """short_form picks '+' exactly from the 100th birthday."""
    pnr = parse_personnummer(with_check("19260115123"), TODAY)
    assert pnr.short_form(TODAY)[6] == "+"
    assert pnr.short_form(date(2026, 1, 14))[6] == "-"
    assert parse_personnummer(pnr.short_form(TODAY), TODAY) == pnr


def test_birth_date_in_the_future_is_rejected() -> None:
    """A 12-digit number cannot be born after today."""
    with pytest.raises(ValueError, match="in the future"):
        parse_personnummer(with_check("20260116123"), TODAY)


def test_samordningsnummer_has_day_plus_sixty() -> None:
    """Days 61-91 mark a samordningsnummer; the birth date is the day less 60."""
    value = make_personnummer(date(1985, 3, 31), 457, samordningsnummer=True)
    assert value[6:8] == "91"
    parsed = parse_personnummer(value, TODAY)
    assert parsed.is_samordningsnummer
    assert parsed.birth_date == date(1985, 3, 31)
    assert parsed.sex == "male"
    assert parsed.system == SAMORDNINGSNUMMER
    short = parse_personnummer(f"{value[2:8]}-{value[8:]}", TODAY)
    assert short == parsed


@pytest.mark.parametrize("dd", ["60", "92", "99"])
def test_days_outside_both_ranges_are_rejected(dd: str) -> None:
    """Day 60 and days above 91 are neither a personnummer nor a samordningsnummer."""
    with pytest.raises(ValueError, match=r"not a valid (date|samordningsnummer day)"):
        parse_personnummer(with_check(f"198501{dd}123"), TODAY)


def test_samordningsnummer_date_is_validated_after_subtracting_sixty() -> None:
    """February 30 + 60 = day 90 in February is invalid."""
    with pytest.raises(ValueError, match=r"samordningsnummer .* 1985-02-30 is not a valid date"):
        parse_personnummer(with_check("19850290123"), TODAY)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "19811218_9876",
        "811218--9876",
        "1981121898761",
        "811218 9876",
        "19811218+9876",
        "٨١١٢١٨-٩٨٧٦",
    ],
)
def test_malformed_input_gives_a_format_error(text: str) -> None:
    """Anything not in an accepted form is rejected before any date or check-digit test."""
    with pytest.raises(ValueError, match=r"(wrong format|non-ASCII)"):
        parse_personnummer(text, TODAY)


def test_make_personnummer_always_parses_back() -> None:
    """Numbers built by make_personnummer are valid, keep the birth date and follow the serial's parity."""
    for serial in (0, 1, 98, 99, 500, 999):
        for born in (date(1900, 1, 1), date(1999, 12, 31), date(2024, 2, 29)):
            parsed = parse_personnummer(make_personnummer(born, serial), TODAY)
            assert parsed.birth_date == born
            assert parsed.sex == ("male" if serial % 2 else "female")
    with pytest.raises(ValueError):
        make_personnummer(date(2000, 1, 1), 1000)


@pytest.mark.parametrize(
    "hsa",
    ["SE2321000131-E000000000001", "SE2321000016-92V4", "SE5565594230-abc", "SE1234567890-" + "A" * 18],
)
def test_valid_hsa_ids(hsa: str) -> None:
    """SE + 10 digits + '-' + alphanumerics, at most 31 characters."""
    assert len(hsa) <= 31
    assert is_valid_hsa_id(hsa)


@pytest.mark.parametrize(
    "hsa",
    [
        "SE2321000131-",  # empty suffix
        "SE232100013-E1",  # 9 digits
        "SE23210001311-E1",  # 11 digits
        "se2321000131-E1",  # lower-case prefix
        "DK2321000131-E1",
        "SE2321000131E1",  # no hyphen
        "SE2321000131-E_1",
        "SE2321000131-E 1",
        "SE1234567890-" + "A" * 19,  # 32 characters
        "",
    ],
)
def test_invalid_hsa_ids(hsa: str) -> None:
    """Wrong prefix, digit count, separator, suffix characters or length are rejected."""
    assert not is_valid_hsa_id(hsa)


def test_organisationsnummer_rules() -> None:
    """Check digit by Luhn and third digit at least 2."""
    assert is_valid_organisationsnummer("232100-0131")
    assert is_valid_organisationsnummer("2321000131")
    assert not is_valid_organisationsnummer("232100-0132")
    assert not is_valid_organisationsnummer("811218-9876")  # a personnummer: third digit 1
    assert not is_valid_organisationsnummer("23210001")


@pytest.mark.parametrize(
    "system",
    [
        PERSONNUMMER,
        "https://terminology.hl7.se/sid/se-personnummer",
        "urn:oid:1.2.752.129.2.1.3.1",
        "1.2.752.129.2.1.3.1",
    ],
)
def test_canonical_identifier_normalises_personnummer_aliases(system: str) -> None:
    """Every personnummer alias and input form lands on one canonical system and 12-digit value."""
    assert canonical_identifier(system, "811218-9876", TODAY) == (PERSONNUMMER, "198112189876")


def test_canonical_identifier_places_samordningsnummer_by_value() -> None:
    """A samordningsnummer goes to the samordningsnummer system, whatever alias was used."""
    value = make_personnummer(date(1990, 5, 5), 122, samordningsnummer=True)
    expected = (SAMORDNINGSNUMMER, value)
    assert canonical_identifier("urn:oid:1.2.752.129.2.1.3.3", value, TODAY) == expected
    assert canonical_identifier(PERSONNUMMER, value, TODAY) == expected


def test_canonical_identifier_rejects_invalid_numbers_and_passes_other_systems() -> None:
    """Invalid Swedish numbers raise; other systems (HSA-id, local MRNs) are untouched."""
    with pytest.raises(ValueError, match="check digit"):
        canonical_identifier(PERSONNUMMER, "811218-9875", TODAY)
    assert canonical_identifier(HSA_ID, "SE2321000131-E1") == (HSA_ID, "SE2321000131-E1")
    assert canonical_identifier("http://example.org/mrn", " 81 ") == ("http://example.org/mrn", " 81 ")
