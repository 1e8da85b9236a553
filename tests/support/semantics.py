"""`Seeded`: a store on one backend driven through the in-process interaction handlers (search semantics tests)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from samverka.errors import FhirError
from samverka.interactions.context import Services
from samverka.interactions.search import search
from samverka.interactions.update import update
from samverka.search.query import parse_pairs

BASE = "http://semantics.test/fhir"


class Seeded:
    """A fresh store on one backend; `put` resources in, `ids` and `error` ask the search handler."""

    def __init__(self, svc: Services, backend: str) -> None:
        self.svc = svc
        self.backend = backend

    def put(self, *resources: dict[str, Any]) -> None:
        for r in resources:
            result = update(self.svc, r["resourceType"], r["id"], r)
            assert result.status in (200, 201), result

    def ids(self, type_: str, query: str) -> set[str]:
        """The ids of the matches (every page of up to 1,000) for `Type?query`."""
        result = search(self.svc, BASE, type_, [*parse_pairs(query), ("_count", "1000")], strict=True)
        assert result.status == 200 and result.resource is not None
        entries = result.resource.get("entry", [])
        assert not any(link["relation"] == "next" for link in result.resource["link"]), "more than one page"
        return {e["fullUrl"].rsplit("/", 1)[1] for e in entries if e["search"]["mode"] == "match"}

    def explain(self, type_: str | None, query: str) -> dict[str, Any]:
        """The `_explain` diagnostics (strategy, probes, notes, SQL) of `Type?query`."""
        result = search(self.svc, BASE, type_, [*parse_pairs(query), ("_explain", "true"), ("_count", "1000")],
                        strict=True)
        assert result.resource is not None
        for e in result.resource["entry"]:
            if e["search"]["mode"] == "outcome":
                for issue in e["resource"]["issue"]:
                    if issue["code"] == "informational":
                        return dict(orjson.loads(issue["diagnostics"]))
        raise AssertionError("no _explain issue")

    def error(self, type_: str, query: str) -> FhirError:
        """The FhirError the search raises (fails when it answers instead)."""
        with pytest.raises(FhirError) as info:
            search(self.svc, BASE, type_, parse_pairs(query), strict=True)
        return info.value
