"""A seeded random FHIR search query generator over loaded data: https://hl7.org/fhir/R4/search.html

Values are picked from real resources (a code a resource has, a prefix of a name it has, a date it
carries at some precision), so many queries match something. Each query records its features
(`token:not`, `date:ge:day`, `chain`, ...) so a test can count what it skipped and why.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from samverka.search.params import SearchParam

from .bruteforce import Dataset, date_ranges, ref_of, strings, token_pairs, token_texts

# the parameters drawn per resource type (absent ones still make good :missing queries)
PARAMS: dict[str, tuple[str, ...]] = {
    "Patient": ("gender", "birthdate", "name", "family", "given", "identifier", "address-city", "address-state",
                "address-postalcode", "address", "deceased", "death-date", "language", "_id",
                "general-practitioner", "organization", "email"),
    "Observation": ("code", "category", "status", "date", "value-quantity", "value-quantity", "value-quantity",
                    "subject", "patient", "encounter", "value-concept", "component-code", "component-value-quantity",
                    "component-value-quantity", "combo-code", "performer", "value-string"),
    "Encounter": ("class", "type", "status", "date", "subject", "patient", "service-provider", "participant",
                  "practitioner", "reason-code", "length", "_id"),
    "Condition": ("code", "clinical-status", "verification-status", "category", "onset-date", "abatement-date",
                  "recorded-date", "subject", "patient", "encounter"),
    "MedicationRequest": ("code", "status", "intent", "authoredon", "subject", "patient", "encounter", "requester",
                          "medication"),
    "Procedure": ("code", "status", "date", "subject", "patient", "encounter", "reason-code", "performer"),
    "Immunization": ("vaccine-code", "status", "date", "patient", "location", "status-reason"),
    "DiagnosticReport": ("code", "category", "status", "date", "issued", "subject", "patient", "encounter",
                         "result", "performer"),
    # reachable through chains only
    "Organization": ("name", "address-city", "identifier"),
    "Practitioner": ("name", "family", "given", "gender", "identifier"),
}
QUERY_TYPES = ("Patient", "Observation", "Encounter", "Condition", "MedicationRequest", "Procedure",
               "Immunization", "DiagnosticReport")
TYPE_WEIGHTS = (4, 4, 2, 2, 1, 1, 1, 1)  # Patient carries the strings, Observation the quantities
# reference parameters to chain through, per type
CHAINS: dict[str, tuple[str, ...]] = {
    "Observation": ("subject", "patient", "encounter"),
    "Encounter": ("subject", "service-provider", "participant"),
    "Condition": ("subject", "encounter"),
    "MedicationRequest": ("subject", "requester", "encounter"),
    "Procedure": ("subject", "encounter"),
    "Immunization": ("patient",),
    "DiagnosticReport": ("subject", "encounter", "result"),
}
# (source type, reference parameter) for `_has`, per target type
HAS: dict[str, tuple[tuple[str, str], ...]] = {
    "Patient": (("Observation", "patient"), ("Observation", "subject"), ("Condition", "subject"),
                ("Encounter", "patient"), ("Immunization", "patient"), ("MedicationRequest", "subject")),
    "Encounter": (("Observation", "encounter"), ("Procedure", "encounter"), ("Condition", "encounter")),
}
DATE_PREFIXES = ("", "", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_ACCENTS = {"a": "á", "e": "é", "i": "í", "o": "ö", "u": "ü", "n": "ñ", "c": "ç"}


@dataclass(frozen=True)
class GenQuery:
    """One generated search: the type, the (name, value) pairs and the features it exercises."""

    type: str
    pairs: tuple[tuple[str, str], ...]
    features: tuple[str, ...]

    def text(self) -> str:
        """The query as a URL path and query string."""
        return self.type + "?" + "&".join(f"{n}={quote(v, safe='|,:/')}" for n, v in self.pairs)


@dataclass(frozen=True)
class _Crit:
    name: str
    value: str
    features: tuple[str, ...]


def escape(value: str) -> str:
    """Escape the spec's search separators in a literal value."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")


class QueryGenerator:
    """Random queries over `ds`, reproducible from `seed`."""

    def __init__(self, ds: Dataset, seed: int) -> None:
        self.ds = ds
        self.rng = random.Random(seed)

    def generate(self, n: int) -> list[GenQuery]:
        """`n` queries."""
        return [self.query() for _ in range(n)]

    def query(self) -> GenQuery:
        """One query of 1-3 ANDed criteria on a random type, mostly drawn from one anchor resource."""
        rng = self.rng
        type_ = rng.choices(QUERY_TYPES, TYPE_WEIGHTS)[0]
        anchor = rng.choice(self.ds.by_type[type_])
        n = rng.choices((1, 2, 3), (5, 3, 2))[0]
        crits: list[_Crit] = []
        while len(crits) < n:
            r = anchor if rng.random() < 0.7 else rng.choice(self.ds.by_type[type_])
            roll = rng.random()
            crit: _Crit | None
            if roll < 0.14 and type_ in CHAINS:
                crit = self._chain(r, depth=0)
            elif roll < 0.24 and type_ in HAS:
                crit = self._has(r)
            elif roll < 0.32:
                code = rng.choice(PARAMS[type_])
                crit = _Crit(f"{code}:missing", rng.choice(("true", "false")), ("missing",))
            elif roll < 0.38 and (pair := self._window(r)) is not None:  # a date window (search.window)
                crits.append(pair[0])
                crit = pair[1]
            else:
                crit = self._leaf(r, self._pick_code(r))
            if crit is not None:
                crits.append(crit)
        features = tuple(sorted({f for c in crits for f in c.features} | ({"and"} if n > 1 else set())))
        return GenQuery(type_, tuple((c.name, c.value) for c in crits), features)

    # -- criteria ---------------------------------------------------------------------------------

    def _pick_code(self, r: dict[str, Any]) -> str:
        """Mostly a parameter `r` has values for (so the query can match), sometimes any."""
        codes = PARAMS[r["resourceType"]]
        present = [c for c in codes if (p := self._param(r["resourceType"], c)) and self.ds.values(r, p)]
        return self.rng.choice(present if present and self.rng.random() < 0.85 else codes)

    def _param(self, type_: str, code: str) -> SearchParam | None:
        return self.ds.registry.get(type_, code)

    def _leaf(self, r: dict[str, Any], code: str) -> _Crit | None:
        """A criterion on `code` with values from `r` (and, for an OR list, from other resources)."""
        p = self._param(r["resourceType"], code)
        if p is None:
            return None
        form = self._form(p)
        first = self._value(p, form, r)
        if first is None:
            if self.rng.random() < 0.2:
                return _Crit(f"{code}:missing", self.rng.choice(("true", "false")), ("missing",))
            return None
        modifier, value, features = first
        values = [value]
        if self.rng.random() < 0.25 and form not in ("system|", "text"):
            pool = self.ds.by_type[r["resourceType"]]
            for _ in range(self.rng.randint(1, 2)):
                extra = self._value(p, form, self.rng.choice(pool))
                if extra is not None and extra[0] == modifier and extra[1] not in values:
                    values.append(extra[1])
        if len(values) > 1:
            features = (*features, "or")
        name = f"{code}:{modifier}" if modifier else code
        return _Crit(name, ",".join(values), features)

    def _form(self, p: SearchParam) -> str:
        rng = self.rng
        if p.code == "_id":
            return rng.choice(("code", "code", "not"))
        if p.type == "token":
            return rng.choice(("code", "system|code", "system|code", "|code", "system|", "not", "not", "text"))
        if p.type == "string":
            return rng.choice(("prefix", "prefix", "prefix", "exact", "contains"))
        if p.type == "reference":
            return rng.choice(("Type/id", "Type/id", "id", ":Type"))
        if p.type == "date":
            return rng.choice(DATE_PREFIXES)
        if p.type == "quantity":
            return rng.choice(DATE_PREFIXES)
        return ""

    def _value(self, p: SearchParam, form: str, r: dict[str, Any]) -> tuple[str | None, str, tuple[str, ...]] | None:
        """(modifier, value, features) for `form`, drawn from `r`; None when `r` has nothing usable."""
        values = self.ds.values(r, p)
        if p.type == "token":
            return self._token(form, values)
        if p.type == "string":
            return self._string(form, values)
        if p.type == "reference":
            return self._reference(form, values)
        if p.type == "date":
            return self._date(form, values)
        if p.type == "quantity":
            return self._quantity(form, values)
        return None

    def _token(self, form: str, values: list[Any]) -> tuple[str | None, str, tuple[str, ...]] | None:
        rng = self.rng
        if form == "text":
            texts = [t for v in values for t in token_texts(v)]
            if not texts:
                return None
            text = rng.choice(texts)
            return "text", escape(text[: rng.randint(3, max(3, len(text)))]), ("token:text",)
        pairs = [pr for v in values for pr in token_pairs(v)]
        if not pairs:
            return None
        system, code = rng.choice(pairs)
        if form == "not":
            value = f"{system}|{code}" if system and rng.random() < 0.5 else code
            return "not", value, ("token:not",)
        if form == "system|code" and system:
            return None, f"{system}|{code}", ("token:system|code",)
        if form == "|code":
            return None, f"|{code}", ("token:|code",)
        if form == "system|" and system:
            return None, f"{system}|", ("token:system|",)
        return None, code, ("token:code",)

    def _string(self, form: str, values: list[Any]) -> tuple[str | None, str, tuple[str, ...]] | None:
        rng = self.rng
        parts = [s for v in values for s in strings(v) if s.strip()]
        if not parts:
            return None
        part = rng.choice(parts)
        if form == "exact":
            text = part if rng.random() < 0.8 else part.swapcase()
            return "exact", escape(text), ("string:exact",)
        if form == "contains":
            i = rng.randrange(len(part))
            text = part[i:i + rng.randint(2, 6)]
            return "contains", escape(self._vary(text)), ("string:contains",)
        size = rng.randint(1, 2) if rng.random() < 0.4 else rng.randint(1, len(part))  # short prefixes hit many
        return None, escape(self._vary(part[:size])), ("string",)

    def _vary(self, text: str) -> str:
        """The same text as a search would fold it: other case, accents added or stripped."""
        rng = self.rng
        choice = rng.random()
        if choice < 0.25:
            return text.upper()
        if choice < 0.45:
            return text.lower()
        if choice < 0.65:
            return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
        if choice < 0.85:
            spots = [i for i, c in enumerate(text) if c.lower() in _ACCENTS]
            if spots:
                i = rng.choice(spots)
                accented = _ACCENTS[text[i].lower()]
                return text[:i] + (accented.upper() if text[i].isupper() else accented) + text[i + 1:]
        return text

    def _reference(self, form: str, values: list[Any]) -> tuple[str | None, str, tuple[str, ...]] | None:
        keys = [k for v in values if (k := ref_of(v)) is not None and "/" in k and ":" not in k]
        if not keys:
            return None
        type_, _, id_ = self.rng.choice(keys).partition("/")
        if form == "id":
            return None, id_, ("reference:id",)
        if form == ":Type":
            return type_, id_, ("reference:Type",)
        return None, f"{type_}/{id_}", ("reference:Type/id",)

    def _date(self, prefix: str, values: list[Any]) -> tuple[str | None, str, tuple[str, ...]] | None:
        rng = self.rng
        texts: list[str] = []
        for v in values:
            if isinstance(v, str):
                texts.append(v)
            elif isinstance(v, dict):
                texts += [v[k] for k in ("start", "end") if isinstance(v.get(k), str)]
                texts += [e for e in v.get("event", []) if isinstance(e, str)]
            elif v is not None and date_ranges(v):
                texts.append(str(v))
        if not texts:
            return None
        s = rng.choice(texts)
        if rng.random() < 0.15:  # a neighbouring year, to land on edges and empty results
            s = f"{int(s[:4]) + rng.choice((-1, 1)):04d}{s[4:]}"
        cuts = [(4, "year"), (7, "month"), (10, "day")]
        if len(s) >= 19:
            cuts += [(16, "minute"), (19, "second")]
        cut, precision = rng.choice(cuts)
        text = s[:cut]
        if cut > 10:
            text += rng.choice(("Z", "+00:00", "-05:00", "+01:00", ""))
        if rng.random() < 0.3:  # the value as stated: search and target ranges coincide, the prefixes' edge
            text, precision = s, "stated"
        return None, prefix + text, (f"date:{prefix or 'eq'}:{precision}",)

    def _window(self, r: dict[str, Any]) -> tuple[_Crit, _Crit] | None:
        """`date=ge<x>&date=lt<y>` (or gt/sa, le/eb) on one date parameter of `r`, both ends from its values."""
        rng = self.rng
        codes = [c for c in PARAMS[r["resourceType"]] if (p := self._param(r["resourceType"], c)) and p.type == "date"
                 and self.ds.values(r, p)]
        if not codes:
            return None
        code = rng.choice(codes)
        p = self._param(r["resourceType"], code)
        assert p is not None
        values = self.ds.values(r, p)
        low = self._date(rng.choice(("ge", "ge", "gt", "sa")), values)
        high = self._date(rng.choice(("lt", "lt", "le", "eb")), values)
        if low is None or high is None:
            return None
        return (_Crit(code, low[1], (*low[2], "date:window")), _Crit(code, high[1], (*high[2], "date:window")))

    def _quantity(self, prefix: str, values: list[Any]) -> tuple[str | None, str, tuple[str, ...]] | None:
        rng = self.rng
        qs = [v for v in values if isinstance(v, dict) and isinstance(v.get("value"), int | float | Decimal)]
        if not qs:
            return None
        q = rng.choice(qs)
        number = Decimal(str(q["value"]))
        if rng.random() < 0.2:
            number *= Decimal(rng.choice(("0.9", "1.05", "1.5")))
        digits = rng.choice((0, 1, 2, None))
        text = str(number) if digits is None else f"{number:.{digits}f}"
        unit = rng.random()
        features = [f"quantity:{prefix or 'eq'}"]
        if unit < 0.3 and q.get("system") and q.get("code"):
            text += f"|{q['system']}|{q['code']}"
            features.append("quantity:system|code")
        elif unit < 0.5 and (q.get("code") or q.get("unit")):
            text += f"||{q.get('code') or q.get('unit')}"
            features.append("quantity:||code")
        return None, prefix + text, tuple(features)

    def _chain(self, r: dict[str, Any], depth: int) -> _Crit | None:
        """`ref[:Type].inner=value`: follow one of `r`'s references and draw the inner criterion there."""
        rng = self.rng
        code = rng.choice(CHAINS[r["resourceType"]])
        p = self._param(r["resourceType"], code)
        if p is None:
            return None
        keys = [k for v in self.ds.values(r, p) if (k := ref_of(v)) is not None and "/" in k and ":" not in k]
        if not keys:
            return None
        t, _, i = rng.choice(keys).partition("/")
        target = self.ds.resources.get((t, i))
        if target is None:
            return None
        inner: _Crit | None
        if depth == 0 and t in CHAINS and rng.random() < 0.3:
            inner = self._chain(target, depth + 1)
        else:
            inner = self._leaf(target, self._pick_code(target))
        if inner is None:
            return None
        head = f"{code}:{t}" if rng.random() < 0.5 else code
        return _Crit(f"{head}.{inner.name}", inner.value, ("chain", *inner.features))

    def _has(self, r: dict[str, Any]) -> _Crit | None:
        """`_has:Source:ref:inner=value`: a resource pointing at `r` supplies the inner criterion."""
        rng = self.rng
        source_type, code = rng.choice(HAS[r["resourceType"]])
        p = self._param(source_type, code)
        if p is None:
            return None
        here = f"{r['resourceType']}/{r['id']}"
        sources = self.ds.referrers(source_type, p).get(here)
        if not sources:
            return None
        source = rng.choice(sources)
        inner = self._leaf(source, self._pick_code(source))
        if inner is None or "." in inner.name:
            return None
        return _Crit(f"_has:{source_type}:{code}:{inner.name}", inner.value, ("_has", *inner.features))
