"""Where each Observation goes: lab report tree, vital signs, social history, notes or results.

GP Connect puts investigations in DiagnosticReport -> (test group Observation -> has-member)* ->
result Observations, and everything else in "uncategorised data". C-CDA wants vital signs
(LOINC-coded, UCUM units) and smoking status in their own sections (ccda-requirements 5, 6.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from ccda_converter.bundle import Resource, as_list, text_of
from ccda_converter.cda import number, ucum
from ccda_converter.codes import LOINC, SNOMED, concept
from ccda_converter.context import Context

SYSTOLIC: Final = ("8480-6", "Systolic blood pressure")
DIASTOLIC: Final = ("8462-4", "Diastolic blood pressure")
BP_PANEL: Final = ("85354-9", "Blood pressure panel with all children optional")
# Curated SNOMED CT -> LOINC vital sign map (ccda-requirements 5: LOINC in @code, SNOMED kept).
VITAL_SNOMED: Final[dict[str, tuple[str, str]]] = {
    "271649006": SYSTOLIC,
    "72313002": SYSTOLIC,
    "163030003": SYSTOLIC,
    "400974009": SYSTOLIC,
    "407554009": SYSTOLIC,
    "271650006": DIASTOLIC,
    "1091811000000102": DIASTOLIC,
    "163031004": DIASTOLIC,
    "400975005": DIASTOLIC,
    "407555005": DIASTOLIC,
    "364075005": ("8867-4", "Heart rate"),
    "78564009": ("8867-4", "Heart rate"),
    "86290005": ("9279-1", "Respiratory rate"),
    "271625008": ("9279-1", "Respiratory rate"),
    "703421000": ("8310-5", "Body temperature"),
    "386725007": ("8310-5", "Body temperature"),
    "276885007": ("8310-5", "Body temperature"),
    "1097811000000106": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
    "431314004": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
    "103228002": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
    "50373000": ("8302-2", "Body height"),
    "248333004": ("8302-2", "Body height"),
    "1153637007": ("8302-2", "Body height"),
    "27113001": ("29463-7", "Body weight"),
    "363808001": ("29463-7", "Body weight"),
    "425024002": ("29463-7", "Body weight"),
    "60621009": ("39156-5", "Body mass index (BMI) [Ratio]"),
    "363812007": ("9843-4", "Head Occipital-frontal circumference"),
}
VITAL_LOINC: Final = frozenset(v[0] for v in VITAL_SNOMED.values())
BP_CODES: Final = frozenset(
    {"75367002", "163020007", "251076008", "413153004", "392570002", "85354-9", "55284-4"}
)
SMOKING: Final = frozenset(
    {
        "77176002", "8517006", "266919005", "221000119102", "160603005", "160604004", "160605003",
        "230059006", "449868002", "428041000124106", "266927001", "56578002", "56771006",
        "65568007", "59978006", "230065006", "82302008", "160617001", "266921007", "266922000",
        "266923005", "405746006", "8392000", "160618006", "160616005", "160619003", "230063004",
        "230064005", "394873005", "394872000", "394871007", "711028002", "160606002",
        "308438006", "203191000000107", "228494002", "228499007", "836001000000109",
    }
)  # fmt: skip
ALCOHOL: Final = frozenset(
    {
        "1082641000000106", "160573003", "228273003", "219006", "105542008", "266917007",
        "160575005", "160576006", "160577002", "160578007", "160579004", "86933000",
        "897148007", "228276006", "783261004", "228274009", "228277002", "228279004",
    }
)  # fmt: skip
NOTE_CODES: Final = frozenset({"37331000000100", "163191000000100", "281296001", "371530004"})
VALUE_KEYS: Final = (
    "valueQuantity", "valueCodeableConcept", "valueString", "valueBoolean", "valueInteger",
    "valueRange", "valueRatio", "valueSampledData", "valueTime", "valueDateTime", "valuePeriod",
    "valueAttachment",
)  # fmt: skip


_VALUE_KEY_SET: Final = frozenset(VALUE_KEYS)


def value_key(data: dict[str, Any]) -> str | None:
    """The value[x] element present (first in VALUE_KEYS order), or None."""
    present = _VALUE_KEY_SET.intersection(data)
    if not present:
        return None
    if len(present) == 1:
        key = next(iter(present))
        return key if data[key] is not None else None
    for key in VALUE_KEYS:
        if data.get(key) is not None:
            return key
    return None


@dataclass
class ObservationPlan:
    reports: list[tuple[Resource, list[tuple[Resource, int]]]] = field(default_factory=list)
    vitals: list[Resource] = field(default_factory=list)
    smoking: list[Resource] = field(default_factory=list)
    social: list[Resource] = field(default_factory=list)
    notes: list[Resource] = field(default_factory=list)
    results: list[Resource] = field(default_factory=list)


def members(
    ctx: Context, obs: Resource, depth: int, seen: set[int], out: list[tuple[Resource, int]]
) -> None:
    """Depth-first has-member walk (cycle-safe: real test groups list themselves)."""
    for rel in as_list(obs.data.get("related")):
        if not isinstance(rel, dict):
            continue
        rtype = text_of(rel.get("type"))
        if rtype and rtype != "has-member":
            continue
        target = ctx.idx.resolve(rel.get("target"), obs)
        if target is None or target.rtype != "Observation" or id(target) in seen:
            continue
        seen.add(id(target))
        out.append((target, depth))
        members(ctx, target, depth + 1, seen, out)


def plan(ctx: Context) -> ObservationPlan:
    out = ObservationPlan()
    in_report: set[int] = set()
    for report in ctx.idx.of_type("DiagnosticReport"):
        # Each report gets its whole result tree: a result that two reports list (real GP
        # Connect data does) is repeated under both, with the same entry id (the same act),
        # rather than leaving the later report empty.
        items: list[tuple[Resource, int]] = []
        seen: set[int] = set()
        for ref in as_list(report.data.get("result")):
            obs = ctx.idx.resolve(ref, report)
            if obs is None or obs.rtype != "Observation" or id(obs) in seen:
                continue
            seen.add(id(obs))
            items.append((obs, 0))
            members(ctx, obs, 1, seen, items)
        in_report |= seen
        out.reports.append((report, items))
    for obs in ctx.idx.of_type("Observation"):
        if id(obs) in in_report:
            continue
        kind = classify(obs.data)
        getattr(out, kind).append(obs)
    return out


def _codes(data: dict[str, Any]) -> list[tuple[str, str]]:
    c = concept(data.get("code"))
    return [(x.oid, x.code) for x in c.codes]


def vital_code(data: dict[str, Any]) -> tuple[str, str] | None:
    return _vital_of(_codes(data))


def _vital_of(codes: list[tuple[str, str]]) -> tuple[str, str] | None:
    for oid, code in codes:
        if oid == SNOMED and code in VITAL_SNOMED:
            return VITAL_SNOMED[code]
        if oid == LOINC and code in VITAL_LOINC:
            return _VITAL_BY_LOINC[code]
    return None


# The first VITAL_SNOMED entry for each LOINC code (dicts keep insertion order).
_VITAL_BY_LOINC: Final = {v[0]: v for v in reversed(VITAL_SNOMED.values())}


def _quantity_ok(q: Any) -> bool:
    return isinstance(q, dict) and number(q.get("value")) is not None and ucum(q) is not None


def bp_components(data: dict[str, Any]) -> list[tuple[dict[str, Any], tuple[str, str]]]:
    out = []
    for comp in as_list(data.get("component")):
        if isinstance(comp, dict):
            code = vital_code(comp)
            if code in (SYSTOLIC, DIASTOLIC) and _quantity_ok(comp.get("valueQuantity")):
                out.append((comp, code))
    return out


def classify(data: dict[str, Any]) -> str:
    pairs = _codes(data)
    codes = {code for _oid, code in pairs}
    if codes & BP_CODES or data.get("component"):
        if bp_components(data):
            return "vitals"
    vital = _vital_of(pairs)
    if vital is not None and _quantity_ok(data.get("valueQuantity")):
        return "vitals"
    if codes & SMOKING:
        return "smoking"
    if "72166-2" in codes and isinstance(data.get("valueCodeableConcept"), dict):
        return "smoking"
    if codes & ALCOHOL:
        return "social"
    has_value = value_key(data) is not None or bool(data.get("component"))
    comment = text_of(data.get("comment"))
    if not has_value and comment and (codes & NOTE_CODES or not codes):
        return "notes"
    return "results"
