"""FHIR `instant` values as stored: microseconds since the epoch, written with millisecond precision.

https://hl7.org/fhir/R4/datatypes.html#instant
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_us() -> int:
    return time.time_ns() // 1000


def format_instant(us: int) -> str:
    dt = _EPOCH + timedelta(microseconds=us)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_instant(text: str) -> int:
    """An instant or dateTime with seconds and a zone (or a date) as microseconds; ValueError if not."""
    t = text.strip()
    if len(t) == 10:
        t += "T00:00:00Z"
    dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1)


def http_date(us: int) -> str:
    """The RFC 9110 IMF-fixdate form, for Last-Modified."""
    dt = _EPOCH + timedelta(microseconds=us)
    return dt.strftime("%a, %d %b %Y %H:%M:%S GMT")
