"""A brute-force FHIR search evaluator for differential tests: https://hl7.org/fhir/R4/search.html

It walks every loaded resource, evaluates each SearchParameter's FHIRPath expression with the FHIRPath
engine, and applies the spec's matching rules itself. Nothing here touches SQL, the index extractor or
the server's query parser; the only shared pieces are the value conversions the spec defines
(`norm_string` for accent- and case-insensitive strings, `date_range`/`number_range` for the implicit
range of a date or number), and the SearchParameter definitions from the registry.
"""

from __future__ import annotations

import math
import operator
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from samverka.fhir.fhirpath import FHIRPathError, evaluate
from samverka.search.normalize import date_range, norm_string, number_range
from samverka.search.params import Registry, SearchParam

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_AS = re.compile(r"\(([A-Za-z.]+) as ([A-Za-z]+)\)")
_BASE_TYPE = re.compile(r"(?<![A-Za-z.])(?:Domain)?Resource\.")
_HUMAN_NAME = ("family", "given", "prefix", "suffix", "text")
_ADDRESS = ("line", "city", "district", "state", "postalCode", "country", "text")


# Alternative readings a test may evaluate a mismatch under, to explain it (see `Dataset.reading`):
READINGS = {
    "float-number-eq": "number eq/ne computed in binary floating point (so [a, b) can be empty)",
    "range-sa-eb-numbers": "number sa/eb compare the stated value with the search value's implicit range "
                           "(sa: v >= b, eb: v < a, in floating point) instead of with the stated search value",
}


class Unsupported(Exception):
    """A query shape this evaluator does not model (the generator never produces one)."""


@dataclass(frozen=True)
class Leaf:
    """`code[:modifier]` on the resource itself."""

    param: SearchParam
    modifier: str | None


@dataclass(frozen=True)
class Chain:
    """`ref[:Type].rest`: some target of `ref` matches `rest` (parsed against the target's type)."""

    param: SearchParam
    target_type: str | None
    rest: str


@dataclass(frozen=True)
class Has:
    """`_has:Source:ref:rest`: some `Source` pointing here through `ref` matches `rest`."""

    source_type: str
    ref: SearchParam
    rest: str


Node = Leaf | Chain | Has


def split_or(raw: str) -> list[str]:
    """Split a value on unescaped commas and undo the spec's escapes (`\\,` `\\|` `\\$` `\\\\`)."""
    parts, cur, i = [], [], 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            cur.append(raw[i + 1])
            i += 2
            continue
        if ch == ",":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


@dataclass
class Dataset:
    """Every loaded resource, by type and id, with a cache of FHIRPath results per (resource, parameter)."""

    registry: Registry
    resources: dict[tuple[str, str], dict[str, Any]]
    by_type: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _values: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    _reverse: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    readings: frozenset[str] = frozenset()

    @classmethod
    def of(cls, registry: Registry, resources: Iterable[dict[str, Any]]) -> Dataset:
        """A dataset from resource dicts (as stored by the server)."""
        ds = cls(registry, {})
        for r in resources:
            ds.resources[(r["resourceType"], r["id"])] = r
            ds.by_type.setdefault(r["resourceType"], []).append(r)
        return ds

    def reading(self, name: str) -> Dataset:
        """The same data (and caches) evaluated under one alternative reading from `READINGS`."""
        assert name in READINGS, name
        return replace(self, readings=self.readings | {name})

    # -- FHIRPath ---------------------------------------------------------------------------------

    def _resolve(self, reference: str) -> dict[str, Any] | None:
        key = reference_key(reference)
        if key is None or "/" not in key:
            return None
        t, _, i = key.rpartition("/")
        return self.resources.get((t, i))

    def values(self, resource: dict[str, Any], param: SearchParam) -> list[Any]:
        """What the parameter's expression selects in `resource` (element data, no empty extension stubs)."""
        key = (resource["resourceType"], resource["id"], param.url)
        cached = self._values.get(key)
        if cached is not None:
            return cached
        # A type name heading a path selects subtypes too (FHIRPath 5.1), but the engine compares the
        # name literally, so `Resource.id` on a Patient yields nothing: name the concrete type instead.
        expression = _BASE_TYPE.sub(resource["resourceType"] + ".", param.expression)
        try:
            found = evaluate(resource, expression, resolver=self._resolve)
        except FHIRPathError as exc:
            # `x as T` demands a singleton in FHIRPath; search parameters use it as a filter per item
            # (R5 writes ofType), so a repeating x is evaluated with ofType() instead.
            if "singleton" not in str(exc):
                raise
            found = evaluate(resource, _AS.sub(r"\1.ofType(\2)", expression), resolver=self._resolve)
        out = []
        for item in found:
            data = getattr(item, "data", item) if not isinstance(item, dict | str | bool | int | float) else item
            if isinstance(data, dict) and set(data) <= {"extension", "id"}:
                continue
            out.append(data)
        self._values[key] = out
        return out

    def referrers(self, source_type: str, ref: SearchParam) -> dict[str, list[dict[str, Any]]]:
        """`Type/id` -> the resources of `source_type` whose parameter `ref` points at it."""
        key = (source_type, ref.url)
        index = self._reverse.get(key)
        if index is None:
            index = {}
            for r in self.by_type.get(source_type, []):
                for target in {k for v in self.values(r, ref) if (k := ref_of(v)) is not None}:
                    index.setdefault(target, []).append(r)
            self._reverse[key] = index
        return index

    # -- parsing ----------------------------------------------------------------------------------

    def node(self, type_: str, name: str) -> Node | None:
        """The criterion `name` on `type_`, or None when `type_` has no such parameter."""
        if name.startswith("_has:"):
            parts = name.split(":", 3)
            if len(parts) != 4:
                raise Unsupported(name)
            ref = self.registry.get(parts[1], parts[2])
            if ref is None or ref.type != "reference":
                return None
            return Has(parts[1], ref, parts[3])
        head, dot, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        param = self.registry.get(type_, code)
        if param is None:
            return None
        if dot:
            if param.type != "reference":
                raise Unsupported(f"chain through a {param.type} parameter")
            return Chain(param, modifier or None, rest)
        return Leaf(param, modifier or None)

    # -- matching ---------------------------------------------------------------------------------

    def matches(self, resource: dict[str, Any], name: str, raw: str) -> bool:
        """Whether `resource` satisfies the one criterion `name=raw`."""
        node = self.node(resource["resourceType"], name)
        if node is None:
            return False
        if isinstance(node, Leaf):
            return self._leaf(resource, node.param, node.modifier, raw)
        if isinstance(node, Chain):
            return any(self.matches(target, node.rest, raw) for target in self.targets(resource, node))
        here = f"{resource['resourceType']}/{resource['id']}"
        sources = self.referrers(node.source_type, node.ref).get(here, [])
        return any(self.matches(src, node.rest, raw) for src in sources)

    def targets(self, resource: dict[str, Any], chain: Chain) -> list[dict[str, Any]]:
        """The loaded resources that the chain's reference parameter points at from `resource`."""
        out = []
        for v in self.values(resource, chain.param):
            key = ref_of(v)
            if key is None or "/" not in key or ":" in key:
                continue
            t, _, i = key.partition("/")
            if chain.target_type is not None and t != chain.target_type:
                continue
            if chain.param.targets and t not in chain.param.targets:
                continue
            target = self.resources.get((t, i))
            if target is not None:
                out.append(target)
        return out

    def search(self, type_: str, pairs: list[tuple[str, str]]) -> set[str]:
        """Ids of the resources of `type_` matching every (name, value) pair (AND; `,` inside is OR)."""
        return {r["id"] for r in self.by_type.get(type_, []) if all(self.matches(r, n, v) for n, v in pairs)}

    def _leaf(self, resource: dict[str, Any], param: SearchParam, modifier: str | None, raw: str) -> bool:
        values = self.values(resource, param)
        kind = param.type
        if modifier == "missing":
            present = any(_has_value(kind, v) for v in values)
            return present != (raw == "true")
        if kind == "token":
            if modifier not in (None, "not", "text"):
                raise Unsupported(f"token :{modifier}")
            if modifier == "text":
                texts = [norm_string(t) for v in values for t in token_texts(v)]
                return any(t.startswith(norm_string(q)) for q in split_or(raw) for t in texts)
            pairs = [p for v in values for p in token_pairs(v)]
            hit = any(_token_match(q, pairs) for q in split_or(raw))
            return not hit if modifier == "not" else hit
        if kind == "string":
            parts = [s for v in values for s in strings(v)]
            return any(_string_match(modifier, q, parts) for q in split_or(raw))
        if kind == "reference":
            if modifier is not None and not modifier[:1].isupper():
                raise Unsupported(f"reference :{modifier}")
            keys = [k for v in values if (k := ref_of(v)) is not None]
            return any(_reference_match(param, modifier, q, keys) for q in split_or(raw))
        if modifier is not None:
            raise Unsupported(f"{kind} :{modifier}")
        if kind == "date":
            ranges = [r for v in values for r in date_ranges(v)]
            return any(_date_match(q, ranges) for q in split_or(raw))
        if kind == "number":
            return any(_number_match(*_split_prefix(q), v, self.readings)
                       for q in split_or(raw) for v in values if _is_number(v))
        if kind == "quantity":
            return any(_quantity_match(q, values, self.readings) for q in split_or(raw))
        raise Unsupported(f"{kind} parameters")

    def explain(self, resource: dict[str, Any], pairs: list[tuple[str, str]]) -> dict[str, Any]:
        """The values each criterion's parameter has in `resource` (following chains and _has one step)."""
        out: dict[str, Any] = {}
        for name, raw in pairs:
            node = self.node(resource["resourceType"], name)
            if isinstance(node, Leaf):
                out[name] = _plain(self.values(resource, node.param))
            elif isinstance(node, Chain):
                out[name] = {f"{t['resourceType']}/{t['id']}": self.explain(t, [(node.rest, raw)])
                             for t in self.targets(resource, node)}
            elif isinstance(node, Has):
                here = f"{resource['resourceType']}/{resource['id']}"
                srcs = self.referrers(node.source_type, node.ref).get(here, [])
                out[name] = {f"{s['resourceType']}/{s['id']}": self.explain(s, [(node.rest, raw)]) for s in srcs[:5]}
                out[name]["(referrers)"] = len(srcs)
            else:
                out[name] = "(no such parameter)"
        return out


# -- tokens -------------------------------------------------------------------------------------------


def token_pairs(v: Any) -> list[tuple[str | None, str]]:
    """(system, code) pairs of a token value: Coding, CodeableConcept, Identifier, code, boolean, id."""
    if isinstance(v, bool):
        return [(None, "true" if v else "false")]
    if isinstance(v, str):
        return [(None, v)]
    if not isinstance(v, dict):
        return []
    if "coding" in v or ("text" in v and "code" not in v and "value" not in v):
        return [p for c in v.get("coding", []) for p in token_pairs(c)]
    if "value" in v and isinstance(v["value"], str):  # Identifier, ContactPoint
        return [(v.get("system"), v["value"])]
    if isinstance(v.get("code"), str):  # Coding
        return [(v.get("system"), v["code"])]
    return []


def token_texts(v: Any) -> list[str]:
    """Texts for :text: CodeableConcept.text, Coding.display and Identifier.type.text (R4 search.html#text)."""
    if not isinstance(v, dict):
        return []
    out = [v["text"]] if isinstance(v.get("text"), str) else []
    out += [c["display"] for c in v.get("coding", []) if isinstance(c.get("display"), str)]
    if isinstance(v.get("display"), str):
        out.append(v["display"])
    if "value" in v and isinstance(v.get("type"), dict) and isinstance(v["type"].get("text"), str):
        out.append(v["type"]["text"])
    return out


def _token_match(q: str, pairs: list[tuple[str | None, str]]) -> bool:
    """[code] any system; [system]|[code]; |[code] no system; [system]| any code in that system."""
    if "|" not in q:
        return any(c == q for _, c in pairs)
    system, _, code = q.partition("|")
    if not system:
        return any(c == code and not s for s, c in pairs)
    if not code:
        return any(s == system for s, _ in pairs)
    return any(s == system and c == code for s, c in pairs)


# -- strings ------------------------------------------------------------------------------------------


def strings(v: Any) -> list[str]:
    """The string parts a value offers: itself, or the parts of a HumanName or an Address."""
    if isinstance(v, str):
        return [v]
    if not isinstance(v, dict):
        return []
    out: list[str] = []
    for k in (*_HUMAN_NAME, *_ADDRESS):
        part = v.get(k)
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, list):
            out += [p for p in part if isinstance(p, str)]
    return out


def _string_match(modifier: str | None, q: str, parts: list[str]) -> bool:
    if modifier == "exact":
        return q in parts
    n = norm_string(q)
    if modifier == "contains":
        return any(n in norm_string(s) for s in parts)
    if modifier is not None:
        raise Unsupported(f"string :{modifier}")
    return any(norm_string(s).startswith(n) for s in parts)


# -- references ---------------------------------------------------------------------------------------


def reference_key(ref: str) -> str | None:
    """`Type/id` for a relative reference (minus `/_history/n`), the URL for an absolute one, None for `#x`."""
    if not ref or ref.startswith("#"):
        return None
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return "/".join(parts)


def ref_of(v: Any) -> str | None:
    if isinstance(v, dict):
        ref = v.get("reference")
        return reference_key(ref) if isinstance(ref, str) else None
    if isinstance(v, str):  # canonical / uri
        return v
    return None


def _reference_match(param: SearchParam, modifier: str | None, q: str, keys: list[str]) -> bool:
    """[type]/[id]; a bare [id] (any target type); :[type] with [id]; an absolute URL as given."""
    if modifier is not None and "/" not in q:
        q = f"{modifier}/{q}"
    if "/" in q or q.startswith("urn:"):
        return reference_key(q) in keys
    return any("/" in k and ":" not in k and k.partition("/")[2] == q
               and (not param.targets or k.partition("/")[0] in param.targets) for k in keys)


# -- dates, numbers, quantities ------------------------------------------------------------------------


def date_ranges(v: Any) -> list[tuple[float, float]]:
    """Inclusive µs ranges: a date/dateTime/instant by its precision; a Period from start to end (open
    ends unbounded); a Timing by its events."""
    if isinstance(v, str):
        try:
            return [date_range(v)]
        except ValueError:
            return []
    if not isinstance(v, dict):
        s = str(v) if v is not None else ""
        return date_ranges(s) if s and not isinstance(v, bool | int | float | Decimal) else []
    if "start" in v or "end" in v:
        lo = date_range(v["start"])[0] if isinstance(v.get("start"), str) else -math.inf
        hi = date_range(v["end"])[1] if isinstance(v.get("end"), str) else math.inf
        return [(lo, hi)]
    if "event" in v:
        return [r for e in v.get("event", []) for r in date_ranges(e)]
    return []


_EXACT = {"gt": operator.gt, "lt": operator.lt, "ge": operator.ge, "le": operator.le, "sa": operator.gt,
          "eb": operator.lt}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | Decimal) and not isinstance(v, bool)


def _split_prefix(q: str) -> tuple[str, str]:
    if q[:2] in PREFIXES and len(q) > 2 and (q[2].isdigit() or q[2] == "-"):
        return q[:2], q[2:]
    return "eq", q


def compare(prefix: str, lo: float, hi: float, a: float, b: float, approx: float = 0.0) -> bool:
    """The spec's prefix table: target range [lo, hi] against search range [a, b] (both inclusive).

    eq: the search range fully contains the target; ne: it does not; gt/lt: the range above/below
    the search value overlaps the target; ge/le: that, or eq; sa/eb: the target starts after / ends
    before the search range; ap: the target overlaps the search range widened by `approx` each side.
    """
    contains = a <= lo and hi <= b
    if prefix == "eq":
        return contains
    if prefix == "ne":
        return not contains
    if prefix == "gt":
        return hi > b
    if prefix == "lt":
        return lo < a
    if prefix == "ge":
        return hi > b or contains
    if prefix == "le":
        return lo < a or contains
    if prefix == "sa":
        return lo > b
    if prefix == "eb":
        return hi < a
    if prefix == "ap":
        return lo <= b + approx and hi >= a - approx
    raise Unsupported(f"prefix {prefix}")


def _date_match(q: str, ranges: list[tuple[float, float]]) -> bool:
    """The prefix table over ranges; `ap` widens the search range by the spec's recommended 10% of the
    gap between now and the date (data years old makes the instant of "now" immaterial)."""
    prefix, text = _split_prefix(q)
    a, b = date_range(text)
    approx = abs(time.time() * 1_000_000 - a) / 10 if prefix == "ap" else 0.0
    return any(compare(prefix, lo, hi, a, b, approx) for lo, hi in ranges)


def _number_match(prefix: str, text: str, value: Any, readings: frozenset[str]) -> bool:
    """A stated number against a search number (R4 search.html#number): without a prefix, `100` means the
    values in [99.5, 100.5), its implicit precision (half-open, so each value rounds to one search
    value); `ne` is the complement; `ap` widens that by 10% of the search value; for gt/lt/ge/le/sa/eb
    "the implicit precision of the number is ignored" and the stated values compare exactly."""
    v, q = Decimal(str(value)), Decimal(text)
    exact = _EXACT.get(prefix)
    if exact is not None and not (prefix in ("sa", "eb") and "range-sa-eb-numbers" in readings):
        return exact(v, q)
    fa, fb = number_range(text)
    if prefix == "sa":  # only under the "range-sa-eb-numbers" reading
        return float(value) >= fb
    if prefix == "eb":
        return float(value) < fa
    if prefix in ("eq", "ne") and "float-number-eq" in readings:
        return (fa <= float(value) < fb) == (prefix == "eq")
    exponent = q.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5).scaleb(exponent - 1)
    a, b = q - half, q + half
    if prefix == "ap":
        return a - abs(q) / 10 <= v <= b + abs(q) / 10
    return (a <= v < b) == (prefix == "eq")


def _quantity_match(q: str, values: list[Any], readings: frozenset[str]) -> bool:
    """[prefix][number]|[system]|[code]: the number by the prefix table, then system and code (or unit)."""
    number, *rest = q.split("|")
    prefix, text = _split_prefix(number)
    system = code = None
    if len(rest) == 2:
        system, code = rest[0] or None, rest[1] or None
    elif rest:
        raise Unsupported(f"quantity value {q!r}")
    for v in values:
        if not isinstance(v, dict) or not _is_number(v.get("value")):
            continue
        if system is not None and v.get("system") != system:
            continue
        units = (v.get("code"),) if system is not None else (v.get("code"), v.get("unit"))  # ||code: code or unit
        if code is not None and code not in units:
            continue
        if _number_match(prefix, text, v["value"], readings):
            return True
    return False


# -- :missing -----------------------------------------------------------------------------------------


def _has_value(kind: str, v: Any) -> bool:
    """Whether one selected item is a searchable value of a parameter of type `kind`."""
    if kind == "token":
        return bool(token_pairs(v))
    if kind == "string":
        return bool(strings(v))
    if kind == "reference":
        return ref_of(v) is not None
    if kind == "date":
        return bool(date_ranges(v))
    if kind == "number":
        return _is_number(v)
    if kind == "quantity":
        return isinstance(v, dict) and _is_number(v.get("value"))
    return v is not None


def _plain(values: list[Any]) -> Any:
    def conv(x: Any) -> Any:
        if isinstance(x, Decimal):
            return float(x)
        if isinstance(x, Mapping):
            return {k: conv(y) for k, y in x.items()}
        if isinstance(x, list):
            return [conv(y) for y in x]
        return x if isinstance(x, str | int | float | bool) or x is None else str(x)
    return [conv(v) for v in values]
