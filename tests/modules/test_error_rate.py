"""The module view's error rate (failed delivery POSTs / POSTs over the recent window) in the admin API,
`samverka module show` and `samverka module list`, against a live `samverka serve --auth on`."""

from __future__ import annotations

from typing import Any

from authkit import AuthServer
from modkit import APPOINTMENTS, Admin, manifest, unique, wait_for


def test_unreachable_endpoint_shows_an_error_rate(module_server: AuthServer, admin: Admin) -> None:
    """The manifest's endpoint refuses connections: every handshake POST fails, so the rate is 1.0."""
    doc = manifest(unique("booking"), subscriptions=[{"topic": APPOINTMENTS, "payload": "id-only"}])
    view = admin.register(doc)
    assert view["errorRate"] is None and view["deliveryAttempts"] == 0  # nothing tried yet

    def failed() -> dict[str, Any] | None:
        v = admin.view(view["id"])
        return v if v["failedAttempts"] else None

    seen = wait_for(failed, what="a failed delivery attempt")
    assert seen["errorRate"] == 1.0 and seen["deliveryAttempts"] == seen["failedAttempts"] >= 1
    [sub] = seen["subscriptions"]
    assert sub["errorRate"] == 1.0 and sub["consecutiveFailures"] >= 1
    shown = module_server.cli("module", "show", view["id"])
    assert shown.returncode == 0, shown.stderr
    assert "error rate 1.0" in shown.stdout and "errorRate=1.0" in shown.stdout
    listed = module_server.cli("module", "list")
    assert listed.returncode == 0, listed.stderr
    [row] = [line.split("\t") for line in listed.stdout.splitlines() if line.startswith(view["id"] + "\t")]
    assert row[-1] == "1.0"
