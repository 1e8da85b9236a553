"""Reading the Parameters bodies of the PDL operations ($emergency-access, $lift-block), with precise 400s.

https://hl7.org/fhir/R4/parameters.html
"""

from __future__ import annotations

from typing import Any

from ..errors import invalid

_UCUM_SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86400}


def parameters(body: Any, operation: str) -> dict[str, dict[str, Any]]:
    """name → the parameter, from a Parameters resource (a repeated name is a 400)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise invalid(f"{operation} takes a Parameters resource", None)
    out: dict[str, dict[str, Any]] = {}
    for i, p in enumerate(body.get("parameter") or []):
        name = p.get("name") if isinstance(p, dict) else None
        if not isinstance(name, str):
            raise invalid("every parameter needs a name", f"Parameters.parameter[{i}]")
        if name in out:
            raise invalid(f"parameter {name!r} is given twice", f"Parameters.parameter[{i}]")
        out[name] = {**p, "_index": i}
    return out


def where(name: str) -> str:
    return f"Parameters.parameter.where(name='{name}')"


def text(params: dict[str, dict[str, Any]], name: str, required: bool = False) -> str | None:
    p = params.get(name)
    if p is None:
        if required:
            raise invalid(f"parameter {name!r} (valueString) is required", where(name), "required")
        return None
    value = p.get("valueString")
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"parameter {name!r} must be a non-empty valueString", f"{where(name)}.value", "value")
    return value.strip()


def seconds(params: dict[str, dict[str, Any]], name: str, default: int, maximum: int) -> int:
    """A valueDuration (UCUM s, min, h or d) in seconds: `default` when absent, 400 above `maximum`."""
    p = params.get(name)
    if p is None:
        return min(default, maximum)
    d = p.get("valueDuration")
    code = d.get("code") or d.get("unit") if isinstance(d, dict) else None
    value = d.get("value") if isinstance(d, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or code not in _UCUM_SECONDS or value <= 0:
        raise invalid(f"parameter {name!r} must be a positive valueDuration in s, min, h or d (UCUM)",
                      f"{where(name)}.value", "value")
    total = int(value * _UCUM_SECONDS[str(code)])
    if total > maximum:
        limit = f"{maximum // 86400} days" if maximum % 86400 == 0 else f"{maximum // 3600} hours"
        raise invalid(f"parameter {name!r} may be at most {limit}", f"{where(name)}.value", "value")
    return total
