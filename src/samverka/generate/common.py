"""Small helpers shared by the generators: rng-driven uuids, Swedish local timestamps, references."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from functools import cache
from random import Random
from typing import Any

Resource = dict[str, Any]


def new_uuid(rng: Random) -> str:
    """A version-4 uuid drawn from `rng`, so output is reproducible for a seed."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@cache
def _summer_time(year: int) -> tuple[datetime, datetime]:
    """Local wall-clock start and end of CEST: last Sunday of March 02:00 to last Sunday of October 03:00."""

    def last_sunday(month: int) -> date:
        last = date(year, month, 31)
        return last - timedelta(days=(last.weekday() + 1) % 7)

    return datetime.combine(last_sunday(3), time(2)), datetime.combine(last_sunday(10), time(3))


def fhir_datetime(local: datetime) -> str:
    """An R4 dateTime with seconds and the Europe/Stockholm offset for a naive local time."""
    start, end = _summer_time(local.year)
    offset = "+02:00" if start <= local < end else "+01:00"
    return local.isoformat(timespec="seconds") + offset


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """A naive local datetime on `day`."""
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
