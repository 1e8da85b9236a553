"""Reading an R4 Subscription with the backport profile into what the server delivers on.

https://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition-backport-subscription.html and
https://hl7.org/fhir/uv/subscriptions-backport/components.html#subscription. The topic's canonical URL
is `Subscription.criteria`; the extensions carry the filter (`criteria` → `backport-filter-criteria`), the
payload content (`channel.payload` → `backport-payload-content`), the heartbeat period, the timeout and
the maximum number of events per notification. Channels: rest-hook and websocket
(https://hl7.org/fhir/uv/subscriptions-backport/channels.html#websockets). A bad topic or filter is a
422 whose issue names the element (`Subscription.criteria`, `Subscription.criteria.extension[0].value`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from ..errors import Category, FhirError, Issue, invalid
from ..fhir.instant import parse_instant
from ..search.params import Registry
from ..search.query import Chain, Has, parse
from . import topics

EXT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
PROFILE = f"{EXT}backport-subscription"
FILTER = f"{EXT}backport-filter-criteria"
PAYLOAD = f"{EXT}backport-payload-content"
HEARTBEAT = f"{EXT}backport-heartbeat-period"
TIMEOUT = f"{EXT}backport-timeout"
MAX_COUNT = f"{EXT}backport-max-count"
# Samverka's extension on a replacement module's Subscription (samverka.modules): continue after the
# predecessor's last acknowledged event, `afterSequence` being that event's outbox position
HANDOVER = "https://samverka.se/fhir/StructureDefinition/subscription-handover"
CONTENTS = ("empty", "id-only", "full-resource")
CHANNELS = ("rest-hook", "websocket")
# `event_subscription.endpoint` of a websocket channel: not a URL (rest-hook endpoints are http(s)://),
# so the rest-hook worker never POSTs for it and `events.websocket` delivers it instead
WEBSOCKET = "websocket"
CLIENT_STATUSES = ("requested", "off")  # what a client may ask for; active and error are the server's


@dataclass(frozen=True)
class Spec:
    """What a Subscription asks for, checked."""

    id: str
    status: str
    topic: str
    filter: str | None  # "Type?query"
    payload: str
    endpoint: str
    headers: tuple[str, ...]
    heartbeat: int | None
    timeout: int | None
    max_count: int | None
    end_us: int | None


def _unprocessable(message: str, expression: str) -> FhirError:
    return FhirError(Category.UNPROCESSABLE, [Issue("error", "value", message, expression)])


def _ext(element: Any, url: str) -> tuple[int, dict[str, Any]] | None:
    if not isinstance(element, dict):
        return None
    for i, e in enumerate(element.get("extension") or ()):
        if isinstance(e, dict) and e.get("url") == url:
            return i, e
    return None


def _int_ext(channel: dict[str, Any], url: str, key: str, minimum: int) -> int | None:
    found = _ext(channel, url)
    if found is None:
        return None
    i, e = found
    value = e.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _unprocessable(f"{url.rsplit('/', 1)[-1]} needs {key} >= {minimum}",
                             f"Subscription.channel.extension[{i}].{key}")
    return value


def normalise_filter(raw: str, topic: topics.Topic) -> str:
    """"Encounter?patient=Patient/123", the older "Encounter.patient=Patient/123", or "patient=..." (the
    topic's single type) → "Type?query"."""
    raw = raw.strip()
    if "?" in raw:
        return raw
    head, dot, rest = raw.partition(".")
    if dot and head in topic.types and "=" in rest:
        return f"{head}?{rest}"
    if len(topic.types) == 1:
        return f"{next(iter(topic.types))}?{raw}"
    raise ValueError("give the resource type: Type?param=value")


def check_filter(registry: Registry, topic: topics.Topic, raw: str, expression: str) -> str:
    """The filter as "Type?query"; 422 naming `expression` unless the topic allows every parameter."""
    try:
        text = normalise_filter(raw, topic)
    except ValueError as exc:
        raise _unprocessable(f"filter {raw!r}: {exc}", expression) from None
    type_, _, query = text.partition("?")
    if type_ not in topic.types:
        raise _unprocessable(f"filter {raw!r}: topic {topic.url} is about {', '.join(sorted(topic.types))},"
                             f" not {type_}", expression)
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        raise _unprocessable(f"filter {raw!r} has no parameters", expression)
    allowed = topic.can_filter_by.get(type_, ())
    for name, _v in pairs:
        if name.split(":", 1)[0] not in allowed:
            raise _unprocessable(f"filter {raw!r}: {name} is not a filter of topic {topic.url} "
                                 f"(canFilterBy: {', '.join(allowed)})", expression)
    try:
        q = parse(registry, type_, pairs)
    except FhirError as exc:
        raise _unprocessable(f"filter {raw!r}: {exc.message}", expression) from None
    if q.unknown:
        raise _unprocessable(f"filter {raw!r}: unknown parameter {q.unknown[0]}", expression)
    if q.result or any(isinstance(n, Chain | Has) for n in q.criteria):
        raise _unprocessable(f"filter {raw!r}: only plain search parameters (no chains, _has or result "
                             "parameters) can filter notifications", expression)
    return text


def read_spec(registry: Registry, sub: dict[str, Any]) -> Spec:
    """Check a Subscription resource; raise a 400/422 FhirError naming the element at fault."""
    criteria = sub.get("criteria")
    if not isinstance(criteria, str) or not criteria:
        raise invalid("Subscription.criteria must name a subscription topic (canonical URL)",
                      "Subscription.criteria", "required")
    topic = topics.get(criteria)
    if topic is None:
        known = ", ".join(sorted(topics.BY_URL))
        raise _unprocessable(f"unknown subscription topic {criteria!r}; this server supports {known}",
                             "Subscription.criteria")
    filter_: str | None = None
    found = _ext(sub.get("_criteria"), FILTER)
    if found is not None:
        i, e = found
        value = e.get("valueString")
        expr = f"Subscription.criteria.extension[{i}].valueString"
        if not isinstance(value, str) or not value.strip():
            raise _unprocessable("backport-filter-criteria needs a valueString", expr)
        filter_ = check_filter(registry, topic, value, expr)
    channel = sub.get("channel")
    if not isinstance(channel, dict):
        raise invalid("Subscription.channel is required", "Subscription.channel", "required")
    ctype = channel.get("type")
    if ctype not in CHANNELS:
        raise _unprocessable(f"channel type {ctype!r} is not supported; this server delivers "
                             f"{' and '.join(CHANNELS)}", "Subscription.channel.type")
    endpoint = channel.get("endpoint")
    if ctype == "websocket":
        endpoint = WEBSOCKET  # the client connects to us ($get-ws-binding-token); no endpoint of its own
    elif not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise _unprocessable("a rest-hook channel needs an http(s) endpoint", "Subscription.channel.endpoint")
    payload = "empty"
    found = _ext(channel.get("_payload"), PAYLOAD)
    if found is not None:
        i, e = found
        code = e.get("valueCode")
        if code not in CONTENTS:
            raise _unprocessable(f"payload content must be one of {', '.join(CONTENTS)}",
                                 f"Subscription.channel.payload.extension[{i}].valueCode")
        payload = str(code)
    mime = channel.get("payload")
    if mime is not None and mime not in ("application/fhir+json", "application/json"):
        raise _unprocessable(f"payload {mime!r} is not supported; use application/fhir+json",
                             "Subscription.channel.payload")
    headers = channel.get("header") or []
    for i, h in enumerate(headers):
        if not isinstance(h, str) or ":" not in h or not h.partition(":")[0].strip():
            raise _unprocessable("a channel header is 'Name: value'", f"Subscription.channel.header[{i}]")
    end_us = None
    if sub.get("end"):
        try:
            end_us = parse_instant(str(sub["end"]))
        except ValueError:
            raise invalid("Subscription.end is not a valid instant", "Subscription.end") from None
    return Spec(
        id=str(sub.get("id") or ""), status=str(sub.get("status") or ""), topic=criteria, filter=filter_,
        payload=payload, endpoint=endpoint, headers=tuple(headers),
        heartbeat=_int_ext(channel, HEARTBEAT, "valueUnsignedInt", 1),
        timeout=_int_ext(channel, TIMEOUT, "valueUnsignedInt", 1),
        max_count=_int_ext(channel, MAX_COUNT, "valuePositiveInt", 1), end_us=end_us,
    )


def check_client_status(status: str, current: str | None) -> None:
    """A client asks for `requested` (or switches off); active and error are set by the server only."""
    if status in CLIENT_STATUSES or status == current:
        return
    have = f" (it is {current})" if current else ""
    raise _unprocessable(f"Subscription.status {status!r} is set by the server{have}; a client sends "
                         "'requested' (or 'off' to stop it)", "Subscription.status")


def handover_point(sub: dict[str, Any]) -> tuple[int, str] | None:
    """The outbox position a handed-over Subscription continues after (`subscription-handover`
    `afterSequence`) and the expression of that element, or None; 422 when it is not a non-negative
    integer."""
    found = _ext(sub, HANDOVER)
    if found is None:
        return None
    i, e = found
    for j, part in enumerate(e.get("extension") or ()):
        if isinstance(part, dict) and part.get("url") == "afterSequence":
            expr = f"Subscription.extension[{i}].extension[{j}].valueString"
            value = part.get("valueString")
            if not isinstance(value, str) or not value.isdigit():
                raise _unprocessable("subscription-handover afterSequence must be an outbox position (digits)", expr)
            return int(value), expr
    return None


def handover_after(sub: dict[str, Any]) -> int | None:
    found = handover_point(sub)
    return found[0] if found is not None else None


def refuse_handover(expression: str) -> FhirError:
    """A client that may write Subscriptions may not choose where one starts in the outbox: that would
    let it read events from before it subscribed (security)."""
    return _unprocessable("subscription-handover afterSequence is set by the module registry only "
                          "(samverka module replace/enable), not by a client", expression)
