"""Deterministic synthetic GP Connect Access Record Structured (STU3) records.

`generate_bundle` returns a full record (every clinical area); `generate_bundle_for` also takes
a `RecordRequest`, the clinical areas and filters of a `$gpc.getstructuredrecord` Parameters,
and is what the GP Connect fake serves. Shapes follow the GP Connect 1.6 "Access Record
Structured" pages and the real Orange/INT captures (nhs-apis.md §4.4 and §5), including their
quirks: no `fullUrl`, primary Lists without `id`, references to resources not in the Bundle.

Determinism: the same (NHS number, size, seed) always gives the same bundle, byte for byte;
dates are relative to `REFERENCE_DATE`, never to the wall clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

from xcagw_devstack.sandbox import dmd
from xcagw_devstack.sandbox.panel import GpPractice, PanelPatient, get_patient, get_practice

Json = dict[str, Any]

REFERENCE_DATE = date(2025, 6, 30)
"""'Today' for generated records, so that output never depends on the clock."""

SCT = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
_SD = "https://fhir.nhs.uk/STU3/StructureDefinition/"
_CC_SD = "https://fhir.hl7.org.uk/STU3/StructureDefinition/"
_NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
_ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
_XCARE_ID = "https://fhir.nhs.uk/Id/cross-care-setting-identifier"
_DATA_ID = "https://provider.nhs.uk/data-identifier"
_SECONDARY = "https://fhir.hl7.org.uk/STU3/CodeSystem/GPConnect-SecondaryListValues-1"
_WARNING_EXT = _SD + "Extension-CareConnect-GPC-ListWarningCode-1"

BUNDLE_PROFILE = _SD + "GPConnect-StructuredRecord-Bundle-1"

# GP Connect 1.6 "List" guidance: primary List codes and titles per clinical area.
LIST_CODES: dict[str, tuple[str, str, str]] = {
    "allergies": (
        "886921000000105",
        "Allergies and adverse reactions",
        "Allergies and adverse reactions",
    ),
    "ended_allergies": ("1103671000000101", "Ended allergies", "Ended allergies"),
    "medication": (
        "933361000000108",
        "Medications and medical devices",
        "Medications and medical devices",
    ),
    "problems": ("717711000000103", "Problems", "Problems"),
    "immunisations": ("1102181000000102", "Immunisations", "Immunisations"),
    "consultations": ("1149501000000101", "List of consultations", "List of consultations"),
    "uncategorised": ("826501000000100", "Miscellaneous record", "Uncategorised data"),
    "investigations": (
        "887191000000108",
        "Investigations and results",
        "Investigations and results",
    ),
    "referrals": ("792931000000107", "Outbound referral", "Outbound referral"),
    "diary": ("714311000000108", "Patient recall administration", "Diary entries"),
}

# Secondary List value names per area (GPConnect-SecondaryListValues-1).
_SECONDARY_AREA_NAME = {
    "allergies": "allergies",
    "medication": "medications",
    "problems": "problems",
    "immunisations": "immunisations",
    "uncategorised": "uncategorised-data",
    "investigations": "investigations",
    "referrals": "referrals",
    "diary": "diary-entries",
}

WARNING_NOTES = {
    "confidential-items": "Items excluded due to confidentiality and/or patient preferences.",
    "data-in-transit": (
        "Patient record transfer from previous GP practice not yet complete; "
        "information recorded before {date} may be missing."
    ),
    "data-awaiting-filing": (
        "Patient data may be incomplete as there is data supplied by a third party "
        "awaiting review before becoming available."
    ),
}


@dataclass(frozen=True)
class RecordRequest:
    """Clinical areas and filters of a `$gpc.getstructuredrecord` request.

    The defaults ask for everything (the "full record"); `RecordRequest.none()` asks for nothing but
    the always-present Patient, Organization and Practitioner resources.
    """

    allergies: bool = True
    include_resolved_allergies: bool = True
    medication: bool = True
    include_prescription_issues: bool = True
    medication_search_from: date | None = None
    consultations: bool = True
    consultation_period: tuple[date | None, date | None] | None = None
    most_recent_consultations: int | None = None
    problems: bool = True
    problem_filters: tuple[tuple[str | None, str | None], ...] = ()
    """(clinical status, significance) pairs, None meaning any; empty: every problem."""
    immunisations: bool = True
    include_not_given: bool = True
    include_immunisation_status: bool = True
    uncategorised: bool = True
    uncategorised_period: tuple[date | None, date | None] | None = None
    investigations: bool = True
    investigation_period: tuple[date | None, date | None] | None = None
    referrals: bool = True
    referral_period: tuple[date | None, date | None] | None = None
    diary: bool = True
    diary_search_date: date | None = None

    @classmethod
    def none(cls) -> RecordRequest:
        """No clinical area: the starting point for mapping a Parameters resource."""
        return cls(
            allergies=False,
            medication=False,
            consultations=False,
            problems=False,
            immunisations=False,
            uncategorised=False,
            investigations=False,
            referrals=False,
            diary=False,
        )


@dataclass
class _Item:
    """One clinical item: its main resource first, then resources it needs."""

    area: str
    ref: str
    when: date
    resources: list[Json]
    issues: list[Json] = field(default_factory=list)
    status: str = ""
    significance: str = ""
    links: list[str] = field(default_factory=list)


@dataclass
class _Record:
    core: list[Json]
    items: dict[str, list[_Item]]
    by_ref: dict[str, _Item]
    patient_ref: str
    nhs_number: str
    warnings: tuple[str, ...]
    transit_date: date
    empty: bool


# --- small builders -----------------------------------------------------------------------------


def _cc(code: str, display: str, system: str = SCT) -> Json:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def _ref(ref: str) -> Json:
    return {"reference": ref}


def _meta(profile: str) -> Json:
    return {"profile": [_SD + profile]}


def _dt(d: date, minutes: int = 600) -> str:
    return f"{d.isoformat()}T{minutes // 60 % 24:02d}:{minutes % 60:02d}:00+00:00"


def _qty(value: float, unit: str, code: str | None = None) -> Json:
    q: Json = {"value": value, "unit": unit, "system": UCUM, "code": code or unit}
    return q


class _Gen:
    """Random source plus the id and reference helpers every area builder uses."""

    def __init__(self, seed_text: str) -> None:
        # Reproducible synthetic data, not security: S311 does not apply.
        self.rng = random.Random(seed_text)  # nosec B311 # noqa: S311

    def uid(self) -> str:
        x = self.rng.getrandbits(128)
        h = f"{x:032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def ident(self, system: str = _XCARE_ID) -> list[Json]:
        return [{"system": system, "value": self.uid()}]

    def day_between(self, start: date, end: date) -> date:
        span = max((end - start).days, 0)
        return start + timedelta(days=self.rng.randint(0, span))


# --- reference data -----------------------------------------------------------------------------

_GIVEN_F = ("Olivia", "Amelia", "Isla", "Ava", "Mia", "Grace", "Freya", "Lily", "Emily", "Ella")
_GIVEN_M = ("Oliver", "George", "Arthur", "Noah", "Leo", "Harry", "Oscar", "Jack", "Jacob", "Luca")
_FAMILY = ("SMITH", "JONES", "TAYLOR", "BROWN", "WILLIAMS", "WILSON", "JOHNSON", "DAVIES", "PATEL")
_STREETS = ("Park Road", "Church Lane", "Station Road", "Victoria Street", "Mill Lane")
_GP_NAMES = (
    ("Gilbert", "Nichole", "female"),
    ("Okafor", "Daniel", "male"),
    ("Hargreaves", "Sarah", "female"),
    ("Mistry", "Anil", "male"),
    ("Walsh", "Fiona", "female"),
)

_ALLERGIES = (
    ("91936005", "Allergy to penicillin", "medication"),
    ("293586001", "Allergy to aspirin", "medication"),
    ("91935009", "Allergy to peanuts", "food"),
    ("300913006", "Shellfish allergy", "food"),
    ("418689008", "Allergy to grass pollen", "environment"),
    ("232347008", "Dog dander allergy", "environment"),
)
_REACTIONS = (
    ("247472004", "Weal"),
    ("271807003", "Eruption of skin"),
    ("39579001", "Anaphylaxis"),
    ("267036007", "Dyspnoea"),
    ("422587007", "Nausea"),
    ("230145002", "Difficulty breathing"),
)
_PROBLEMS = (
    ("38341003", "Hypertensive disorder, systemic arterial", "Hypertension"),
    ("44054006", "Type 2 diabetes mellitus", "Type 2 diabetes"),
    ("195967001", "Asthma", "Asthma"),
    ("35489007", "Depressive disorder", "Depression"),
    ("69896004", "Rheumatoid arthritis", "Rheumatoid arthritis"),
    ("13645005", "Chronic obstructive lung disease", "COPD"),
    ("197480006", "Anxiety disorder", "Anxiety"),
    ("84114007", "Heart failure", "Heart failure"),
    ("24079001", "Atopic dermatitis", "Eczema"),
    ("13200003", "Peptic ulcer", "Peptic ulcer"),
)
_VACCINES = (
    # (vaccine product, procedure, target disease, series doses)
    (
        ("46233009", "Influenza virus vaccine"),
        ("822851000000102", "Seasonal influenza vaccination"),
        ("6142004", "Influenza"),
        1,
    ),
    (
        ("333598008", "Pneumococcal vaccine"),
        ("12866006", "Pneumococcal vaccination"),
        ("16814004", "Pneumococcal infectious disease"),
        1,
    ),
    (
        ("14745005", "Hepatitis A vaccine"),
        ("170378007", "First hepatitis A vaccination"),
        ("40468003", "Viral hepatitis, type A"),
        2,
    ),
    (
        ("1119349007", "SARS-CoV-2 mRNA vaccine"),
        ("1324681000000101", "Administration of first dose of SARS-CoV-2 vaccine"),
        ("840539006", "COVID-19"),
        2,
    ),
)
_TEST_GROUPS = (
    # (group code, display, specimen, [(code, display, unit, low, high)])
    (
        "26604007",
        "Full blood count",
        ("122555007", "Venous blood specimen"),
        (
            ("1022431000000105", "Haemoglobin concentration", "g/L", 115.0, 165.0),
            ("1022541000000102", "Total white cell count", "10*9/L", 4.0, 11.0),
            ("1022651000000100", "Platelet count", "10*9/L", 150.0, 400.0),
            ("1022451000000103", "Red blood cell count", "10*12/L", 3.8, 5.8),
            ("1022491000000106", "Mean cell volume", "fL", 80.0, 100.0),
        ),
    ),
    (
        "252167001",
        "Urea and electrolytes",
        ("119364003", "Serum specimen"),
        (
            ("1000661000000107", "Serum sodium level", "mmol/L", 133.0, 146.0),
            ("1000651000000109", "Serum potassium level", "mmol/L", 3.5, 5.3),
            ("1000621000000104", "Serum urea level", "mmol/L", 2.5, 7.8),
            ("1000731000000107", "Serum creatinine level", "umol/L", 59.0, 104.0),
        ),
    ),
    (
        "16254007",
        "Lipid panel",
        ("119364003", "Serum specimen"),
        (
            ("1005671000000105", "Serum cholesterol level", "mmol/L", 0.0, 5.0),
            ("1005681000000107", "Serum triglycerides level", "mmol/L", 0.0, 1.7),
        ),
    ),
    (
        "35650009",
        "Thyroid function test",
        ("119364003", "Serum specimen"),
        (("1030791000000100", "Serum TSH level", "mU/L", 0.27, 4.2),),
    ),
)
_REFERRALS = (
    ("308447003", "Referral to physiotherapist", "Referral due to swollen legs"),
    ("183519002", "Referral to cardiology service", "Palpitations for review"),
    ("183545006", "Referral to dermatology service", "Persistent eczema despite treatment"),
    ("306206005", "Referral to service", "Memory clinic assessment"),
)
_DIARY = (
    ("185389009", "Follow-up visit", "Medication review due"),
    ("390906007", "Follow-up encounter", "Blood pressure check in 3 months"),
)
_CONSULT_TYPES = ("Surgery consultation", "Telephone consultation", "Home visit")
_HISTORY = (
    "Presents with worsening symptoms over two weeks.",
    "Review of ongoing condition. Reports good adherence to medication.",
    "Feeling better overall. Sleep improved.",
    "Came for routine review, no new concerns.",
)
_PLANS = (
    "Continue current treatment and review in 4 weeks.",
    "Bloods requested. Safety-netting advice given.",
    "Increase dose and review in 2 weeks.",
)


SMALL_RECORD = 24
"""Below this size a full record only has allergies, medication and problems (fewer Lists)."""

_SHARES = {
    "allergies": 0.03,
    "medication": 0.26,
    "immunisations": 0.05,
    "investigations": 0.22,
    "uncategorised": 0.15,
    "referrals": 0.03,
    "diary": 0.02,
    "problems": 0.06,
    "consultations": 0.18,
}
_MAX_ALLERGY_ENTRIES = 30
_SMALL_SHARES = {"allergies": 0.2, "medication": 0.5, "problems": 0.3}
_SMALL_REQUEST = replace(
    RecordRequest.none(),
    allergies=True,
    include_resolved_allergies=False,
    medication=True,
    problems=True,
)


# --- the generator ------------------------------------------------------------------------------


def _demographics(nhs: str, g: _Gen) -> PanelPatient:
    rng = g.rng
    female = rng.random() < 0.5
    return PanelPatient(
        nhs_number=nhs,
        family=rng.choice(_FAMILY),
        given=(rng.choice(_GIVEN_F if female else _GIVEN_M),),
        prefix="Mrs" if female else "Mr",
        gender="female" if female else "male",
        birth_date=date(
            rng.randint(1935, 2005), rng.randint(1, 12), rng.randint(1, 28)
        ).isoformat(),
        address_lines=(f"{rng.randint(1, 120)} {rng.choice(_STREETS)}",),
        city="LEEDS",
        postcode=f"LS{rng.randint(1, 29)} {rng.randint(1, 9)}{rng.choice('ABDEFGHJ')}"
        f"{rng.choice('LNPQRSTU')}",
        phone=f"0163296{rng.randint(1000, 9999)}",
        email=None,
        gp_ods="Y12345",
        demonstrates="synthetic",
    )


def _patient_resource(p: PanelPatient, pid: str, gp_ref: str, org_ref: str, g: _Gen) -> Json:
    reg_start = max(date.fromisoformat(p.birth_date), date(1962, 7, 13))
    res: Json = {
        "resourceType": "Patient",
        "id": pid,
        "meta": {
            "versionId": str(1521806400000 + g.rng.randint(0, 10**9)),
            **_meta("CareConnect-GPC-Patient-1"),
        },
        "extension": [
            {
                "url": _SD + "Extension-CareConnect-GPC-RegistrationDetails-1",
                "extension": [
                    {"url": "registrationPeriod", "valuePeriod": {"start": _dt(reg_start, 0)}},
                    {
                        "url": "registrationType",
                        "valueCodeableConcept": _cc(
                            "R",
                            "Regular",
                            "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-RegistrationType-1",
                        ),
                    },
                ],
            },
            {
                "url": _SD + "Extension-CareConnect-GPC-NHSCommunication-1",
                "extension": [
                    {
                        "url": "language",
                        "valueCodeableConcept": _cc(
                            "en",
                            "English",
                            "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-HumanLanguage-1",
                        ),
                    },
                    {"url": "preferred", "valueBoolean": False},
                    {"url": "interpreterRequired", "valueBoolean": False},
                ],
            },
        ],
        "identifier": [
            {
                "extension": [
                    {
                        "url": _SD + "Extension-CareConnect-GPC-NHSNumberVerificationStatus-1",
                        "valueCodeableConcept": _cc(
                            "01",
                            "Number present and verified",
                            "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-NHSNumberVerificationStatus-1",
                        ),
                    }
                ],
                "system": _NHS_NUMBER,
                "value": p.nhs_number,
            }
        ],
        "active": True,
        "name": [
            {
                "use": "official",
                "text": f"{' '.join(p.given)} {p.family}",
                "family": p.family,
                "given": list(p.given),
                "prefix": [p.prefix],
            }
        ],
        "gender": p.gender,
        "birthDate": p.birth_date,
        "address": [
            {
                "use": "home",
                "type": "physical",
                "line": list(p.address_lines),
                "city": p.city,
                "postalCode": p.postcode,
            }
        ],
        "generalPractitioner": [_ref(gp_ref)],
        "managingOrganization": _ref(org_ref),
    }
    if p.phone:
        res["telecom"] = [{"system": "phone", "value": p.phone, "use": "home"}]
    if p.deceased:
        res["deceasedDateTime"] = p.deceased
    return res


def _organization(oid: str, ods: str, name: str, practice: GpPractice | None, g: _Gen) -> Json:
    res: Json = {
        "resourceType": "Organization",
        "id": oid,
        "meta": {
            "versionId": str(1469444400000 + g.rng.randint(0, 10**6)),
            **_meta("CareConnect-GPC-Organization-1"),
        },
        "identifier": [{"system": _ODS, "value": ods}],
        "name": name,
    }
    if practice is not None:
        res["telecom"] = [{"system": "phone", "value": practice.phone, "use": "work"}]
        res["address"] = [
            {
                "use": "work",
                "line": list(practice.address_lines),
                "city": practice.city,
                "postalCode": practice.postcode,
            }
        ]
    return res


class _Builder:
    """Builds one patient's full record; `assemble` cuts it down to a request."""

    def __init__(self, patient: PanelPatient, size: int, seed: int) -> None:
        self.p = patient
        self.g = _Gen(f"{patient.nhs_number}:{size}:{seed}")
        self.size = size
        g = self.g
        practice = get_practice(patient.gp_ods or "") or get_practice("Y12345")
        assert practice is not None  # noqa: S101 - Y12345 is a built-in practice
        self.practice = practice
        self.pid = g.uid()
        self.patient_ref = f"Patient/{self.pid}"
        self.org_ref = f"Organization/{g.uid()}"
        self.lab_ref = f"Organization/{g.uid()}"
        self.location_ref = f"Location/{g.uid()}"
        n_gps = 1 if size < 40 else 3
        self.gp_refs = [f"Practitioner/{g.uid()}" for _ in range(n_gps)]
        # A clinician who has left the practice: referenced by old entries, never in the Bundle
        # (real captures carry such dangling Practitioner references, nhs-apis.md §5).
        self.departed_ref = f"Practitioner/{g.uid()}"
        self.birth = date.fromisoformat(patient.birth_date)
        self.start = max(
            self.birth + timedelta(days=365), REFERENCE_DATE - timedelta(days=365 * 15)
        )
        self.end = REFERENCE_DATE
        if patient.deceased:
            self.end = min(self.end, date.fromisoformat(patient.deceased[:10]))
        if self.start > self.end:
            self.start = self.end
        self.items: dict[str, list[_Item]] = {
            a: []
            for a in (
                "allergies",
                "ended_allergies",
                "medication",
                "problems",
                "immunisations",
                "uncategorised",
                "investigations",
                "referrals",
                "diary",
                "consultations",
            )
        }

    # -- helpers --
    def clinician(self) -> str:
        rng = self.g.rng
        if rng.random() < 0.08:
            return self.departed_ref
        return rng.choice(self.gp_refs)

    def day(self) -> date:
        return self.g.day_between(self.start, self.end)

    def add(self, item: _Item) -> int:
        self.items[item.area].append(item)
        return len(item.resources) + len(item.issues)

    # -- core resources --
    def core(self) -> list[Json]:
        g, p, practice = self.g, self.p, self.practice
        out: list[Json] = [
            _patient_resource(p, self.pid, self.gp_refs[0], self.org_ref, g),
            _organization(self.org_ref.split("/")[1], practice.ods, practice.name, practice, g),
        ]
        for i, ref in enumerate(self.gp_refs):
            family, given, gender = _GP_NAMES[i % len(_GP_NAMES)]
            out.append(
                {
                    "resourceType": "Practitioner",
                    "id": ref.split("/")[1],
                    "meta": _meta("CareConnect-GPC-Practitioner-1"),
                    "identifier": [
                        {
                            "system": "https://fhir.nhs.uk/Id/sds-user-id",
                            "value": f"G{8_000_000 + i * 13_579}",
                        }
                    ],
                    "name": [
                        {"use": "usual", "family": family, "given": [given], "prefix": ["Dr"]}
                    ],
                    "gender": gender,
                }
            )
            out.append(
                {
                    "resourceType": "PractitionerRole",
                    "id": g.uid(),
                    "meta": _meta("CareConnect-GPC-PractitionerRole-1"),
                    "practitioner": _ref(ref),
                    "organization": _ref(self.org_ref),
                    "code": [
                        _cc(
                            "R0260" if i == 0 else "R0270",
                            "General Medical Practitioner"
                            if i == 0
                            else "Salaried General Practitioner",
                            "https://fhir.hl7.org.uk/STU3/CodeSystem/CareConnect-SDSJobRoleName-1",
                        )
                    ],
                }
            )
        if self.size >= 12:
            out.append(
                {
                    "resourceType": "Location",
                    "id": self.location_ref.split("/")[1],
                    "meta": _meta("CareConnect-GPC-Location-1"),
                    "name": practice.name,
                    "address": {
                        "line": list(practice.address_lines),
                        "city": practice.city,
                        "postalCode": practice.postcode,
                    },
                    "managingOrganization": _ref(self.org_ref),
                }
            )
            out.append(
                _organization(
                    self.lab_ref.split("/")[1], "RR8", "LEEDS TEACHING HOSPITALS NHS TRUST", None, g
                )
            )
        return out

    # -- clinical areas --
    def allergies(self, budget: int) -> int:
        g, rng = self.g, self.g.rng
        used = 0
        n_known = 0
        # About a third of patients have no known allergies (recorded as an assertion).
        if budget < 20 and rng.random() < 0.35:
            budget = 0
        while used < budget:
            code, display, category = rng.choice(_ALLERGIES)
            when = self.day()
            aid = g.uid()
            reaction_code, reaction_display = rng.choice(_REACTIONS)
            res: Json = {
                "resourceType": "AllergyIntolerance",
                "id": aid,
                "meta": _meta("CareConnect-GPC-AllergyIntolerance-1"),
                "identifier": g.ident(),
                "clinicalStatus": "active",
                "verificationStatus": "unconfirmed",
                "type": "allergy" if rng.random() < 0.8 else "intolerance",
                "category": [category],
                "code": _cc(code, display),
                "patient": _ref(self.patient_ref),
                "onsetDateTime": _dt(when, 720),
                "assertedDate": _dt(when, 720),
                "recorder": _ref(self.clinician()),
                "reaction": [
                    {
                        "manifestation": [_cc(reaction_code, reaction_display)],
                        "severity": rng.choice(("mild", "moderate", "severe")),
                    }
                ],
            }
            if rng.random() < 0.3:
                res["note"] = [{"text": "Reaction reported by patient."}]
            used += self.add(_Item("allergies", f"AllergyIntolerance/{aid}", when, [res]))
            n_known += 1
        if n_known == 0:
            # GP Connect "no known allergies" is an AllergyIntolerance assertion, not an empty List.
            aid = g.uid()
            when = self.day()
            nka: Json = {
                "resourceType": "AllergyIntolerance",
                "id": aid,
                "meta": _meta("CareConnect-GPC-AllergyIntolerance-1"),
                "identifier": g.ident(),
                "clinicalStatus": "active",
                "verificationStatus": "unconfirmed",
                "type": "allergy",
                "category": ["medication"],
                "code": {
                    "coding": [
                        {
                            "extension": [
                                {
                                    "url": _CC_SD + "Extension-coding-sctdescid",
                                    "extension": [
                                        {"url": "descriptionId", "valueId": "3305010017"},
                                        {
                                            "url": "descriptionDisplay",
                                            "valueString": "NKA - No known allergy",
                                        },
                                    ],
                                }
                            ],
                            "system": SCT,
                            "code": "716186003",
                            "display": "No known allergy",
                        }
                    ]
                },
                "patient": _ref(self.patient_ref),
                "assertedDate": _dt(when, 600),
                "recorder": _ref(self.clinician()),
            }
            used += self.add(_Item("allergies", f"AllergyIntolerance/{aid}", when, [nka]))
        # Resolved allergies are `contained` in the "Ended allergies" List (GP Connect 1.6).
        for _ in range(rng.randint(0, 2) if budget > 0 else 0):
            code, display, category = rng.choice(_ALLERGIES)
            onset = self.day()
            ended = min(onset + timedelta(days=rng.randint(30, 900)), REFERENCE_DATE)
            aid = g.uid()
            res = {
                "resourceType": "AllergyIntolerance",
                "id": aid,
                "meta": _meta("CareConnect-GPC-AllergyIntolerance-1"),
                "extension": [
                    {
                        "url": _SD + "Extension-CareConnect-GPC-AllergyIntoleranceEnd-1",
                        "extension": [
                            {"url": "endDate", "valueDateTime": ended.isoformat()},
                            {"url": "reasonEnded", "valueString": "No longer clinically relevant"},
                        ],
                    }
                ],
                "clinicalStatus": "resolved",
                "verificationStatus": "unconfirmed",
                "category": [category],
                "code": _cc(code, display),
                "patient": _ref(self.patient_ref),
                "onsetDateTime": onset.isoformat(),
                "assertedDate": _dt(onset, 660),
                "recorder": _ref(self.clinician()),
                "note": [{"text": "This allergy has ended"}],
            }
            self.items["ended_allergies"].append(_Item("ended_allergies", f"#{aid}", onset, [res]))
        return used

    def medication(self, budget: int) -> int:
        g, rng = self.g, self.g.rng
        used = 0
        while used < budget:
            drug = rng.choice(dmd.DRUGS)
            concept = dmd.CONCEPTS[drug.amp if rng.random() < 0.3 else drug.vmp]
            start = self.day()
            repeat = rng.random() < 0.6
            n_issues = rng.randint(2, 6) if repeat else 1
            interval = drug.supply_days
            end = start + timedelta(days=interval * n_issues)
            status = "active" if end >= REFERENCE_DATE else "completed"
            stopped = status == "completed" and rng.random() < 0.25
            end = min(end, REFERENCE_DATE)
            med_id, ms_id, plan_id = g.uid(), g.uid(), g.uid()
            recorder = self.clinician()
            dosage: Json = {"text": drug.dosage}
            if drug.as_needed:
                dosage["asNeededCodeableConcept"] = {"text": "When required"}
            if rng.random() < 0.4:
                dosage["patientInstruction"] = "Take with water"
            ptype = ("repeat", "Repeat") if repeat else ("acute", "Acute")
            ptype_ext = {
                "url": _SD + "Extension-CareConnect-GPC-PrescriptionType-1",
                "valueCodeableConcept": _cc(
                    ptype[0],
                    ptype[1],
                    "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-PrescriptionType-1",
                ),
            }
            medication: Json = {
                "resourceType": "Medication",
                "id": med_id,
                "meta": _meta("CareConnect-GPC-Medication-1"),
                "code": {
                    "coding": [{"system": SCT, "code": concept.code, "display": concept.display}]
                },
            }
            quantity = {
                "value": drug.quantity,
                "unit": drug.quantity_unit,
                "extension": [
                    {
                        "url": _SD + "Extension-CareConnect-GPC-MedicationQuantityText-1",
                        "valueString": f"{drug.quantity} {drug.quantity_unit}",
                    }
                ],
            }
            plan: Json = {
                "resourceType": "MedicationRequest",
                "id": plan_id,
                "meta": _meta("CareConnect-GPC-MedicationRequest-1"),
                "extension": [ptype_ext],
                "identifier": g.ident(),
                "groupIdentifier": {"value": g.uid()},
                "status": "stopped" if stopped else status,
                "intent": "plan",
                "medicationReference": _ref(f"Medication/{med_id}"),
                "subject": _ref(self.patient_ref),
                "authoredOn": _dt(start, 540),
                "recorder": _ref(recorder),
                "dosageInstruction": [dosage],
                "dispenseRequest": {
                    "validityPeriod": {"start": _dt(start, 540), "end": _dt(end, 540)},
                    "quantity": quantity,
                    "expectedSupplyDuration": {
                        "value": interval,
                        "unit": "day",
                        "system": UCUM,
                        "code": "d",
                    },
                    "performer": _ref(self.org_ref),
                },
            }
            if repeat:
                plan["extension"].insert(
                    0,
                    {
                        "url": _SD + "Extension-CareConnect-GPC-MedicationRepeatInformation-1",
                        "extension": [
                            {
                                "url": "numberOfRepeatPrescriptionsAllowed",
                                "valuePositiveInt": n_issues + 2,
                            },
                            {
                                "url": "numberOfRepeatPrescriptionsIssued",
                                "valuePositiveInt": n_issues,
                            },
                        ],
                    },
                )
            if stopped:
                plan["extension"].append(
                    {
                        "url": _SD + "Extension-CareConnect-GPC-MedicationStatusReason-1",
                        "extension": [
                            {"url": "statusChangeDate", "valueDateTime": _dt(end, 600)},
                            {
                                "url": "statusReason",
                                "valueCodeableConcept": {"text": "Side effects"},
                            },
                        ],
                    }
                )
            statement: Json = {
                "resourceType": "MedicationStatement",
                "id": ms_id,
                "meta": _meta("CareConnect-GPC-MedicationStatement-1"),
                "extension": [
                    {
                        "url": _SD + "Extension-CareConnect-GPC-MedicationStatementLastIssueDate-1",
                        "valueDateTime": _dt(
                            start + timedelta(days=interval * (n_issues - 1)), 540
                        ),
                    },
                    {
                        "url": _SD + "Extension-CareConnect-GPC-PrescribingAgency-1",
                        "valueCodeableConcept": _cc(
                            "prescribed-at-gp-practice",
                            "Prescribed at GP practice",
                            "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-PrescribingAgency-1",
                        ),
                    },
                ],
                "identifier": g.ident(),
                "basedOn": [_ref(f"MedicationRequest/{plan_id}")],
                "status": "stopped" if stopped else status,
                "medicationReference": _ref(f"Medication/{med_id}"),
                "effectivePeriod": {"start": _dt(start, 540), "end": _dt(end, 540)}
                if status != "active"
                else {"start": _dt(start, 540)},
                "dateAsserted": _dt(start, 540),
                "subject": _ref(self.patient_ref),
                "taken": "unk",
                "dosage": [dosage],
            }
            issues: list[Json] = []
            for k in range(n_issues):
                issued = start + timedelta(days=interval * k)
                issues.append(
                    {
                        "resourceType": "MedicationRequest",
                        "id": g.uid(),
                        "meta": _meta("CareConnect-GPC-MedicationRequest-1"),
                        "extension": [ptype_ext],
                        "identifier": g.ident(),
                        "groupIdentifier": plan["groupIdentifier"],
                        "basedOn": [_ref(f"MedicationRequest/{plan_id}")],
                        "status": "completed",
                        "intent": "order",
                        "medicationReference": _ref(f"Medication/{med_id}"),
                        "subject": _ref(self.patient_ref),
                        "authoredOn": _dt(issued, 540),
                        "recorder": _ref(recorder),
                        "dosageInstruction": [dosage],
                        "dispenseRequest": {
                            "validityPeriod": {
                                "start": _dt(issued, 540),
                                "end": _dt(issued + timedelta(days=interval), 540),
                            },
                            "quantity": quantity,
                            "expectedSupplyDuration": {
                                "value": interval,
                                "unit": "day",
                                "system": UCUM,
                                "code": "d",
                            },
                            "performer": _ref(self.org_ref),
                        },
                    }
                )
            item = _Item(
                "medication",
                f"MedicationStatement/{ms_id}",
                end if status != "active" else REFERENCE_DATE,
                [statement, medication, plan],
                issues,
                status=status,
            )
            used += self.add(item)
        return used

    def _observation(self, when: date, code: str, display: str, *, encounter: str | None) -> Json:
        g = self.g
        obs: Json = {
            "resourceType": "Observation",
            "id": g.uid(),
            "meta": _meta("CareConnect-GPC-Observation-1"),
            "identifier": g.ident(_DATA_ID),
            "status": "final",
            "code": _cc(code, display),
            "subject": _ref(self.patient_ref),
            "effectiveDateTime": _dt(when, 630),
            "issued": _dt(when, 640),
            "performer": [_ref(self.clinician())],
        }
        if encounter:
            obs["context"] = _ref(encounter)
        return obs

    def uncategorised_item(self, when: date, encounter: str | None = None) -> _Item:
        rng = self.g.rng
        kind = rng.random()
        if kind < 0.25:
            obs = self._observation(
                when, "163020007", "O/E - blood pressure reading", encounter=encounter
            )
            obs["component"] = [
                {
                    "code": _cc("72313002", "Systolic arterial pressure"),
                    "valueQuantity": _qty(rng.randint(105, 165), "mm[Hg]"),
                },
                {
                    "code": _cc("1091811000000102", "Diastolic arterial pressure"),
                    "valueQuantity": _qty(rng.randint(60, 100), "mm[Hg]"),
                },
            ]
        elif kind < 0.40:
            obs = self._observation(when, "27113001", "Body weight", encounter=encounter)
            obs["valueQuantity"] = _qty(round(rng.uniform(48, 110), 1), "kg")
        elif kind < 0.48:
            obs = self._observation(when, "50373000", "Body height measure", encounter=encounter)
            obs["valueQuantity"] = _qty(rng.randint(150, 195), "cm")
        elif kind < 0.56:
            obs = self._observation(when, "60621009", "Body mass index", encounter=encounter)
            obs["valueQuantity"] = _qty(round(rng.uniform(18, 38), 1), "kg/m2", "kg/m2")
        elif kind < 0.64:
            obs = self._observation(when, "364075005", "Heart rate", encounter=encounter)
            obs["valueQuantity"] = _qty(rng.randint(52, 110), "/min")
        elif kind < 0.72:
            obs = self._observation(when, "276885007", "Core body temperature", encounter=encounter)
            obs["valueQuantity"] = _qty(round(rng.uniform(36.1, 38.9), 1), "Cel")
        elif kind < 0.80:
            code, display = rng.choice(
                (
                    ("77176002", "Smoker"),
                    ("8517006", "Ex-smoker"),
                    ("266919005", "Never smoked tobacco"),
                )
            )
            obs = self._observation(when, code, display, encounter=encounter)
        elif kind < 0.86:
            obs = self._observation(
                when, "1082641000000106", "Alcohol units consumed per week", encounter=encounter
            )
            obs["valueQuantity"] = {"value": rng.randint(0, 30), "unit": "units/week"}
        else:
            obs = self._observation(when, "37331000000100", "Comment note", encounter=encounter)
            obs["comment"] = rng.choice(_HISTORY)
        return _Item("uncategorised", f"Observation/{obs['id']}", when, [obs])

    def uncategorised(self, budget: int) -> int:
        used = 0
        while used < budget:
            used += self.add(self.uncategorised_item(self.day()))
        return used

    def problems(self, budget: int) -> int:
        g, rng = self.g, self.g.rng
        used = 0
        chosen = list(_PROBLEMS)
        rng.shuffle(chosen)
        i = 0
        condition_refs: list[str] = []
        while used < budget:
            code, display, text = chosen[i % len(chosen)]
            i += 1
            onset = self.day()
            active = rng.random() < 0.65
            # The actual problem is the coded clinical item the header summarises (GP Connect 1.6
            # "Problems" guidance): an uncategorised Observation here.
            actual = self._observation(onset, code, display, encounter=None)
            actual_item = _Item("uncategorised", f"Observation/{actual['id']}", onset, [actual])
            used += self.add(actual_item)
            cid = g.uid()
            links = [actual_item.ref]
            extensions: list[Json] = [
                {
                    "url": _SD + "Extension-CareConnect-GPC-ActualProblem-1",
                    "valueReference": _ref(actual_item.ref),
                },
                {
                    "url": _CC_SD + "Extension-CareConnect-ProblemSignificance-1",
                    "valueCode": "major" if rng.random() < 0.6 else "minor",
                },
            ]
            significance = extensions[1]["valueCode"]
            for area in ("medication", "allergies", "immunisations", "investigations"):
                pool = self.items[area]
                if pool and rng.random() < 0.5:
                    linked = rng.choice(pool)
                    if linked.ref not in links:
                        links.append(linked.ref)
                        extensions.append(
                            {
                                "url": _CC_SD + "Extension-CareConnect-RelatedClinicalContent-1",
                                "valueReference": _ref(linked.ref),
                            }
                        )
            if condition_refs and rng.random() < 0.3:
                parent = rng.choice(condition_refs)
                links.append(parent)
                extensions.append(
                    {
                        "url": _SD + "Extension-CareConnect-GPC-RelatedProblemHeader-1",
                        "extension": [
                            {"url": "type", "valueCode": "child"},
                            {"url": "target", "valueReference": _ref(parent)},
                        ],
                    }
                )
            condition: Json = {
                "resourceType": "Condition",
                "id": cid,
                "meta": _meta("CareConnect-GPC-ProblemHeader-Condition-1"),
                "extension": extensions,
                "identifier": g.ident(),
                "clinicalStatus": "active" if active else "inactive",
                "category": [
                    _cc(
                        "problem-list-item",
                        "Problem List Item",
                        "https://fhir.hl7.org.uk/STU3/CodeSystem/CareConnect-ConditionCategory-1",
                    )
                ],
                "code": {**_cc(code, display), "text": text},
                "subject": _ref(self.patient_ref),
                "onsetDateTime": _dt(onset, 600),
                "assertedDate": _dt(onset, 600),
                "asserter": _ref(self.clinician()),
            }
            if not active:
                condition["abatementDateTime"] = _dt(
                    min(onset + timedelta(days=rng.randint(20, 700)), REFERENCE_DATE), 600
                )
            item = _Item(
                "problems",
                f"Condition/{cid}",
                onset,
                [condition],
                status="active" if active else "inactive",
                significance=significance,
                links=links,
            )
            condition_refs.append(item.ref)
            used += self.add(item)
        return used

    def immunisations(self, budget: int) -> int:
        g, rng = self.g, self.g.rng
        used = 0
        while used < budget:
            (vcode, vdisplay), (pcode, pdisplay), (dcode, ddisplay), doses = rng.choice(_VACCINES)
            when = self.day()
            not_given = rng.random() < 0.1
            iid = g.uid()
            imm: Json = {
                "resourceType": "Immunization",
                "id": iid,
                "meta": _meta("CareConnect-GPC-Immunization-1"),
                "extension": [
                    {
                        "url": _SD + "Extension-CareConnect-GPC-ParentPresent-1",
                        "valueBoolean": False,
                    },
                    {
                        "url": _CC_SD + "Extension-CareConnect-DateRecorded-1",
                        "valueDateTime": _dt(when, 610),
                    },
                    {
                        "url": _CC_SD + "Extension-CareConnect-VaccinationProcedure-1",
                        "valueCodeableConcept": _cc(pcode, pdisplay),
                    },
                ],
                "identifier": g.ident(),
                "status": "completed",
                "notGiven": not_given,
                "vaccineCode": _cc(vcode, vdisplay),
                "patient": _ref(self.patient_ref),
                "date": _dt(when, 600),
                "primarySource": True,
                "location": _ref(self.location_ref),
                "practitioner": [
                    {
                        "role": _cc("AP", "Administering Provider", "http://hl7.org/fhir/v2/0443"),
                        "actor": _ref(self.clinician()),
                    }
                ],
            }
            if not_given:
                imm["explanation"] = {"reasonNotGiven": [{"text": "Patient declined"}]}
            else:
                imm["lotNumber"] = f"{rng.choice('ABCDEFGHJK')}{rng.randint(10000, 99999)}"
                imm["expirationDate"] = (when + timedelta(days=180)).isoformat()
                imm["site"] = _cc("368209003", "Right upper arm")
                imm["route"] = _cc("78421000", "Intramuscular route")
                imm["doseQuantity"] = _qty(0.5, "ml", "mL")
                imm["vaccinationProtocol"] = [
                    {
                        "doseSequence": rng.randint(1, doses),
                        "seriesDoses": doses,
                        "targetDisease": [_cc(dcode, ddisplay)],
                        "doseStatus": _cc(
                            "count",
                            "Counts",
                            "http://hl7.org/fhir/vaccination-protocol-dose-status",
                        ),
                    }
                ]
            item = _Item(
                "immunisations",
                f"Immunization/{iid}",
                when,
                [imm],
                status="not-given" if not_given else "given",
            )
            used += self.add(item)
        if budget > 0 and rng.random() < 0.5:
            # Consent status for immunisations is an Observation in the Immunisations List
            # (includeStatus part parameter).
            when = self.day()
            obs = self._observation(when, "310375005", "Immunisation consent given", encounter=None)
            used += self.add(
                _Item("immunisations", f"Observation/{obs['id']}", when, [obs], status="status")
            )
        return used

    def investigations(self, budget: int) -> int:
        g, rng = self.g, self.g.rng
        used = 0
        while used < budget:
            gcode, gdisplay, (scode, sdisplay), tests = rng.choice(_TEST_GROUPS)
            requested = self.day()
            collected = min(requested + timedelta(days=rng.randint(0, 7)), REFERENCE_DATE)
            reported = min(collected + timedelta(days=rng.randint(1, 3)), REFERENCE_DATE)
            pr_id, dr_id, sp_id, grp_id = g.uid(), g.uid(), g.uid(), g.uid()
            requester = self.clinician()
            lab = {"reference": self.lab_ref, "display": "LEEDS TEACHING HOSPITALS NHS TRUST"}
            request: Json = {
                "resourceType": "ProcedureRequest",
                "id": pr_id,
                "meta": _meta("CareConnect-GPC-ProcedureRequest-1"),
                "identifier": g.ident("https://tools.ietf.org/html/rfc4122"),
                "status": "completed",
                "intent": "order",
                "code": _cc(gcode, gdisplay),
                "subject": _ref(self.patient_ref),
                "authoredOn": _dt(requested, 560),
                "requester": {"agent": _ref(requester)},
                "performer": lab,
            }
            specimen: Json = {
                "resourceType": "Specimen",
                "id": sp_id,
                "meta": _meta("CareConnect-GPC-Specimen-1"),
                "identifier": g.ident("https://tools.ietf.org/html/rfc4122"),
                "accessionIdentifier": {"value": f"L{rng.randint(10_000_000, 99_999_999)}"},
                "status": "available",
                "type": _cc(scode, sdisplay),
                "subject": _ref(self.patient_ref),
                "receivedTime": _dt(collected, 900),
                "collection": {"collectedDateTime": _dt(collected, 560)},
            }
            results: list[Json] = []
            for tcode, tdisplay, unit, low, high in tests:
                value = round(rng.uniform(low * 0.8 if low else 0.1, high * 1.15), 1)
                obs: Json = {
                    "resourceType": "Observation",
                    "id": g.uid(),
                    "meta": _meta("CareConnect-GPC-Observation-1"),
                    "identifier": g.ident("https://tools.ietf.org/html/rfc4122"),
                    "status": "final",
                    "category": [_cc("394595002", "Pathology")],
                    "code": _cc(tcode, tdisplay),
                    "subject": _ref(self.patient_ref),
                    "effectiveDateTime": _dt(collected, 560),
                    "issued": _dt(reported, 720),
                    "performer": [lab],
                    "valueQuantity": _qty(value, unit),
                    "specimen": _ref(f"Specimen/{sp_id}"),
                    "referenceRange": [{"low": _qty(low, unit), "high": _qty(high, unit)}],
                    "related": [{"type": "derived-from", "target": _ref(f"Observation/{grp_id}")}],
                }
                if value > high or value < low:
                    obs["interpretation"] = _cc(
                        "H" if value > high else "L",
                        "High" if value > high else "Low",
                        "http://hl7.org/fhir/v2/0078",
                    )
                results.append(obs)
            group: Json = {
                "resourceType": "Observation",
                "id": grp_id,
                "meta": _meta("CareConnect-GPC-Observation-1"),
                "identifier": g.ident("https://tools.ietf.org/html/rfc4122"),
                "status": "final",
                "category": [_cc("394595002", "Pathology")],
                "code": _cc(gcode, gdisplay),
                "subject": _ref(self.patient_ref),
                "issued": _dt(reported, 720),
                "performer": [lab],
                "specimen": _ref(f"Specimen/{sp_id}"),
                "related": [
                    {"type": "has-member", "target": _ref(f"Observation/{r['id']}")}
                    for r in results
                ],
            }
            # Filing comment: the clinician's note when filing the report (GP Connect 1.6
            # "Investigations" guidance), an Observation coded 37331000000100.
            filing = self._observation(reported, "37331000000100", "Comment note", encounter=None)
            filing["comment"] = rng.choice(
                ("Filed - normal, no action.", "Filed - discuss with patient.")
            )
            filing["related"] = [
                {"type": "derived-from", "target": _ref(f"DiagnosticReport/{dr_id}")}
            ]
            report: Json = {
                "resourceType": "DiagnosticReport",
                "id": dr_id,
                "meta": _meta("CareConnect-GPC-DiagnosticReport-1"),
                "identifier": g.ident("https://tools.ietf.org/html/rfc4122"),
                "basedOn": [_ref(f"ProcedureRequest/{pr_id}")],
                "status": "final",
                "code": _cc("721981007", "Diagnostic studies report"),
                "subject": _ref(self.patient_ref),
                "issued": _dt(reported, 720),
                "performer": [{"actor": lab}],
                "specimen": [_ref(f"Specimen/{sp_id}")],
                "result": [_ref(f"Observation/{grp_id}"), _ref(f"Observation/{filing['id']}")],
            }
            item = _Item(
                "investigations",
                f"DiagnosticReport/{dr_id}",
                reported,
                [report, request, specimen, group, *results, filing],
            )
            used += self.add(item)
        return used

    def referrals(self, budget: int) -> int:
        g, rng = self.g, self.g.rng
        used = 0
        while used < budget:
            code, display, description = rng.choice(_REFERRALS)
            when = self.day()
            rid = g.uid()
            ref: Json = {
                "resourceType": "ReferralRequest",
                "id": rid,
                "meta": _meta("CareConnect-GPC-ReferralRequest-1"),
                "identifier": [
                    *g.ident(_DATA_ID),
                    {"system": "https://fhir.nhs.uk/Id/UBRN", "value": g.uid()},
                ],
                "status": "completed" if when < REFERENCE_DATE - timedelta(days=90) else "active",
                "intent": "order",
                "priority": rng.choice(("routine", "urgent")),
                "subject": _ref(self.patient_ref),
                "authoredOn": _dt(when, 660),
                "requester": {"agent": _ref(self.clinician())},
                # The recipient is another organisation's clinician: never in the Bundle.
                "recipient": [{"reference": f"Practitioner/{g.uid()}", "display": "Dr Dave"}],
                "reasonCode": [_cc(code, display)],
                "description": description,
            }
            used += self.add(_Item("referrals", f"ReferralRequest/{rid}", when, [ref]))
        return used

    def diary(self, budget: int) -> int:
        g, rng = self.g, self.g.rng
        used = 0
        while used < budget:
            code, display, note = rng.choice(_DIARY)
            due = REFERENCE_DATE + timedelta(days=rng.randint(7, 365))
            did = g.uid()
            entry: Json = {
                "resourceType": "ProcedureRequest",
                "id": did,
                "meta": _meta("CareConnect-GPC-ProcedureRequest-1"),
                "identifier": g.ident(_DATA_ID),
                "status": "active",
                "intent": "plan",
                "code": _cc(code, display),
                "subject": _ref(self.patient_ref),
                "occurrenceDateTime": _dt(due, 540),
                "authoredOn": _dt(REFERENCE_DATE - timedelta(days=rng.randint(1, 60)), 540),
                "requester": {"agent": _ref(self.clinician())},
                "note": [{"text": note}],
            }
            used += self.add(_Item("diary", f"ProcedureRequest/{did}", due, [entry]))
        return used

    def consultations(self, budget: int) -> int:
        g, rng = self.g, self.g.rng
        used = 0
        problems = self.items["problems"]
        while used < budget:
            when = self.day()
            eid = g.uid()
            enc_ref = f"Encounter/{eid}"
            clinician = rng.choice(self.gp_refs)
            start_min = rng.randint(8 * 60, 17 * 60)
            length = rng.choice((8, 10, 12, 15, 20))
            ctype = rng.choice(_CONSULT_TYPES)
            encounter: Json = {
                "resourceType": "Encounter",
                "id": eid,
                "meta": _meta("CareConnect-GPC-Encounter-1"),
                "identifier": g.ident(_DATA_ID),
                "status": "finished",
                "type": [{"text": ctype}],
                "subject": _ref(self.patient_ref),
                "participant": [
                    {
                        "type": [
                            _cc(
                                "PPRF",
                                "primary performer",
                                "https://fhir.nhs.uk/STU3/CodeSystem/GPConnect-ParticipantType-1",
                            )
                        ],
                        "individual": _ref(clinician),
                    },
                    {
                        "type": [
                            _cc(
                                "REC",
                                "recorder",
                                "https://fhir.nhs.uk/STU3/CodeSystem/GPConnect-ParticipantType-1",
                            )
                        ],
                        "individual": _ref(clinician),
                    },
                ],
                "period": {"start": _dt(when, start_min), "end": _dt(when, start_min + length)},
                "length": {"value": length, "unit": "min", "system": UCUM, "code": "min"},
                "location": [{"location": _ref(self.location_ref)}],
                "serviceProvider": _ref(self.org_ref),
            }
            structure: list[Json] = []
            links: list[str] = []
            consult_id = g.uid()
            topic_refs: list[Json] = []
            for _t in range(rng.randint(1, 2)):
                topic_id = g.uid()
                category_refs: list[Json] = []
                for title in rng.sample(("History", "Examination", "Plan"), rng.randint(1, 3)):
                    cat_id = g.uid()
                    entries: list[Json] = []
                    for _o in range(rng.randint(1, 3)):
                        item = self.uncategorised_item(when, encounter=enc_ref)
                        if title == "History":
                            obs = item.resources[0]
                            obs["code"] = _cc("37331000000100", "Comment note")
                            obs.pop("valueQuantity", None)
                            obs.pop("component", None)
                            obs["comment"] = rng.choice(_HISTORY)
                        elif title == "Plan":
                            obs = item.resources[0]
                            obs["code"] = _cc("37331000000100", "Comment note")
                            obs.pop("valueQuantity", None)
                            obs.pop("component", None)
                            obs["comment"] = rng.choice(_PLANS)
                        used += self.add(item)
                        links.append(item.ref)
                        entries.append({"item": _ref(item.ref)})
                    if title == "Plan" and self.items["medication"] and rng.random() < 0.4:
                        med = rng.choice(self.items["medication"])
                        plan_ref = f"MedicationRequest/{med.resources[2]['id']}"
                        links.append(med.ref)
                        entries.append({"item": _ref(plan_ref)})
                    structure.append(
                        self._structure_list(
                            cat_id,
                            title,
                            "24781000000107",
                            "Category (EHR)",
                            enc_ref,
                            when,
                            entries,
                        )
                    )
                    category_refs.append({"item": _ref(f"List/{cat_id}")})
                topic = self._structure_list(
                    topic_id, None, "25851000000105", "Topic (EHR)", enc_ref, when, category_refs
                )
                if problems and rng.random() < 0.5:
                    problem = rng.choice(problems)
                    links.append(problem.ref)
                    topic["title"] = problem.resources[0]["code"]["text"]
                    topic["extension"] = [
                        {
                            "url": _CC_SD + "Extension-CareConnect-RelatedProblemHeader-1",
                            "valueReference": _ref(problem.ref),
                        }
                    ]
                structure.append(topic)
                topic_refs.append({"item": _ref(f"List/{topic_id}")})
            consultation = self._structure_list(
                consult_id, ctype, "325851000000107", "Consultation", enc_ref, when, topic_refs
            )
            resources = [encounter, consultation, *structure]
            used += self.add(_Item("consultations", enc_ref, when, resources, links=links))
        return used

    def _structure_list(
        self,
        lid: str,
        title: str | None,
        code: str,
        display: str,
        enc_ref: str,
        when: date,
        entries: list[Json],
    ) -> Json:
        res: Json = {
            "resourceType": "List",
            "id": lid,
            "meta": _meta("CareConnect-GPC-List-1"),
            "status": "current",
            "mode": "snapshot",
            "code": _cc(code, display),
            "subject": _ref(self.patient_ref),
            "encounter": _ref(enc_ref),
            "date": _dt(when, 600),
            "orderedBy": _cc("system", "Sorted by System", "http://hl7.org/fhir/list-order"),
            "entry": entries,
        }
        if title:
            res["title"] = title
        return res

    def build(self) -> _Record:
        core = self.core()
        empty = self.p.record == "empty" or self.size <= len(core) + 1
        if not empty:
            share = _SMALL_SHARES if self.size < SMALL_RECORD else _SHARES
            lists = len(share) + (0 if self.size < SMALL_RECORD else 4)
            remaining = max(self.size - len(core) - lists, 0)
            # Dict order matters: problems and consultations link to items made before them.
            budgets = {area: int(remaining * fraction) for area, fraction in share.items()}
            # Real records rarely list more than ~30 allergies (the largest capture has 28):
            # a huge record's surplus goes to uncategorised data instead.
            if budgets["allergies"] > _MAX_ALLERGY_ENTRIES and "uncategorised" in budgets:
                budgets["uncategorised"] += budgets["allergies"] - _MAX_ALLERGY_ENTRIES
                budgets["allergies"] = _MAX_ALLERGY_ENTRIES
            debt = 0
            for area, budget in budgets.items():
                # Items come whole, so areas overshoot their budget: later areas pay it back.
                builder: Callable[[int], int] = getattr(self, area)
                debt += builder(max(budget - debt, 0)) - budget
                debt = max(debt, 0)
        rng = self.g.rng
        warnings = self.p.warnings
        if not warnings and self.p.demonstrates == "synthetic" and rng.random() < 0.2:
            warnings = ("confidential-items",)
        by_ref: dict[str, _Item] = {}
        for items in self.items.values():
            for it in items:
                by_ref[it.ref] = it
        return _Record(
            core=core,
            items=self.items,
            by_ref=by_ref,
            patient_ref=self.patient_ref,
            nhs_number=self.p.nhs_number,
            warnings=warnings,
            transit_date=REFERENCE_DATE - timedelta(days=45),
            empty=empty,
        )


# --- assembling a Bundle from a record ----------------------------------------------------------


def _in_period(d: date, period: tuple[date | None, date | None] | None) -> bool:
    if period is None:
        return True
    start, end = period
    return (start is None or d >= start) and (end is None or d <= end)


def _primary_list(
    record: _Record, area: str, entries: list[Json], *, contained: list[Json] | None = None
) -> Json:
    code, display, title = LIST_CODES[area]
    res: Json = {
        "resourceType": "List",
        "meta": _meta("CareConnect-GPC-List-1"),
        "extension": [
            {
                "url": _SD + "Extension-CareConnect-GPC-ClinicalSetting-1",
                "valueCodeableConcept": _cc("1060971000000108", "General practice service"),
            }
        ],
        "status": "current",
        "mode": "snapshot",
        "title": title,
        "code": _cc(code, display),
        # Real captures use a bare NHS-number identifier here rather than a Patient reference.
        "subject": {"identifier": {"system": _NHS_NUMBER, "value": record.nhs_number}},
        "date": _dt(REFERENCE_DATE, 600),
        "orderedBy": _cc("event-date", "Sorted by Event Date", "http://hl7.org/fhir/list-order"),
    }
    if contained:
        res["contained"] = contained
    notes: list[Json] = []
    for warning in record.warnings:
        res["extension"].append({"url": _WARNING_EXT, "valueCode": warning})
        notes.append(
            {"text": WARNING_NOTES[warning].format(date=record.transit_date.strftime("%d-%b-%Y"))}
        )
    if entries:
        res["entry"] = entries
    else:
        res["emptyReason"] = _cc(
            "no-content-recorded",
            "No Content Recorded",
            "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-ListEmptyReasonCode-1",
        )
        notes.append({"text": "Information not available"})
    if notes:
        res["note"] = notes
    return res


def _secondary_list(record: _Record, code: str, refs: list[str]) -> Json:
    title = code.replace("-", " ")
    title = title[0].upper() + title[1:]
    first, _, rest = title.partition(" ")
    return {
        "resourceType": "List",
        "meta": _meta("CareConnect-GPC-List-1"),
        "status": "current",
        "mode": "snapshot",
        "title": f"{first} - {rest}",
        "code": _cc(code, f"{first} - {rest}", _SECONDARY),
        "subject": _ref(record.patient_ref),
        "date": _dt(REFERENCE_DATE, 600),
        "orderedBy": _cc("event-date", "Sorted by Event Date", "http://hl7.org/fhir/list-order"),
        "entry": [{"item": _ref(r)} for r in refs],
    }


def _assemble(record: _Record, req: RecordRequest, bundle_id: str) -> Json:
    entries: list[Json] = [{"resource": r} for r in record.core]
    included: set[str] = set()
    lists: list[Json] = []

    def include(item: _Item) -> None:
        if item.ref in included:
            return
        included.add(item.ref)
        entries.extend({"resource": r} for r in item.resources)
        if item.area == "medication" and req.include_prescription_issues:
            entries.extend({"resource": r} for r in item.issues)

    def primary(area: str, items: Iterable[_Item]) -> None:
        chosen = [] if record.empty else list(items)
        for it in chosen:
            include(it)
        lists.append(_primary_list(record, area, [{"item": _ref(it.ref)} for it in chosen]))

    items = record.items
    if req.allergies:
        primary("allergies", items["allergies"])
        if req.include_resolved_allergies:
            ended = [] if record.empty else items["ended_allergies"]
            lists.append(
                _primary_list(
                    record,
                    "ended_allergies",
                    [{"item": _ref(it.ref)} for it in ended],
                    contained=[it.resources[0] for it in ended],
                )
            )
    if req.medication:
        primary(
            "medication",
            (
                it
                for it in items["medication"]
                if req.medication_search_from is None or it.when >= req.medication_search_from
            ),
        )
    if req.immunisations:
        primary(
            "immunisations",
            (
                it
                for it in items["immunisations"]
                if (req.include_not_given or it.status != "not-given")
                and (req.include_immunisation_status or it.status != "status")
            ),
        )
    if req.uncategorised:
        primary(
            "uncategorised",
            (it for it in items["uncategorised"] if _in_period(it.when, req.uncategorised_period)),
        )
    if req.investigations:
        primary(
            "investigations",
            (it for it in items["investigations"] if _in_period(it.when, req.investigation_period)),
        )
    if req.referrals:
        primary(
            "referrals",
            (it for it in items["referrals"] if _in_period(it.when, req.referral_period)),
        )
    if req.diary:
        primary(
            "diary",
            (
                it
                for it in items["diary"]
                if req.diary_search_date is None or it.when <= req.diary_search_date
            ),
        )

    def add_linked(source: str, linked_by: Iterable[_Item]) -> None:
        """Items linked from problems/consultations but not asked for go in secondary Lists."""
        per_area: dict[str, list[str]] = {}
        for holder in linked_by:
            for ref in holder.links:
                it = record.by_ref.get(ref)
                if it is None or it.ref in included:
                    continue
                include(it)
                per_area.setdefault(it.area, []).append(it.ref)
        for area, refs in per_area.items():
            if source == "problems":
                code = f"problems-{_SECONDARY_AREA_NAME[area]}-related-to-problems"
                if area == "problems":
                    code = "problems-linked-problems-not-relating-to-the-primary-query"
            else:
                code = f"consultations-{_SECONDARY_AREA_NAME[area]}-contained-in-consultations"
            lists.append(_secondary_list(record, code, refs))

    if req.problems:
        chosen = [
            it
            for it in items["problems"]
            if not req.problem_filters
            or any(
                (status is None or it.status == status) and (sig is None or it.significance == sig)
                for status, sig in req.problem_filters
            )
        ]
        primary("problems", chosen)
        if not record.empty:
            add_linked("problems", chosen)
    if req.consultations:
        encounters = [
            it for it in items["consultations"] if _in_period(it.when, req.consultation_period)
        ]
        if req.most_recent_consultations is not None:
            encounters = sorted(encounters, key=lambda it: it.when, reverse=True)[
                : req.most_recent_consultations
            ]
        primary("consultations", encounters)
        if not record.empty:
            add_linked("consultations", encounters)

    entries.extend({"resource": lst} for lst in lists)
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "meta": {"profile": [BUNDLE_PROFILE]},
        "type": "collection",
        "entry": entries,
    }


def _default_size(nhs: str, seed: int) -> int:
    return random.Random(f"size:{nhs}:{seed}").randint(90, 160)  # nosec B311 # noqa: S311


def build_record(patient: PanelPatient, *, size: int | None = None, seed: int = 0) -> _Record:
    """The full intermediate record (exposed so the GP Connect fake can cache it)."""
    if size is None:
        size = patient.record_size or _default_size(patient.nhs_number, seed)
    return _Builder(patient, max(size, 1), seed).build()


def bundle_from_record(
    record: _Record, request: RecordRequest | None = None, *, bundle_id: str = ""
) -> Json:
    """A GP Connect structured Bundle cut from `record` as `request` asks."""
    bid = bundle_id or f"{record.nhs_number}-{len(record.by_ref)}"
    return _assemble(record, request or RecordRequest(), bid)


def _tiny(record: _Record, size: int) -> Json:
    return {
        "resourceType": "Bundle",
        "id": f"{record.nhs_number}-tiny",
        "meta": {"profile": [BUNDLE_PROFILE]},
        "type": "collection",
        "entry": [{"resource": r} for r in record.core[:size]],
    }


def generate_bundle_for(
    patient: PanelPatient,
    *,
    size: int | None = None,
    seed: int = 0,
    request: RecordRequest | None = None,
) -> Json:
    """A structured-record Bundle for a panel (or ad hoc) patient.

    `size` is the approximate number of entries of the full record (1 to 10,000+); the default
    depends on the patient (panel `record_size`, else 90-160). Sizes 1-4 give exactly that many
    core resources (Patient first); below 24 only allergies, medication and problems are made.
    `request` cuts the record down like the Parameters of a `$gpc.getstructuredrecord` call
    (default: everything).
    """
    record = build_record(patient, size=size, seed=seed)
    if size is not None and size < 5:
        return _tiny(record, size)
    if request is None and size is not None and size < SMALL_RECORD:
        request = _SMALL_REQUEST
    return bundle_from_record(record, request)


def generate_bundle(nhs_number: str, *, size: int | None = None, seed: int = 0) -> Json:
    """A full structured-record Bundle for `nhs_number` (panel patient or made-up demographics).

    The panel's empty-record patient stays empty unless a `size` is asked for.
    """
    patient = get_patient(nhs_number)
    if patient is None:
        patient = _demographics(nhs_number, _Gen(f"demographics:{nhs_number}:{seed}"))
    elif patient.record == "empty" and size is not None:
        patient = replace(patient, record="normal")
    return generate_bundle_for(patient, size=size, seed=seed)
