"""Building Bundles from stored versions without re-parsing them: https://hl7.org/fhir/R4/bundle.html

Stored JSON goes into the Bundle as an `orjson.Fragment`, so a page of 50 resources costs one
serialisation of the envelope, not fifty parses and dumps.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import orjson

from ..fhir.instant import format_instant, now_us
from ..store import Version


def resource_fragment(v: Version) -> orjson.Fragment:
    assert v.data is not None
    return orjson.Fragment(v.data)


def new_bundle(type_: str, total: int | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid.uuid4()),
                         "meta": {"lastUpdated": format_instant(now_us())}, "type": type_}
    if total is not None:
        b["total"] = total
    return b


def link(relation: str, url: str) -> dict[str, str]:
    return {"relation": relation, "url": url}


def url_with(base: str, path: str, pairs: list[tuple[str, str]]) -> str:
    query = urlencode(pairs)
    return f"{base}/{path}" + (f"?{query}" if query else "")


def full_url(base: str, v: Version) -> str:
    return f"{base}/{v.type}/{v.id}"
