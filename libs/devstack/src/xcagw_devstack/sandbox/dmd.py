"""The dm+d concepts the synthetic generator prescribes and the terminology fake answers for.

dm+d ids are SNOMED CT UK Drug Extension concept ids. VTM, VMP, ingredient, unit and route ids
are public concept ids to the best of our knowledge; the AMP ids (`...1000001...`) and supplier
names are synthetic (valid SNOMED check digits, made-up item ids): never use this table as a
reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DMD_SYSTEM = "https://dmd.nhs.uk"
SNOMED_SYSTEM = "http://snomed.info/sct"

UNITS: dict[str, str] = {
    "258684004": "mg",
    "258685003": "microgram",
    "258773002": "ml",
    "3317411000001100": "dose",
    "428673006": "tablet",
    "428641000": "capsule",
}
ROUTES: dict[str, str] = {
    "26643006": "Oral",
    "18679011000001101": "Inhalation",
    "6064005": "Topical",
}


@dataclass(frozen=True)
class Ingredient:
    """A virtual product ingredient (VPI) with its strength."""

    code: str
    name: str
    strength: float
    strength_unit: str
    per: float | None = None
    per_unit: str | None = None


@dataclass(frozen=True)
class DmdConcept:
    """A VTM, VMP or AMP. `parent`: the VTM of a VMP, the VMP of an AMP."""

    code: str
    display: str
    concept_class: Literal["VTM", "VMP", "AMP"]
    parent: str | None = None
    ingredients: tuple[Ingredient, ...] = ()
    route: str | None = None
    form: str | None = None


@dataclass(frozen=True)
class Drug:
    """What the generator prescribes: a VMP (and an AMP of it) plus typical instructions."""

    vmp: str
    amp: str
    dosage: str
    quantity: int
    quantity_unit: str
    supply_days: int
    as_needed: bool = False


def _amp(item: str) -> str:
    """A synthetic AMP id in the dm+d namespace (1000001), partition 10, with its check digit."""
    return _with_verhoeff(f"{item}100000110")


_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
_INV = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


def sctid_is_valid(code: str) -> bool:
    """SNOMED CT identifier check digit (Verhoeff), as every SCTID carries."""
    if not code.isdigit() or not 6 <= len(code) <= 18:
        return False
    c = 0
    for i, ch in enumerate(reversed(code)):
        c = _D[c][_P[i % 8][int(ch)]]
    return c == 0


def _with_verhoeff(payload: str) -> str:
    c = 0
    for i, ch in enumerate(reversed(payload)):
        c = _D[c][_P[(i + 1) % 8][int(ch)]]
    return payload + str(_INV[c])


_ORAL = "26643006"
_MG = "258684004"
_MICROGRAM = "258685003"
_TABLET = "428673006"
_CAPSULE = "428641000"
_DOSE = "3317411000001100"

_VTMS = [
    DmdConcept("90332006", "Paracetamol", "VTM"),
    DmdConcept("27658006", "Amoxicillin", "VTM"),
    DmdConcept("108600003", "Atorvastatin", "VTM"),
    DmdConcept("108537001", "Amlodipine", "VTM"),
    DmdConcept("109081006", "Metformin", "VTM"),
    DmdConcept("25673006", "Omeprazole", "VTM"),
    DmdConcept("91143003", "Salbutamol", "VTM"),
    DmdConcept("38268001", "Ibuprofen", "VTM"),
    DmdConcept("7947003", "Aspirin", "VTM"),
]

_VMPS = [
    DmdConcept(
        "322236009",
        "Paracetamol 500mg tablets",
        "VMP",
        parent="90332006",
        ingredients=(Ingredient("387517004", "Paracetamol", 500, _MG),),
        route=_ORAL,
        form=_TABLET,
    ),
    DmdConcept(
        "323509004",
        "Amoxicillin 500mg capsules",
        "VMP",
        parent="27658006",
        ingredients=(Ingredient("372687004", "Amoxicillin", 500, _MG),),
        route=_ORAL,
        form=_CAPSULE,
    ),
    DmdConcept(
        "320000009",
        "Atorvastatin 20mg tablets",
        "VMP",
        parent="108600003",
        ingredients=(Ingredient("373444002", "Atorvastatin", 20, _MG),),
        route=_ORAL,
        form=_TABLET,
    ),
    DmdConcept(
        "319283006",
        "Amlodipine 5mg tablets",
        "VMP",
        parent="108537001",
        ingredients=(Ingredient("386864001", "Amlodipine", 5, _MG),),
        route=_ORAL,
        form=_TABLET,
    ),
    DmdConcept(
        "325278007",
        "Metformin 500mg tablets",
        "VMP",
        parent="109081006",
        ingredients=(Ingredient("372567009", "Metformin", 500, _MG),),
        route=_ORAL,
        form=_TABLET,
    ),
    DmdConcept(
        "317335000",
        "Omeprazole 20mg gastro-resistant capsules",
        "VMP",
        parent="25673006",
        ingredients=(Ingredient("387137007", "Omeprazole", 20, _MG),),
        route=_ORAL,
        form=_CAPSULE,
    ),
    DmdConcept(
        "320176004",
        "Salbutamol 100micrograms/dose inhaler CFC free",
        "VMP",
        parent="91143003",
        ingredients=(Ingredient("372897005", "Salbutamol", 100, _MICROGRAM, 1, _DOSE),),
        route="18679011000001101",
        form=_DOSE,
    ),
    DmdConcept(
        "329652003",
        "Ibuprofen 400mg tablets",
        "VMP",
        parent="38268001",
        ingredients=(Ingredient("387207008", "Ibuprofen", 400, _MG),),
        route=_ORAL,
        form=_TABLET,
    ),
    DmdConcept(
        "319770009",
        "Aspirin 75mg dispersible tablets",
        "VMP",
        parent="7947003",
        ingredients=(Ingredient("387458008", "Aspirin", 75, _MG),),
        route=_ORAL,
        form=_TABLET,
    ),
]

_SUPPLIERS = ("Accord Healthcare Ltd", "Teva UK Ltd", "Zentiva Pharma UK Ltd")

_AMPS = [
    DmdConcept(
        _amp(f"99{i:03d}"),
        f"{vmp.display} ({_SUPPLIERS[i % len(_SUPPLIERS)]})",
        "AMP",
        parent=vmp.code,
        ingredients=vmp.ingredients,
        route=vmp.route,
        form=vmp.form,
    )
    for i, vmp in enumerate(_VMPS, start=1)
]

CONCEPTS: dict[str, DmdConcept] = {c.code: c for c in (*_VTMS, *_VMPS, *_AMPS)}

_AMP_BY_VMP = {a.parent: a.code for a in _AMPS if a.parent}

DRUGS: list[Drug] = [
    Drug(
        "322236009",
        _AMP_BY_VMP["322236009"],
        "Two tablets up to four times a day",
        100,
        "tablet",
        25,
        as_needed=True,
    ),
    Drug("323509004", _AMP_BY_VMP["323509004"], "One capsule three times a day", 21, "capsule", 7),
    Drug("320000009", _AMP_BY_VMP["320000009"], "One tablet at night", 28, "tablet", 28),
    Drug("319283006", _AMP_BY_VMP["319283006"], "One tablet once a day", 28, "tablet", 28),
    Drug(
        "325278007", _AMP_BY_VMP["325278007"], "One tablet twice a day with food", 56, "tablet", 28
    ),
    Drug(
        "317335000",
        _AMP_BY_VMP["317335000"],
        "One capsule once a day before breakfast",
        28,
        "capsule",
        28,
    ),
    Drug(
        "320176004",
        _AMP_BY_VMP["320176004"],
        "Two puffs when required",
        200,
        "dose",
        30,
        as_needed=True,
    ),
    Drug(
        "329652003",
        _AMP_BY_VMP["329652003"],
        "One tablet three times a day with food",
        84,
        "tablet",
        28,
    ),
    Drug("319770009", _AMP_BY_VMP["319770009"], "One tablet once a day", 28, "tablet", 28),
]


def lookup(code: str) -> DmdConcept | None:
    """The dm+d concept with this id (VTM, VMP or AMP)."""
    return CONCEPTS.get(code)
