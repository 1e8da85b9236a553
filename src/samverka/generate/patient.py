"""One synthetic patient's transaction entries: Patient, Encounters, Conditions, lab Observations, prescriptions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from random import Random
from typing import Any

from samverka.generate import catalog, people
from samverka.generate.catalog import DAILY_PANEL, LAB, Acute, Chronic
from samverka.generate.common import Resource, at, coding, concept, fhir_datetime, new_uuid, ref, urn
from samverka.generate.region import Region, Staff, Unit
from samverka.sweden import codes
from samverka.sweden.identifiers import PERSONNUMMER, SAMORDNINGSNUMMER, make_personnummer

DEFAULT_AS_OF = date(2026, 10, 1)  # "today" in generated data; fixed so output depends only on the seed
DEFAULT_RESOURCES_PER_PATIENT = 100  # the average aimed at; 10,000 patients give about 1M resources
HISTORY_YEARS = 6
SAMORDNINGSNUMMER_SHARE = 0.02
PROTECTED_SHARE = 0.01

_CLASS = {
    "AMB": coding(codes.V3_ACT_CODE, "AMB", "ambulatory"),
    "EMER": coding(codes.V3_ACT_CODE, "EMER", "emergency"),
    "IMP": coding(codes.V3_ACT_CODE, "IMP", "inpatient encounter"),
}
_LAB_CATEGORY = [concept(codes.OBSERVATION_CATEGORY, "laboratory", "Laboratory")]
_INTERPRETATION = {
    code: [concept(codes.V3_OBSERVATION_INTERPRETATION, code, display)]
    for code, display in (("H", "High"), ("L", "Low"), ("N", "Normal"))
}
_VERIFIED = concept(codes.CONDITION_VER_STATUS, "confirmed", "Confirmed")
_ACTIVE = concept(codes.CONDITION_CLINICAL, "active", "Active")
_RESOLVED = concept(codes.CONDITION_CLINICAL, "resolved", "Resolved")
_PROBLEM = [concept(codes.CONDITION_CATEGORY, "problem-list-item", "Problem List Item")]
_DIAGNOSIS = [concept(codes.CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")]
_PROTECTED = [
    coding(codes.SECURITY_LABEL_SYSTEM, codes.PROTECTED_INFORMATION, codes.PROTECTED_INFORMATION_DISPLAY),
    coding(codes.V3_CONFIDENTIALITY, "R", "restricted"),
]


def _mean_cost(acutes: tuple[Acute, ...], extra: float = 0.0) -> float:
    """Expected resources from one encounter with an acute diagnosis (encounter + condition + labs + drugs)."""
    return 2 + extra + sum(len(a.panel) + 0.85 * len(a.drugs) for a in acutes) / len(acutes)


_STAY_DAYS = (2, 8)
_COST = {
    "acute_vc": _mean_cost(catalog.ACUTE_AMB),
    "emer": _mean_cost(catalog.ACUTE_EMER),
    "imp": _mean_cost(catalog.ACUTE_IMP, sum(_STAY_DAYS) / 2 * len(DAILY_PANEL)),  # one morning panel per night
}


@dataclass(frozen=True)
class Settings:
    """What a generation run is configured with."""

    as_of: date = DEFAULT_AS_OF
    resources_per_patient: int = DEFAULT_RESOURCES_PER_PATIENT


def _age(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _weekday(day: date) -> date:
    return day - timedelta(days=max(0, day.weekday() - 4))


class PatientBuilder:
    """Builds the bundle entries for one patient from its own rng stream."""

    def __init__(self, region: Region, rng: Random, settings: Settings, used_numbers: set[str]) -> None:
        self.region = region
        self.rng = rng
        self.settings = settings
        self.now = at(settings.as_of, 12)
        self.entries: list[dict[str, Any]] = []
        self.lab = region.unit("lab")
        self._make_demographics(used_numbers)
        self.chronic = self._pick_chronic()
        self.regimens = {c.key: self.rng.choice(c.regimens) for c in self.chronic}
        self.chronic_drugs = sorted({atc for r in self.regimens.values() for atc in r})
        self.chronic_panel = sorted({key for c in self.chronic for key in c.panel})
        self.effects: dict[str, tuple[float, float]] = {}
        for c in self.chronic:
            self.effects.update(c.effects)
        if "B01AA03" in self.chronic_drugs:  # warfarin is followed with INR
            self.chronic_panel.append("inr")
            self.effects["inr"] = (2.5, 0.4)
        self.chronic_conditions: dict[str, str] = {}  # chronic key -> Condition uuid
        self.last_prescription: dict[str, Resource] = {}  # ATC -> latest MedicationRequest for a chronic drug

    # ---- demographics -------------------------------------------------------------------------
    def _make_demographics(self, used_numbers: set[str]) -> None:
        rng, as_of = self.rng, self.settings.as_of
        self.sex = "male" if rng.random() < 0.5 else "female"
        self.born = as_of - timedelta(days=int(rng.triangular(0, 104 * 365.25, 40 * 365.25)))
        self.age = _age(self.born, as_of)
        self.samordning = self.age >= 16 and rng.random() < SAMORDNINGSNUMMER_SHARE
        self.protected = rng.random() < PROTECTED_SHARE
        while True:
            serial = rng.randrange(500) * 2 + (1 if self.sex == "male" else 0)
            number = make_personnummer(self.born, serial, samordningsnummer=self.samordning)
            if number not in used_numbers:
                used_numbers.add(number)
                break
        self.number = number
        self.system = SAMORDNINGSNUMMER if self.samordning else PERSONNUMMER
        self.home: Unit = rng.choice(self.region.by_kind["vardcentral"])
        self.uuid = new_uuid(rng)

    def _patient(self) -> Resource:
        rng = self.rng
        given, family = people.given_names(rng, self.sex), people.family_name(rng)
        patient: Resource = {"resourceType": "Patient"}
        if self.protected:
            patient["meta"] = {"security": [dict(c) for c in _PROTECTED]}
        patient.update(
            {
                "identifier": [{"use": "official", "system": self.system, "value": self.number}],
                "active": True,
                "name": [{"use": "official", "text": f"{' '.join(given)} {family}", "family": family, "given": given}],
                "telecom": [{"system": "phone", "value": people.mobile(rng), "use": "mobile"}],
                "gender": self.sex,
                "birthDate": self.born.isoformat(),
                "address": [people.address(rng)],
                "generalPractitioner": [ref("Organization", self.home.id)],
                "managingOrganization": ref("Organization", self.home.id),
            }
        )
        return patient

    def _pick_chronic(self) -> list[Chronic]:
        factor = 2.0 if self.age >= 65 else 1.0
        return [
            c
            for c in catalog.CHRONIC
            if c.min_age <= self.age <= c.max_age
            and (c.sex is None or c.sex == self.sex)
            and self.rng.random() < c.prevalence * factor
        ]

    # ---- entries ------------------------------------------------------------------------------
    def _add(self, resource: Resource, uid: str | None = None) -> str:
        uid = uid or new_uuid(self.rng)
        request: dict[str, str] = {"method": "POST", "url": resource["resourceType"]}
        if resource["resourceType"] == "Patient":
            request["ifNoneExist"] = f"identifier={self.system}|{self.number}"
        self.entries.append({"fullUrl": f"urn:uuid:{uid}", "resource": resource, "request": request})
        return uid

    def build(self) -> list[dict[str, Any]]:
        """Every entry for this patient, the Patient first."""
        self._add(self._patient(), self.uuid)
        for kind, day in self._plan():
            self._encounter(kind, day)
        for atc in self.chronic_drugs:  # the latest prescription of a chronic drug is current
            if atc in self.last_prescription:
                self.last_prescription[atc]["status"] = "stopped" if self.rng.random() < 0.03 else "active"
        if self.rng.random() < 0.02:
            self._encounter("imp", None)
        if self.rng.random() < 0.25:
            self._planned()
        return self.entries

    def _plan(self) -> list[tuple[str, date]]:
        """Kinds and days of the finished encounters, sized so the patient averages the target."""
        rng, as_of = self.rng, self.settings.as_of
        weights = {"followup": 0.52, "acute_vc": 0.3, "emer": 0.12, "imp": 0.06} if self.chronic else {
            "acute_vc": 0.72, "emer": 0.22, "imp": 0.06 if self.age >= 16 else 0.03}  # fmt: skip
        if self.age >= 70:
            weights["imp"] *= 1.6
        cost = dict(_COST, followup=1 + 0.75 * len(self.chronic_panel) + 0.6 * len(self.chronic_drugs))
        mean = sum(w * cost[k] for k, w in weights.items()) / sum(weights.values())
        target = self.settings.resources_per_patient * rng.uniform(0.5, 1.5)
        count = max(1, round((target - 1 - len(self.chronic)) / mean))
        start = max(self.born, as_of - timedelta(days=365 * HISTORY_YEARS))
        span = max(1, (as_of - start).days - 10)
        kinds = rng.choices(list(weights), list(weights.values()), k=count)
        days = sorted(start + timedelta(days=rng.randrange(span)) for _ in range(count))
        return list(zip(kinds, days, strict=True))

    def _staff(self, unit: Unit, doctor: bool) -> Staff:
        pool = unit.doctors if doctor else tuple(s for s in unit.staff if not s.is_doctor) or unit.staff
        return self.rng.choice(pool)

    def _encounter(self, kind: str, day: date | None) -> None:
        """A finished encounter of `kind` on `day`, or an ongoing admission when `day` is None."""
        rng = self.rng
        acute: Acute | None = None
        if kind == "followup":
            unit, cls, label = self.home, "AMB", "Återbesök"
            staff = self._staff(unit, rng.random() < 0.7)
            start = at(_weekday(day or self.settings.as_of), rng.randint(8, 15), rng.choice((0, 15, 30, 45)))
            end: datetime | None = start + timedelta(minutes=30)
        else:
            options = {"acute_vc": catalog.ACUTE_AMB, "emer": catalog.ACUTE_EMER, "imp": catalog.ACUTE_IMP}[kind]
            acute = rng.choice([a for a in options if a.min_age <= self.age] or options[:1])
            if kind == "acute_vc":
                unit, cls, label = self.home, "AMB", "Nybesök"
                start = at(_weekday(day or self.settings.as_of), rng.randint(8, 15), rng.choice((0, 20, 40)))
                end = start + timedelta(minutes=20)
            elif kind == "emer":
                unit, cls, label = self.region.unit("akut"), "EMER", "Akutbesök"
                start = at(day or self.settings.as_of, rng.randint(0, 23), rng.randint(0, 59))
                end = start + timedelta(minutes=rng.randint(90, 480))
            else:
                unit = self.region.unit("ortopedi" if acute.diagnosis.code.startswith("S") else "medicin")
                cls, label = "IMP", "Slutenvård"
                if day is None:
                    start, end = self.now - timedelta(hours=rng.randint(20, 96)), None
                else:
                    start = at(day, rng.randint(0, 23), rng.randint(0, 59))
                    stay = rng.randint(*_STAY_DAYS)
                    end = at(day + timedelta(days=stay), rng.randint(10, 15), rng.randint(0, 59))
            staff = self._staff(unit, True)
        enc_uid = new_uuid(rng)
        encounter: Resource = {
            "resourceType": "Encounter",
            "status": "finished" if end else "in-progress",
            "class": _CLASS[cls],
            "type": [{"text": label}],
            "subject": urn(self.uuid),
            "participant": [{"individual": ref("Practitioner", staff.id)}],
            "period": {"start": fhir_datetime(start), **({"end": fhir_datetime(end)} if end else {})},
            "serviceProvider": ref("Organization", unit.id),
        }
        self._add(encounter, enc_uid)
        doctor = staff if staff.is_doctor else self._staff(unit, True)
        diagnoses = []
        if not self.chronic_conditions and self.chronic:
            self._chronic_conditions(enc_uid, start, doctor)
        if acute is not None:
            cond_uid = self._acute_condition(acute, enc_uid, start, end, doctor)
            diagnoses.append(cond_uid)
            effects = {**self.effects, **acute.effects}
            self._labs(acute.panel, effects, enc_uid, start + timedelta(minutes=rng.randint(15, 60)))
            if kind == "imp":
                self._daily_labs(effects, enc_uid, start, end)
            for atc in acute.drugs:
                if rng.random() < 0.85:
                    self._prescribe(atc, enc_uid, start, doctor, cond_uid, active=end is None)
        else:
            diagnoses.extend(self.chronic_conditions.values())
            if rng.random() < 0.75:
                self._labs(self.chronic_panel, self.effects, enc_uid, start + timedelta(minutes=10))
            for atc in self.chronic_drugs:
                if atc not in self.last_prescription or rng.random() < 0.6:
                    reason = next((self.chronic_conditions[k] for k, r in self.regimens.items() if atc in r), None)
                    self.last_prescription[atc] = self._prescribe(atc, enc_uid, start, doctor, reason)
        if diagnoses:
            encounter["diagnosis"] = [{"condition": urn(d), "rank": i} for i, d in enumerate(diagnoses, 1)]

    def _planned(self) -> None:
        day = _weekday(self.settings.as_of + timedelta(days=self.rng.randint(3, 60)))
        if day <= self.settings.as_of:
            day += timedelta(days=7)
        staff = self._staff(self.home, self.rng.random() < 0.6)
        encounter = {
            "resourceType": "Encounter",
            "status": "planned",
            "class": _CLASS["AMB"],
            "type": [{"text": "Planerat återbesök"}],
            "subject": urn(self.uuid),
            "participant": [{"individual": ref("Practitioner", staff.id)}],
            "period": {"start": fhir_datetime(at(day, self.rng.randint(8, 15)))},
            "serviceProvider": ref("Organization", self.home.id),
        }
        self._add(encounter)

    # ---- clinical content ---------------------------------------------------------------------
    def _chronic_conditions(self, enc_uid: str, start: datetime, doctor: Staff) -> None:
        for c in self.chronic:
            earliest = max(self.born + timedelta(days=365 * c.min_age), start.date() - timedelta(days=3650))
            onset = earliest + timedelta(days=self.rng.randrange(max(1, (start.date() - earliest).days)))
            condition = {
                "resourceType": "Condition",
                "clinicalStatus": _ACTIVE,
                "verificationStatus": _VERIFIED,
                "category": _PROBLEM,
                "code": concept(codes.ICD_10_SE, c.diagnosis.code, c.diagnosis.display),
                "subject": urn(self.uuid),
                "encounter": urn(enc_uid),
                "onsetDateTime": min(onset, start.date()).isoformat(),
                "recordedDate": fhir_datetime(start),
                "recorder": ref("Practitioner", doctor.id),
            }
            self.chronic_conditions[c.key] = self._add(condition)

    def _acute_condition(self, acute: Acute, enc_uid: str, start: datetime, end: datetime | None, doctor: Staff) -> str:
        condition: Resource = {
            "resourceType": "Condition",
            "clinicalStatus": _ACTIVE,
            "verificationStatus": _VERIFIED,
            "category": _DIAGNOSIS,
            "code": concept(codes.ICD_10_SE, acute.diagnosis.code, acute.diagnosis.display),
            "subject": urn(self.uuid),
            "encounter": urn(enc_uid),
            "onsetDateTime": (start.date() - timedelta(days=self.rng.randint(0, 5))).isoformat(),
            "recordedDate": fhir_datetime(start),
            "recorder": ref("Practitioner", doctor.id),
        }
        abated = (end or self.now) + timedelta(days=self.rng.randint(3, 21))
        if end is not None and abated < self.now:
            condition["clinicalStatus"] = _RESOLVED
            condition["abatementDateTime"] = abated.date().isoformat()
        return self._add(condition)

    def _labs(self, panel: Any, effects: dict[str, tuple[float, float]], enc_uid: str, when: datetime) -> None:
        if when > self.now:
            return
        for key in panel:
            self._add(self._observation(key, effects.get(key), enc_uid, when))

    def _daily_labs(
        self, effects: dict[str, tuple[float, float]], enc_uid: str, start: datetime, end: datetime | None
    ) -> None:
        """Morning samples on each day after admission, easing towards normal as the stay goes on."""
        last = end or self.now
        day, n = start.date() + timedelta(days=1), 1
        while (when := at(day, 6, self.rng.randint(15, 59))) < last:
            eased = {k: (m / (1 + 0.4 * n), s / (1 + 0.2 * n)) for k, (m, s) in effects.items() if k == "crp"}
            self._labs(DAILY_PANEL, {**effects, **eased}, enc_uid, when)
            day, n = day + timedelta(days=1), n + 1

    def _observation(self, key: str, effect: tuple[float, float] | None, enc_uid: str, when: datetime) -> Resource:
        test = LAB[key]
        low, high = test.female if self.sex == "female" else test.male
        if effect is not None:
            mean, sd = effect
        elif low is not None and high is not None:
            mean, sd = (low + high) / 2, (high - low) / 4.5
        else:
            mean, sd = test.normal
        raw = max(test.floor, self.rng.gauss(mean, sd))
        value: float | int = round(raw, test.decimals) if test.decimals else round(raw)
        flag = "L" if low is not None and value < low else "H" if high is not None and value > high else "N"
        quantity = {"unit": test.unit, "system": codes.UCUM, "code": test.ucum}
        reference: dict[str, Any] = {}
        if low is not None:
            reference["low"] = {"value": low, **quantity}
        if high is not None:
            reference["high"] = {"value": high, **quantity}
        return {
            "resourceType": "Observation",
            "status": "final",
            "category": _LAB_CATEGORY,
            "code": concept(codes.NPU, test.npu, test.display),
            "subject": urn(self.uuid),
            "encounter": urn(enc_uid),
            "effectiveDateTime": fhir_datetime(when),
            "issued": fhir_datetime(min(self.now, when + timedelta(minutes=self.rng.randint(40, 240)))),
            "performer": [ref("Organization", self.lab.id)],
            "valueQuantity": {"value": value, **quantity},
            "interpretation": _INTERPRETATION[flag],
            "referenceRange": [reference],
        }

    def _prescribe(
        self, atc: str, enc_uid: str, when: datetime, doctor: Staff, reason: str | None, active: bool = False
    ) -> Resource:
        drug = catalog.DRUGS[atc]
        recent = (self.now - when).days < 14
        request: Resource = {
            "resourceType": "MedicationRequest",
            "status": "active" if active or recent else "completed",
            "intent": "order",
            "medicationCodeableConcept": concept(codes.ATC, drug.atc, drug.who_name, drug.text),
            "subject": urn(self.uuid),
            "encounter": urn(enc_uid),
            "authoredOn": fhir_datetime(when + timedelta(minutes=15)),
            "requester": ref("Practitioner", doctor.id),
            "dosageInstruction": [{"text": drug.dosage}],
        }
        if reason:
            request["reasonReference"] = [urn(reason)]
        self._add(request)
        return request
