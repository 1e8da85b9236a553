"""Small helpers shared by the generators: rng-driven uuids, Swedish timestamps, references."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from functools import cache
from random import Random
from typing import Any

Resource = dict[str, Any]
_HOUR = timedelta(hours=1)


def new_uuid(rng: Random) -> str:
    """A version-4 uuid drawn from `rng`, so output is reproducible for a seed."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@cache
def _summer_time(year: int) -> tuple[datetime, datetime]:
    """Start and end of CEST in CET (UTC+1) terms: 02:00 on the last Sundays of March and October."""

    def last_sunday(month: int) -> date:
        last = date(year, month, 31)
        return last - timedelta(days=(last.weekday() + 1) % 7)

    return datetime.combine(last_sunday(3), time(2)), datetime.combine(last_sunday(10), time(2))


def fhir_datetime(cet: datetime) -> str:
    """An R4 dateTime with seconds, shown in Swedish local time with its offset.

    The generators compute in CET (a fixed UTC+1, naive datetimes) so that time arithmetic stays
    absolute across daylight-saving changes; summer times are shown as CEST, one hour later, +02:00.
    """
    start, end = _summer_time(cet.year)
    if start <= cet < end:
        return (cet + _HOUR).isoformat(timespec="seconds") + "+02:00"
    return cet.isoformat(timespec="seconds") + "+01:00"


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """A naive CET datetime on `day` (see `fhir_datetime`)."""
    return datetime(day.year, day.month, day.day, hour, minute)


def ref(resource_type: str, resource_id: str) -> dict[str, str]:
    """A literal reference to a resource with a fixed id (`Type/id`)."""
    return {"reference": f"{resource_type}/{resource_id}"}


def urn(uid: str) -> dict[str, str]:
    """A reference to a bundle entry by its `urn:uuid:` fullUrl."""
    return {"reference": f"urn:uuid:{uid}"}


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display is not None:
        out["display"] = display
    return out


def concept(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    """A CodeableConcept with one coding and a text (the display unless given)."""
    return {"coding": [coding(system, code, display)], "text": text or display}
