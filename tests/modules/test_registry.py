"""The module registry against a live `samverka serve --auth on`: register, tokens with exactly the declared
scopes, Subscriptions, disable/enable, replace (handover, revoked credentials, data stays) and the audit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import yaml
from authkit import AuthServer, ClientKey, ig_key
from modkit import APPOINTMENTS, Admin, manifest, unique

from samverka.modules.subscriptions import HANDOVER, PAYLOAD, SUBSCRIBER

DECLARED = {"system/Appointment.cruds", "system/Patient.rs"}


def _appointment(patient: str) -> dict[str, Any]:
    return {"resourceType": "Appointment", "status": "booked",
            "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"}]}


def _helper(server: AuthServer, scope: str) -> httpx.Client:
    """A separate backend client (not a module): setup data and reading what the modules cannot."""
    key = ig_key("RS384")
    return server.fhir(server.token(server.register(scope, key), key, scope))


def _patient(server: AuthServer) -> str:
    with _helper(server, "system/Patient.cruds") as fhir:
        r = fhir.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Öberg"}]})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def _token(server: AuthServer, client_id: str, key: ClientKey, scope: str = " ".join(sorted(DECLARED))) -> str:
    return server.token(client_id, key, scope)


def test_register_grants_exactly_the_declared_scopes(module_server: AuthServer, admin: Admin) -> None:
    view = admin.register(manifest(unique("booking")))
    assert view["state"] == "active" and view["clientState"] == "active"
    assert set(view["scopes"]) == DECLARED
    key = ig_key("ES384")
    asked = "system/Appointment.cruds system/Patient.cruds system/Observation.rs system/*.cruds"
    r = module_server.token_response(view["clientId"], key, asked)
    assert r.status_code == 200, r.text
    assert set(r.json()["scope"].split()) == DECLARED
    patient = _patient(module_server)
    with module_server.fhir(r.json()["access_token"]) as fhir:
        assert fhir.post("/Appointment", json=_appointment(patient)).status_code == 201
        assert fhir.get(f"/Patient/{patient}").status_code == 200
        assert fhir.post("/Patient", json={"resourceType": "Patient"}).status_code == 403
        assert fhir.get("/Observation").status_code == 403
        assert fhir.get("/Subscription").status_code == 403


def test_register_creates_one_backport_subscription_per_declared_one(module_server: AuthServer,
                                                                      admin: Admin) -> None:
    doc = manifest(unique("booking"), subscriptions=[
        {"topic": APPOINTMENTS, "filter": "Appointment?status=booked", "payload": "id-only"},
        {"topic": APPOINTMENTS, "payload": "full-resource"}])
    view = admin.register(doc)
    subs = view["subscriptions"]
    assert [(s["topic"], s["filter"], s["payload"]) for s in subs] == [
        (APPOINTMENTS, "Appointment?status=booked", "id-only"), (APPOINTMENTS, None, "full-resource")]
    with _helper(module_server, "system/Subscription.rs") as fhir:
        for s in subs:
            r = fhir.get(f"/Subscription/{s['id']}")
            assert r.status_code == 200, r.text
            sub = r.json()
            assert sub["criteria"] == APPOINTMENTS
            assert sub["status"] in ("requested", "active", "error")
            assert sub["channel"]["type"] == "rest-hook" and sub["channel"]["endpoint"] == doc["endpoint"]
            assert sub["channel"]["_payload"]["extension"][0] == {"url": PAYLOAD, "valueCode": s["payload"]}
            owner = next(e for e in sub["extension"] if e["url"] == SUBSCRIBER)
            assert owner["valueIdentifier"]["value"] == view["clientId"]


def test_admin_api_errors(module_server: AuthServer, admin: Admin) -> None:
    doc = manifest(unique("booking"))
    doc["subscriptions"].append({"topic": APPOINTMENTS, "payload": "everything"})
    r = admin.call("POST", "", json=doc)
    assert r.status_code == 400, r.text
    issues = r.json()["issue"]
    assert issues[0]["expression"] == ["subscriptions[1].payload"], issues
    yaml_doc = yaml.safe_dump(manifest(unique("booking"), scopes=["patient/*.rs"]))
    r = admin.call("POST", "", content=yaml_doc, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["scopes[0]"], r.text
    # a topic the server does not ship: refused by the event core, reported against the manifest key,
    # and nothing is left registered (the client is revoked again)
    bad = manifest(unique("booking"), subscriptions=[{"topic": "https://samverka.se/fhir/SubscriptionTopic/nope",
                                                       "payload": "id-only"}])
    r = admin.call("POST", "", json=bad)
    assert r.status_code in (400, 422), r.text
    assert r.json()["issue"][0]["expression"] == ["subscriptions[0].topic"], r.text
    assert admin.call("GET", f"/{bad['id']}").status_code == 404
    listed = httpx.get(f"{module_server.origin}/auth/clients", timeout=30,
                       headers={"Authorization": f"Bearer {module_server.admin_token()}"}).json()
    assert all(c["revoked"] for c in listed if c.get("software_id") == bad["id"])
    first = admin.register(manifest(unique("booking")))
    again = admin.call("POST", "", json=manifest(first["id"]))
    assert again.status_code == 409, again.text
    no_token = httpx.get(f"{module_server.origin}/admin/modules", timeout=30)
    assert no_token.status_code == 401
    key = ig_key("ES384")
    module_token = _token(module_server, first["clientId"], key)
    as_module = httpx.get(f"{module_server.origin}/admin/modules", timeout=30,
                          headers={"Authorization": f"Bearer {module_token}"})
    assert as_module.status_code == 401
    assert any(m["id"] == first["id"] for m in admin.call("GET", "").json())


def test_disable_and_enable(module_server: AuthServer, admin: Admin) -> None:
    view = admin.register(manifest(unique("booking")))
    mid, cid, key = view["id"], view["clientId"], ig_key("ES384")
    before = _token(module_server, cid, key)
    with module_server.fhir(before) as fhir:
        assert fhir.get("/Appointment").status_code == 200
    r = admin.call("POST", f"/{mid}/disable")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "disabled" and r.json()["clientState"] == "disabled"
    assert [s["status"] for s in r.json()["subscriptions"]] == ["off"]
    with module_server.fhir(before) as fhir:
        assert fhir.get("/Appointment").status_code == 401
    refused = module_server.token_response(cid, key, "system/Appointment.cruds")
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert admin.call("POST", f"/{mid}/disable").status_code == 409
    r = admin.call("POST", f"/{mid}/enable")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "active" and r.json()["clientState"] == "active"
    assert r.json()["subscriptions"][0]["status"] in ("requested", "active", "error")
    with module_server.fhir(before) as fhir:  # issued before the disable: stays refused
        assert fhir.get("/Appointment").status_code == 401
    with module_server.fhir(_token(module_server, cid, key)) as fhir:
        assert fhir.get("/Appointment").status_code == 200


def _replace_cli(server: AuthServer, old: str, new: str) -> dict[str, Any]:
    r = server.cli("module", "replace", old, new, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return dict(json.loads(r.stdout))


def test_replace_hands_over_the_role(module_server: AuthServer, admin: Admin, tmp_path: Path) -> None:
    role = unique("booking")
    old = admin.register(manifest(unique("booking-a"), alg="ES384", role=role))
    old_key, new_key = ig_key("ES384"), ig_key("RS384")
    old_token = _token(module_server, old["clientId"], old_key)
    patient = _patient(module_server)
    with module_server.fhir(old_token) as fhir:
        r = fhir.post("/Appointment", json=_appointment(patient))
        assert r.status_code == 201, r.text
        booked = r.json()["id"]
    # the replacement registers from a YAML manifest with the CLI while the role is held: standby
    new_doc = manifest(unique("booking-b"), alg="RS384", role=role)
    path = tmp_path / "booking-b.yaml"
    path.write_text(yaml.safe_dump(new_doc))
    reg = module_server.cli("module", "register", str(path), "--json")
    assert reg.returncode == 0, reg.stdout + reg.stderr
    new = json.loads(reg.stdout)
    assert new["state"] == "standby" and new["subscriptions"] == []
    shown = module_server.cli("module", "show", new["id"])
    assert "standby" in shown.stdout, shown.stdout + shown.stderr
    view = _replace_cli(module_server, old["id"], new["id"])
    assert view["state"] == "active" and view["replaces"] == old["id"]
    [sub] = view["subscriptions"]
    old_sub = old["subscriptions"][0]["id"]
    assert sub["handover"]["predecessor"] == f"Subscription/{old_sub}"
    assert isinstance(sub["handover"]["afterEvent"], int)
    gone = admin.view(old["id"])
    assert gone["state"] == "replaced" and gone["replacedBy"] == new["id"] and gone["clientState"] == "revoked"
    assert [s["status"] for s in gone["subscriptions"]] == ["off"]
    # OLD's credentials: the token it holds and any new one are refused
    with module_server.fhir(old_token) as fhir:
        assert fhir.get("/Appointment").status_code == 401
    assert module_server.token_response(old["clientId"], old_key, "system/Appointment.cruds").status_code == 401
    # NEW reads what OLD wrote, where it was written, under its own scopes
    with module_server.fhir(_token(module_server, new["clientId"], new_key)) as fhir:
        r = fhir.get(f"/Appointment/{booked}")
        assert r.status_code == 200 and r.json()["participant"][0]["actor"]["reference"] == f"Patient/{patient}"
    # the new Subscription resource carries the handover point for the event core
    with _helper(module_server, "system/Subscription.rs system/AuditEvent.rs") as fhir:
        body = fhir.get(f"/Subscription/{sub['id']}").json()
        ext = next(e for e in body["extension"] if e["url"] == HANDOVER)
        parts = {e["url"]: e for e in ext["extension"]}
        assert parts["predecessor"]["valueReference"]["reference"] == f"Subscription/{old_sub}"
        assert parts["afterEvent"]["valueString"] == str(sub["handover"]["afterEvent"])
        # the audit log shows the handover: both clients, both subscriptions, the point
        found = fhir.get("/AuditEvent", params={"subtype": "module-replace"}).json()
        events = [e["resource"] for e in found.get("entry", [])]
        mine = [e for e in events if new["clientId"] in json.dumps(e["agent"])]
        assert len(mine) == 1, events
        ev = mine[0]
        assert old["clientId"] in json.dumps(ev["agent"])
        refs = {e.get("what", {}).get("reference") for e in ev["entity"]}
        assert {f"Subscription/{old_sub}", f"Subscription/{sub['id']}"} <= refs
        assert {e.get("name") for e in ev["entity"]} >= {old["id"], new["id"]}
        detail = next(d for e in ev["entity"] for d in e.get("detail", []) if d["type"] == "handover")
        assert json.loads(detail["valueString"])["predecessor"] == f"Subscription/{old_sub}"
        for action in ("module-register", "module-disable", "module-enable"):
            assert fhir.get("/AuditEvent", params={"subtype": action}).status_code == 200
    # a replaced module cannot come back, nor be replaced again
    assert admin.call("POST", f"/{old['id']}/enable").status_code == 409
    assert admin.call("POST", f"/{old['id']}/replace/{new['id']}").status_code == 409
    verify = module_server.cli("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_replace_needs_a_standby_module_of_the_same_role(module_server: AuthServer, admin: Admin) -> None:
    a = admin.register(manifest(unique("lab-a")))
    b = admin.register(manifest(unique("lab-b")))  # another role: active, not standby
    r = admin.call("POST", f"/{a['id']}/replace/{b['id']}")
    assert r.status_code == 409 and "standby" in r.text, r.text
    assert admin.call("POST", f"/{a['id']}/replace/nobody").status_code == 404
