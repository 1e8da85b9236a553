"""Module test helpers: manifests with the SMART IG example keys, the SDK's private JWKs, a uvicorn
server in a thread (for notification receivers and tiny stand-in endpoints), and the admin API."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "auth"))

import httpx
import uvicorn
from authkit import KEYS, AuthServer

from support.server import free_port

TOPIC = "https://samverka.se/fhir/SubscriptionTopic/"
APPOINTMENTS = TOPIC + "appointment-booked-cancelled"
REFERRALS = TOPIC + "referral"


def private_jwk(alg: str) -> dict[str, Any]:
    """The IG example private key (RS384 or ES384) as a JWK dict, as a module keeps it."""
    return dict(next(k for k in json.loads((KEYS / f"{alg}.private.json").read_text())["keys"] if "d" in k))


def public_jwks(alg: str) -> dict[str, Any]:
    return dict(json.loads((KEYS / f"{alg}.public.json").read_text()))


def manifest(module_id: str, alg: str = "ES384", role: str | None = None, endpoint: str = "http://127.0.0.1:9/notify",
             scopes: list[str] | None = None, subscriptions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": module_id, "name": f"Booking {module_id}", "vendor": "Acme Vård AB", "version": "1.0.0",
        "role": role or unique("booking"),
        "scopes": scopes or ["system/Appointment.cruds", "system/Patient.rs"],
        "subscriptions": subscriptions if subscriptions is not None else [
            {"topic": APPOINTMENTS, "filter": "Appointment?status=booked", "payload": "id-only"}],
        "profiles": ["https://samverka.se/fhir/StructureDefinition/booking-appointment"],
        "endpoint": endpoint, "jwks": public_jwks(alg),
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Admin:
    """The module admin API of a live server, with a fresh admin token per call."""

    def __init__(self, server: AuthServer) -> None:
        self.server = server

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.server.admin_token()}", **kw.pop("headers", {})}
        return httpx.request(method, f"{self.server.origin}/admin/modules{path}", headers=headers, timeout=60, **kw)

    def register(self, doc: dict[str, Any]) -> dict[str, Any]:
        r = self.call("POST", "", json=doc)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def view(self, module_id: str) -> dict[str, Any]:
        r = self.call("GET", f"/{module_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())


class ThreadServer:
    """A uvicorn server for an ASGI app in a thread, on a free loopback port."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the thread server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
