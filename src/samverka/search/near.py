"""`near` on Location: https://hl7.org/fhir/R4/location.html#positional (SearchParameter Location-near).

`near=[latitude]|[longitude]|[distance]|[units]` finds Locations whose `position` lies within the distance
(WGS84 degrees; units `km` (the default), `m` or `[mi_i]`; without a distance, `DEFAULT_KM`). The write
path indexes a position as one `idx_number` row of the parameter, latitude in `lo` and longitude in `hi`;
a search is a bounding box on those columns (index-friendly) and then the equirectangular distance, which
is within 0.5 % of the great-circle distance below a few hundred kilometres. Longitudes are not wrapped
at ±180°.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import invalid
from ..store import IndexRows
from .params import Registry
from .query import Criterion

KM_PER_DEGREE = 6371.0088 * math.pi / 180  # mean Earth radius
UNITS = {"km": 1.0, "m": 0.001, "[mi_i]": 1.609344, "mi": 1.609344}
DEFAULT_KM = 5.0


def index(resource: dict[str, Any], registry: Registry, rows: IndexRows) -> None:
    """The `near` row of a Location with a position (numbers only; a partial position is not indexed)."""
    param = registry.get("Location", "near")
    pos = resource.get("position")
    if param is None or not isinstance(pos, dict):
        return
    lat, lon = pos.get("latitude"), pos.get("longitude")
    if (isinstance(lat, (int, float)) and isinstance(lon, (int, float)) and not isinstance(lat, bool)
            and not isinstance(lon, bool)):
        rows.numbers.append((param.id, float(lat), float(lon)))


def _number(text: str, what: str, c: Criterion, lo: float, hi: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (lo <= value <= hi):
        raise invalid(f"{c.raw_name}: the {what} must be a number from {lo:g} to {hi:g}, not {text!r}", c.raw_name)
    return value


def condition(c: Criterion) -> tuple[str, tuple[Any, ...]]:
    """The condition on `idx_number` rows (alias x) for a `near` criterion; `,` is OR."""
    if c.modifier not in (None, "missing"):
        raise invalid(f"modifier :{c.modifier} is not supported on {c.raw_name}", c.raw_name, "not-supported")
    ors: list[str] = []
    params: list[Any] = []
    for v in c.values:
        parts = v.text.split("|")
        if len(parts) < 2 or len(parts) > 4:
            raise invalid(f"{c.raw_name}: give [latitude]|[longitude]|[distance]|[units], not {v.text!r}", c.raw_name)
        lat = _number(parts[0], "latitude", c, -90, 90)
        lon = _number(parts[1], "longitude", c, -180, 180)
        units = parts[3] if len(parts) > 3 and parts[3] else "km"
        if units not in UNITS:
            raise invalid(f"{c.raw_name}: units must be one of {', '.join(UNITS)}, not {units!r}", c.raw_name)
        half_way = 20_015.0 / UNITS[units]  # half the Earth's circumference: everything is that near
        km = UNITS[units] * (_number(parts[2], "distance", c, 0, half_way) if len(parts) > 2 and parts[2]
                             else DEFAULT_KM / UNITS[units])
        dlat = km / KM_PER_DEGREE
        scale = math.cos(math.radians(lat))
        dlon = min(dlat / max(scale, 1e-9), 360.0)
        ors.append("(x.lo BETWEEN ? AND ? AND x.hi BETWEEN ? AND ?"
                   " AND (x.lo - ?) * (x.lo - ?) + (x.hi - ?) * (x.hi - ?) * ? <= ?)")
        params += [lat - dlat, lat + dlat, lon - dlon, lon + dlon, lat, lat, lon, lon, scale * scale, dlat * dlat]
    return " OR ".join(ors), tuple(params)
