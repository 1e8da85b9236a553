"""samverka.sdk: a small typed client for module developers (https://hl7.org/fhir/smart-app-launch/backend-services.html,
https://hl7.org/fhir/uv/subscriptions-backport/).

- `BackendAuth`: SMART backend-services tokens from the module's private key (RS384/ES384), renewed
  before they expire;
- `FhirClient` / `AsyncFhirClient`: read, create, update, delete, search with paging, `$status`,
  `$events`, returning parsed resources (dicts);
- `NotificationReceiver`: an ASGI app for rest-hook notifications that verifies handshakes, tracks
  event numbers per subscription, fills gaps with `$events` and calls your handler once per event.

It depends on httpx, joserfc and starlette only; nothing of the server.
"""

from .auth import AuthError, BackendAuth
from .client import AsyncFhirClient, FhirClient, FhirClientError, resources
from .receiver import FileState, MemoryState, Notification, NotificationReceiver, parse

__all__ = ["AsyncFhirClient", "AuthError", "BackendAuth", "FhirClient", "FhirClientError", "FileState",
           "MemoryState", "Notification", "NotificationReceiver", "parse", "resources"]
