"""Demo users for `samverka serve --demo`: Practitioners of the generated region with a login.

https://hl7.org/fhir/smart-app-launch/app-launch.html. Each start of the demo gives the demo users
new random passwords, printed once on the console (never logged, never stored in clear); one of
them also gets a second assignment, so the login page's assignment choice can be tried.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from ..generate.region import PURPOSE_CODE, build_region
from ..interactions import transaction
from ..interactions.context import Services
from ..sweden.codes import ASSIGNMENT_PURPOSE_EXTENSION, ASSIGNMENT_PURPOSE_SYSTEM, ASSIGNMENT_PURPOSES
from . import users


@dataclass(frozen=True)
class DemoLogin:
    user: users.User
    password: str


def _second_role(practitioner_id: str, unit_id: str, profession: str) -> dict[str, object]:
    purpose = ASSIGNMENT_PURPOSES[PURPOSE_CODE]
    coding = {"system": ASSIGNMENT_PURPOSE_SYSTEM, "code": PURPOSE_CODE, "display": purpose}
    return {"resourceType": "PractitionerRole", "id": f"{practitioner_id}.uppdrag-2",
            "extension": [{"url": ASSIGNMENT_PURPOSE_EXTENSION, "valueCoding": coding}], "active": True,
            "practitioner": {"reference": f"Practitioner/{practitioner_id}"},
            "organization": {"reference": f"Organization/{unit_id}"},
            "code": [{"text": profession}, {"coding": [coding], "text": purpose}]}


def create_demo_users(svc: Services, base: str) -> list[DemoLogin]:
    """Give three Practitioners of the demo region a login with a fresh password; returns them."""
    region = build_region()
    vc, akut, medicin = region.unit("vardcentral"), region.unit("akut"), region.unit("medicin")
    picks = [vc.doctors[0], akut.staff[-1], medicin.doctors[0]]
    two = medicin.doctors[0]
    if svc.repo.read("PractitionerRole", f"{two.id}.uppdrag-2") is None:
        role = _second_role(two.id, akut.id, two.profession)
        bundle = {"resourceType": "Bundle", "type": "transaction",
                  "entry": [{"resource": role, "request": {"method": "PUT", "url": f"PractitionerRole/{role['id']}"}}]}
        transaction.transaction(svc, base, bundle, False)
    out = []
    for staff in picks:
        user = users.lookup(svc.repo, staff.id)
        if user is None or not user.assignments:
            continue
        password = secrets.token_urlsafe(9)
        users.set_password(svc.repo, staff.id, password)
        out.append(DemoLogin(user, password))
    return out
