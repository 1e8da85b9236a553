"""Only the module registry may say where a Subscription starts in the outbox.

`subscription-handover` afterSequence makes a new Subscription continue after an old outbox position
(samverka.modules `replace`/`enable`). A client that can write Subscriptions must not set it — it would
receive events from before it subscribed — so the API answers 422 naming the element, on create and
on an update that adds or changes it. (The registry's own use is tested in tests/modules.)
"""

from __future__ import annotations

from typing import Any

from eventkit import create, lab_result, subscription

from support.server import RunningServer, expect_outcome

HANDOVER = "https://samverka.se/fhir/StructureDefinition/subscription-handover"


def _handover(after: str) -> dict[str, Any]:
    return {
        "url": HANDOVER,
        "extension": [
            {"url": "predecessor", "valueReference": {"reference": "Subscription/someone-elses"}},
            {"url": "afterSequence", "valueString": after},
        ],
    }


def test_client_cannot_create_with_a_handover_point(server: RunningServer) -> None:
    patient = create(server, {"resourceType": "Patient", "name": [{"family": "Tidig"}]})["id"]
    create(server, lab_result(patient))  # an event from before the subscription
    body = subscription("lab-result", "http://127.0.0.1:9/hook")
    body["extension"] = [_handover("0")]
    issues = expect_outcome(server.client.post("/Subscription", json=body), 422)
    assert issues[0]["expression"] == ["Subscription.extension[0].extension[1].valueString"]
    assert "module registry" in issues[0]["diagnostics"]
    found = server.client.get("/Subscription", params={"criteria": body["criteria"]}).json()
    assert not any(e["resource"].get("extension") for e in found.get("entry", []))


def test_client_cannot_add_one_by_update(server: RunningServer) -> None:
    r = server.client.post("/Subscription", json=subscription("lab-result", "http://127.0.0.1:9/hook"))
    assert r.status_code == 201, r.text
    body = r.json()
    body["extension"] = [{"url": "http://example.org/unrelated", "valueString": "x"}, _handover("0")]
    issues = expect_outcome(server.client.put(f"/Subscription/{body['id']}", json=body), 422)
    assert issues[0]["expression"] == ["Subscription.extension[1].extension[1].valueString"]
    body["extension"] = body["extension"][:1]  # other extensions are fine
    assert server.client.put(f"/Subscription/{body['id']}", json=body).status_code == 200
