"""Search value normalisation shared by indexing and querying (https://hl7.org/fhir/R4/search.html).

Strings: accent- and case-insensitive. Dates: the implicit range of their precision, as inclusive
microseconds since the epoch (UTC when no offset is given). Numbers: value ± half a unit of the last
significant digit. References: `Type/id` for local references, the URL as given for absolute ones.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from samverka.fhir.definitions import resource_types
from samverka.fhir.text import fold

_DAY_US = 86_400_000_000


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


DATE_MIN_US = _days_from_civil(1, 1, 1) * _DAY_US
DATE_MAX_US = _days_from_civil(10000, 1, 1) * _DAY_US - 1

_DT = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_MDAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def date_range(s: str) -> tuple[int, int]:
    """The inclusive [lo, hi] microsecond range a FHIR date, dateTime or instant stands for.

    "2020" is the whole year, "2020-03" the month, "2020-03-05" the day, "...T10:00:00" that second,
    "...T10:00:00.5" that tenth of a second. No offset means UTC. Raises ValueError when malformed.
    """
    m = _DT.fullmatch(s)
    if m is None:
        raise ValueError(f"not a FHIR date/dateTime: {s!r}")
    year, mon_s, day_s, hh, mi, ss, frac, tz = m.groups()
    y = int(year)
    if mon_s is None:
        return _days_from_civil(y, 1, 1) * _DAY_US, _days_from_civil(y + 1, 1, 1) * _DAY_US - 1
    mon = int(mon_s)
    if not 1 <= mon <= 12:
        raise ValueError(f"bad month in {s!r}")
    if day_s is None:
        lo = _days_from_civil(y, mon, 1) * _DAY_US
        hi = (_days_from_civil(y + 1, 1, 1) if mon == 12 else _days_from_civil(y, mon + 1, 1)) * _DAY_US
        return lo, hi - 1
    day = int(day_s)
    if not 1 <= day <= _MDAYS[mon - 1]:
        raise ValueError(f"bad day in {s!r}")
    lo = _days_from_civil(y, mon, day) * _DAY_US
    if hh is None:
        return lo, lo + _DAY_US - 1
    h, mnt = int(hh), int(mi)
    if h > 24 or mnt > 59:
        raise ValueError(f"bad time in {s!r}")
    lo += (h * 3600 + mnt * 60) * 1_000_000
    if ss is None:
        width = 60_000_000
    else:
        sec = int(ss)
        if sec > 60:
            raise ValueError(f"bad seconds in {s!r}")
        lo += sec * 1_000_000
        if frac is None:
            width = 1_000_000
        else:
            digits = frac[:6]
            lo += int(digits.ljust(6, "0"))
            width = 10 ** (6 - len(digits))
    if tz and tz != "Z":
        off = (int(tz[1:3]) * 60 + int(tz[4:6])) * 60_000_000
        lo -= off if tz[0] == "+" else -off
    return lo, lo + width - 1


def number_range(value: int | float | str | Decimal) -> tuple[float, float]:
    """The implicit range of a number: value ± half a unit of its last significant digit.

    100 → (99.5, 100.5); 1.5 → (1.45, 1.55); 1e-3 → (0.0005, 0.0015). JSON parsed as float loses
    trailing zeros ("1.50" reads as 1.5), so the precision is that of the shortest repr.
    """
    if isinstance(value, bool):
        raise ValueError("boolean is not a number")
    if isinstance(value, int):
        return value - 0.5, value + 0.5
    try:
        text = repr(value) if isinstance(value, float) else str(value)
        d = value if isinstance(value, Decimal) else Decimal(text)
    except InvalidOperation as e:
        raise ValueError(f"not a number: {value!r}") from e
    if not d.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    exp = d.as_tuple().exponent
    assert isinstance(exp, int)
    half = Decimal(5).scaleb(exp - 1)
    return float(d - half), float(d + half)


@lru_cache(maxsize=1 << 15)
def norm_string(s: str) -> str:
    """Accent- and case-insensitive form (`fhir.text.fold`): NFKD, drop combining marks, casefold, collapse
    whitespace. "Åsa  Öberg" → "asa oberg"; so a search for "ase" finds "Åse", and "åse" finds "Ase".
    """
    return fold(s)


def parse_reference(ref: str) -> tuple[str, str, str] | None:
    """(target_type, target, hash key) of a reference string; None for contained `#id` and conditionals.

    `Patient/1` and `Patient/1/_history/2` → ("Patient", "1", "Patient/1"). Absolute URLs are kept as
    given (minus a `/_history/n` suffix), with the type taken from their `Type/id` tail when it names
    a resource type: ("Patient", url, url). Other URIs (urn:uuid:...) → ("", uri, uri).
    """
    if not ref or ref[0] == "#" or "?" in ref:
        return None
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
        ref = "/".join(parts)
    if ":" not in parts[0]:
        if len(parts) == 2 and parts[1]:
            return parts[0], parts[1], ref
        return None
    rtype = parts[-2] if len(parts) >= 2 and parts[-2] in resource_types() else ""
    return rtype, ref, ref


def reference_type(node: object) -> str | None:
    """The resource type a Reference points at, from `type` or its reference string, if known."""
    if type(node) is not dict:
        return None
    t = node.get("type")
    if isinstance(t, str) and "/" not in t and t:
        return t
    ref = node.get("reference")
    if isinstance(ref, str):
        parsed = parse_reference(ref)
        if parsed and parsed[0]:
            return parsed[0]
    return None
