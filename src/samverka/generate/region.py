"""The synthetic region: a care provider, its care units, practitioners and their assignments."""

from __future__ import annotations

from dataclasses import dataclass, field
from random import Random

from samverka.generate import people
from samverka.generate.common import Resource, coding, concept, ref
from samverka.sweden.codes import (
    ASSIGNMENT_PURPOSE_EXTENSION,
    ASSIGNMENT_PURPOSE_SYSTEM,
    ASSIGNMENT_PURPOSES,
    ORGANIZATION_TYPE,
)
from samverka.sweden.identifiers import HSA_ID, ORGANISATIONSNUMMER, luhn_check_digit

# The region does not depend on the patient seed: every seed's patients belong to the same region,
# so its resources keep the same ids and loading any dataset twice is idempotent.
REGION_SEED = "samverka-region-exempel"
PROVIDER_NAME = "Region Exempel"
_ORGNR_BODY = "232100999"  # 2321xx-xxxx is the range Swedish regions use; this number is made up
ORGANISATIONSNUMMER_VALUE = _ORGNR_BODY + str(luhn_check_digit(_ORGNR_BODY))
_HSA_PREFIX = f"SE{ORGANISATIONSNUMMER_VALUE}-"

Kind = str  # "vardcentral" | "akut" | "medicin" | "ortopedi" | "lab"

# (kind, name, town index into people.TOWNS, professions of its three practitioners)
_UNITS: tuple[tuple[Kind, str, int, tuple[str, ...]], ...] = (
    ("vardcentral", "Vårdcentralen Åsen", 0, ("Läkare", "Läkare", "Sjuksköterska")),
    ("vardcentral", "Vårdcentralen Sjöstaden", 2, ("Läkare", "Läkare", "Sjuksköterska")),
    ("vardcentral", "Vårdcentralen Bruket", 4, ("Läkare", "Sjuksköterska", "Distriktssköterska")),
    ("vardcentral", "Vårdcentralen Lugnet", 6, ("Läkare", "Läkare", "Distriktssköterska")),
    ("akut", "Akutmottagningen, Länssjukhuset Exempel", 1, ("Läkare", "Läkare", "Sjuksköterska")),
    ("medicin", "Medicinkliniken, Länssjukhuset Exempel", 1, ("Läkare", "Läkare", "Sjuksköterska")),
    ("ortopedi", "Ortopedkliniken, Länssjukhuset Exempel", 1, ("Läkare", "Läkare", "Sjuksköterska")),
    ("lab", "Klinisk kemi, Laboratoriemedicin Exempel", 1,
     ("Biomedicinsk analytiker", "Biomedicinsk analytiker", "Läkare")),
)  # fmt: skip

PURPOSE_CODE = "vard-och-behandling"


@dataclass(frozen=True)
class Staff:
    """One practitioner working at one unit under one assignment (PractitionerRole)."""

    id: str  # the practitioner's HSA-id, also the Practitioner id
    role_id: str
    unit_id: str
    profession: str

    @property
    def is_doctor(self) -> bool:
        return self.profession == "Läkare"


@dataclass(frozen=True)
class Unit:
    """A care unit (vårdenhet); its HSA-id is also its Organization id."""

    id: str
    name: str
    kind: Kind
    staff: tuple[Staff, ...]

    @property
    def doctors(self) -> tuple[Staff, ...]:
        return tuple(s for s in self.staff if s.is_doctor)


@dataclass
class Region:
    """The provider, its units and the transaction Bundle that PUTs them all."""

    provider_id: str
    units: list[Unit]
    bundle: Resource
    by_kind: dict[Kind, list[Unit]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for unit in self.units:
            self.by_kind.setdefault(unit.kind, []).append(unit)

    def unit(self, kind: Kind) -> Unit:
        """The first unit of a kind (there is one of each hospital kind)."""
        return self.by_kind[kind][0]


def _hsa(letter: str, number: int) -> str:
    return f"{_HSA_PREFIX}{letter}{number:012d}"


def _put(resource: Resource) -> dict[str, object]:
    return {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}


def _telecom(rng: Random) -> list[dict[str, str]]:
    return [{"system": "phone", "value": people.mobile(rng), "use": "work"}]


def _organization(hsa_id: str, name: str, rng: Random, *, provider_id: str | None) -> Resource:
    org: Resource = {
        "resourceType": "Organization",
        "id": hsa_id,
        "identifier": [{"use": "official", "system": HSA_ID, "value": hsa_id}],
        "active": True,
        "type": [
            concept(ORGANIZATION_TYPE, "dept", "Hospital Department", "Vårdenhet")
            if provider_id
            else concept(ORGANIZATION_TYPE, "prov", "Healthcare Provider", "Vårdgivare")
        ],
        "name": name,
        "telecom": _telecom(rng),
    }
    if provider_id:
        org["partOf"] = ref("Organization", provider_id)
    else:
        org["identifier"].append({"use": "official", "system": ORGANISATIONSNUMMER, "value": ORGANISATIONSNUMMER_VALUE})
    return org


def _practitioner(staff: Staff, rng: Random) -> Resource:
    sex = "female" if rng.random() < 0.6 else "male"
    return {
        "resourceType": "Practitioner",
        "id": staff.id,
        "identifier": [{"use": "official", "system": HSA_ID, "value": staff.id}],
        "active": True,
        "name": [{"use": "official", "family": people.family_name(rng), "given": people.given_names(rng, sex)}],
        "gender": sex,
        "qualification": [{"code": {"text": staff.profession}}],
    }


def _role(staff: Staff) -> Resource:
    purpose = ASSIGNMENT_PURPOSES[PURPOSE_CODE]
    return {
        "resourceType": "PractitionerRole",
        "id": staff.role_id,
        "extension": [
            {
                "url": ASSIGNMENT_PURPOSE_EXTENSION,
                "valueCoding": coding(ASSIGNMENT_PURPOSE_SYSTEM, PURPOSE_CODE, purpose),
            }
        ],
        "active": True,
        "practitioner": ref("Practitioner", staff.id),
        "organization": ref("Organization", staff.unit_id),
        "code": [{"text": staff.profession}, concept(ASSIGNMENT_PURPOSE_SYSTEM, PURPOSE_CODE, purpose)],
    }


def build_region() -> Region:
    """The region and its transaction Bundle (PUT to fixed ids: the HSA-ids)."""
    rng = Random(REGION_SEED)
    provider_id = _hsa("E", 1)
    provider = _organization(provider_id, PROVIDER_NAME, rng, provider_id=None)
    provider["address"] = [
        {"use": "work", "line": ["Storgatan 1"], "city": "Västerås", "postalCode": "722 10", "country": "SE"}
    ]
    entries = [_put(provider)]
    units: list[Unit] = []
    person = 0
    for n, (kind, name, town, professions) in enumerate(_UNITS, start=10):
        unit_id = _hsa("E", n)
        staff = []
        for profession in professions:
            person += 1
            pid = _hsa("P", 1000 + person)
            staff.append(Staff(id=pid, role_id=f"{pid}.uppdrag", unit_id=unit_id, profession=profession))
        unit = Unit(id=unit_id, name=name, kind=kind, staff=tuple(staff))
        org = _organization(unit_id, name, rng, provider_id=provider_id)
        org["address"] = [{**people.address(rng, people.TOWNS[town]), "use": "work"}]
        entries.append(_put(org))
        units.append(unit)
    for unit in units:
        for s in unit.staff:
            entries.append(_put(_practitioner(s, rng)))
            entries.append(_put(_role(s)))
    bundle: Resource = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return Region(provider_id=provider_id, units=units, bundle=bundle)
