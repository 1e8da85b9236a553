"""A module's manifest (YAML or JSON): who the module is, what it may do, and what it listens to.

A module is a SMART backend-services client (https://hl7.org/fhir/smart-app-launch/backend-services.html)
with topic-based subscriptions (https://hl7.org/fhir/uv/subscriptions-backport/). Every problem is
reported with the key at fault (`subscriptions[1].payload`), all of them at once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import yaml
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..auth import scopes
from ..auth.clients import CLIENT_ALGS, is_loopback_url

KEYS = ("id", "name", "vendor", "version", "role", "scopes", "subscriptions", "profiles", "endpoint", "jwks",
        "jwks_uri")
SUBSCRIPTION_KEYS = ("topic", "filter", "payload")
PAYLOADS = ("empty", "id-only", "full-resource")
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ROLE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*(\.[A-Za-z0-9_:-]+)*$")
_PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "k", "oth")


class ManifestError(ValueError):
    """An invalid manifest: `problems` is a list of (key, message), the key as a path into the manifest."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{k}: {m}" if k else m for k, m in problems))
        self.problems = problems


@dataclass(frozen=True)
class Subscribed:
    """One declared subscription: a topic canonical, a search-query filter (or None), a payload content."""

    topic: str
    filter: str | None
    payload: str


@dataclass(frozen=True)
class Manifest:
    id: str
    name: str
    vendor: str
    version: str
    role: str
    scopes: tuple[str, ...]
    subscriptions: tuple[Subscribed, ...]
    profiles: tuple[str, ...]
    endpoint: str | None
    jwks: dict[str, Any] | None
    jwks_uri: str | None
    raw: dict[str, Any] = field(compare=False, repr=False)

    def client_metadata(self) -> dict[str, Any]:
        """RFC 7591 metadata of the module's backend-services client: exactly the declared scopes."""
        meta: dict[str, Any] = {"client_name": f"module {self.id} ({self.name}, {self.vendor})",
                                "scope": " ".join(self.scopes), "token_endpoint_auth_method": "private_key_jwt",
                                "grant_types": ["client_credentials"], "software_id": self.id,
                                "software_version": self.version}
        if self.jwks is not None:
            meta["jwks"] = self.jwks
        else:
            meta["jwks_uri"] = self.jwks_uri
        return meta


def parse_text(text: str | bytes) -> Any:
    """The manifest document: JSON when it is a JSON object, YAML otherwise (safe loading only)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError([("", "the manifest is not UTF-8 text")]) from exc
    stripped = text.lstrip()
    try:
        if stripped.startswith("{"):
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if stripped.startswith("{") else "YAML"
        raise ManifestError([("", f"the manifest is not valid {kind}: {exc}")]) from exc


def load(text: str | bytes) -> Manifest:
    return validate(parse_text(text))


def _absolute_url(value: str, https_only_off_loopback: bool) -> str | None:
    """None when fine, else what is wrong with the URL."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "must be an absolute http(s) URL"
    if parts.fragment:
        return "must not have a fragment"
    if https_only_off_loopback and parts.scheme != "https" and not is_loopback_url(value):
        return "must use https (http only on a loopback address)"
    return None


def _canonical(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a canonical URL (a string)"
    return _absolute_url(value.split("|", 1)[0], False)


def check_filter(value: str) -> str | None:
    """A FHIR search query string, `Type?name=value&...` or `name=value&...`; None when well formed."""
    type_, sep, query = value.partition("?")
    if not sep:
        type_, query = "", value
    if type_ and not _TYPE.match(type_):
        return f"{type_!r} is not a resource type (expected Type?name=value&...)"
    if not query:
        return "is empty: give search parameters, e.g. Encounter?patient=Patient/123"
    for item in query.split("&"):
        name, eq, val = item.partition("=")
        if not eq or not name or not val:
            return f"{item!r} is not name=value"
        if not _PARAM.match(name.split(":", 1)[0]):
            return f"{name!r} is not a search parameter name"
    return None


def _check_jwks(value: Any) -> str | None:
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        return "must be a JWK Set with at least one key"
    for k in value["keys"]:
        if not isinstance(k, dict) or k.get("kty") not in ("RSA", "EC"):
            return "every key must be an RSA or EC key"
        if any(m in k for m in _PRIVATE):
            return "must hold public keys only (a private key member is present)"
        if "alg" in k and k["alg"] not in CLIENT_ALGS:
            return f"key alg must be one of {', '.join(CLIENT_ALGS)}"
    try:
        KeySet.import_key_set(cast(Any, value))
    except (JoseError, ValueError, TypeError):
        return "holds a key that cannot be read"
    return None


def _text(doc: dict[str, Any], key: str, problems: list[tuple[str, str]], pattern: re.Pattern[str] | None = None,
          hint: str = "") -> str:
    value = doc.get(key)
    if value is None:
        problems.append((key, "is required"))
        return ""
    if not isinstance(value, str) or not value.strip():
        extra = " (quote it in YAML)" if isinstance(value, (int, float)) else ""
        problems.append((key, f"must be a non-empty string{extra}"))
        return ""
    if pattern is not None and not pattern.match(value):
        problems.append((key, f"{value!r} {hint}"))
    return value.strip()


def _scopes(value: Any, problems: list[tuple[str, str]]) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        problems.append(("scopes", "must be a non-empty list of SMART scopes"))
        return ()
    out: list[str] = []
    for i, s in enumerate(value):
        key = f"scopes[{i}]"
        if not isinstance(s, str) or not s or " " in s:
            problems.append((key, "must be one SMART scope (a string without spaces)"))
            continue
        try:
            scopes.check(s)
            grant = scopes.parse_one(s)
        except scopes.ScopeError as exc:
            problems.append((key, str(exc)))
            continue
        if grant is None:
            problems.append((key, f"{s!r}: a module needs system/ resource scopes (no user or launch scopes, "
                                  "no query-narrowed scopes)"))
        elif grant.context != "system":
            problems.append((key, f"{s!r}: a module is a backend service and takes system/ scopes only"))
        elif s in out:
            problems.append((key, f"{s!r} is declared twice"))
        else:
            out.append(s)
    return tuple(out)


def _subscriptions(value: Any, problems: list[tuple[str, str]]) -> tuple[Subscribed, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(("subscriptions", "must be a list of {topic, filter, payload}"))
        return ()
    out = []
    for i, item in enumerate(value):
        key = f"subscriptions[{i}]"
        if not isinstance(item, dict):
            problems.append((key, "must be a mapping with topic, filter and payload"))
            continue
        for k in item:
            if k not in SUBSCRIPTION_KEYS:
                problems.append((f"{key}.{k}", f"unknown key (expected {', '.join(SUBSCRIPTION_KEYS)})"))
        topic = item.get("topic")
        wrong = _canonical(topic) if topic is not None else "is required"
        if wrong:
            problems.append((f"{key}.topic", wrong))
        filt = item.get("filter")
        if filt is not None:
            bad = check_filter(filt) if isinstance(filt, str) else "must be a FHIR search query string"
            if bad:
                problems.append((f"{key}.filter", bad))
        payload = item.get("payload")
        if payload not in PAYLOADS:
            problems.append((f"{key}.payload", f"must be one of {', '.join(PAYLOADS)} (got {payload!r})"))
        if isinstance(topic, str) and not wrong:
            out.append(Subscribed(topic, filt if isinstance(filt, str) else None, str(payload)))
    return tuple(out)


def _profiles(value: Any, problems: list[tuple[str, str]]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(("profiles", "must be a list of canonical URLs"))
        return ()
    for i, p in enumerate(value):
        wrong = _canonical(p)
        if wrong:
            problems.append((f"profiles[{i}]", wrong))
    return tuple(p for p in value if isinstance(p, str))


def validate(doc: Any) -> Manifest:
    """The manifest, or ManifestError naming every key at fault."""
    if not isinstance(doc, dict):
        raise ManifestError([("", "the manifest must be a mapping (a JSON object or YAML mapping) of "
                                  f"{', '.join(KEYS)}")])
    problems: list[tuple[str, str]] = []
    for k in doc:
        if k not in KEYS:
            problems.append((str(k), f"unknown key (expected {', '.join(KEYS)})"))
    id_ = _text(doc, "id", problems, _ID, "must be 1-64 lower-case letters, digits, '.', '_' or '-'")
    name = _text(doc, "name", problems)
    vendor = _text(doc, "vendor", problems)
    version = _text(doc, "version", problems)
    role = _text(doc, "role", problems, _ROLE, "must be lower-case letters, digits and '-' (e.g. lab-results)")
    granted = _scopes(doc.get("scopes"), problems)
    subs = _subscriptions(doc.get("subscriptions"), problems)
    profiles = _profiles(doc.get("profiles"), problems)
    endpoint = doc.get("endpoint")
    if endpoint is not None:
        wrong = _absolute_url(endpoint, True) if isinstance(endpoint, str) else "must be a URL (a string)"
        if wrong:
            problems.append(("endpoint", wrong))
    elif subs:
        problems.append(("endpoint", "is required when there are subscriptions (the rest-hook notification URL)"))
    jwks, jwks_uri = doc.get("jwks"), doc.get("jwks_uri")
    if (jwks is None) == (jwks_uri is None):
        problems.append(("jwks", "give exactly one of jwks (an inline JWK Set) and jwks_uri"))
    elif jwks is not None:
        wrong = _check_jwks(jwks)
        if wrong:
            problems.append(("jwks", wrong))
    elif not isinstance(jwks_uri, str) or not is_loopback_url(jwks_uri):
        problems.append(("jwks_uri", "must be an http(s) URL on a loopback address (or give jwks inline)"))
    if problems:
        raise ManifestError(problems)
    return Manifest(id_, name, vendor, version, role, granted, subs, profiles,
                    endpoint if isinstance(endpoint, str) else None, jwks, jwks_uri, dict(doc))
