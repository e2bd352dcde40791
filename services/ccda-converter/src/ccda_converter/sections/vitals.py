"""Vital Signs Section (entries required) V3: 2.16.840.1.113883.10.20.22.2.4.1.

Vital sign Observations (curated SNOMED -> LOINC map in classify.py; SNOMED kept as translation),
grouped by time into Vital Signs Organizers 4.26 of Vital Sign Observations 4.27 with UCUM PQ
values. A blood pressure with systolic/diastolic components gives two observations.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from ccda_converter import cda
from ccda_converter.bundle import Resource, text_of
from ccda_converter.classify import bp_components, vital_code
from ccda_converter.codes import LOINC, SNOMED, concept
from ccda_converter.context import Context
from ccda_converter.dates import sort_key
from ccda_converter.sections.base import Section, SectionSpec
from ccda_converter.sections.common import comment
from ccda_converter.sections.observations import (
    effective,
    effective_text,
    interpretation,
    performer_ref,
)
from ccda_converter.template import E, Template

SPEC = SectionSpec(
    key="vitals",
    root="2.16.840.1.113883.10.20.22.2.4.1",
    extension="2015-08-01",
    loinc="8716-3",
    loinc_display="Vital signs",
    title="Vital signs",
    entries_required=True,
    prefix="vit",
)
HEADERS: Final = ("Date", "Measurement", "Value", "Comments")


def build(ctx: Context, vitals: list[Resource]) -> cda.Element:
    section = Section(ctx, SPEC)
    section.notices()
    table = section.table("", HEADERS)
    groups: dict[str, list[Resource]] = {}
    for obs in vitals:
        groups.setdefault(effective(ctx, obs.data) or "", []).append(obs)
    for when in sorted(groups, key=lambda w: sort_key(w) if w else "9"):
        observations = groups[when]
        _entry, org = section.stamp(
            _organizer_template(bool(when)),
            {"id": ctx.uid(f"vitals#{when}#{observations[0].key}"), "when": when},
        )
        for obs in observations:
            try:
                _vital(ctx, org, table, obs, when)
            except Exception as exc:  # noqa: BLE001 - one odd entry must never drop the others
                ctx.warn(f"{obs.key}: vital sign not converted ({type(exc).__name__})")
                ctx.narrative(obs)
                table.row(["", concept(obs.data.get("code")).text or obs.key, "", ""])
    return section.finish("No information about vital signs is available.")


def _vital(ctx: Context, org: cda.Element, table: Any, res: Resource, when: str) -> None:
    data = res.data
    comps = bp_components(data)
    name = ctx.concept(data.get("code")).text or "Vital sign"
    if comps:
        sys_dia = {c[1][0]: c[0] for c in comps}
        parts = []
        for loinc in ("8480-6", "8462-4"):
            comp = sys_dia.get(loinc)
            if comp is not None:
                q = comp["valueQuantity"]
                parts.append(str(q.get("value")))
        unit = cda.unit_label(comps[0][0]["valueQuantity"])
        value_text = "/".join(parts) + (f" {unit}" if unit else "")
    else:
        value_text = cda.quantity_text(data.get("valueQuantity"))
    note = text_of(data.get("comment"))
    # The comment goes on the one observation of a non blood pressure vital sign.
    row = table.row(
        [effective_text(data), name, value_text, note], (3,) if note and not comps else ()
    )
    items: list[tuple[dict[str, Any], tuple[str, str], str]]
    if comps:
        items = [(c, code, f"#{code[0]}") for c, code in comps]
    else:
        found = vital_code(data)
        if found is None:
            raise ValueError("not a vital sign")
        items = [(data, found, "")]
    for part, vital, suffix in items:
        values: dict[str, str | None] = {
            "id": ctx.entry_uid(res, suffix),
            "code": vital[0],
            "name": vital[1],
            "name_ref": "#" + row.name_id,
            "ref": "#" + row.id,
            "when": when,
        }
        translations = [c for c in ctx.concept(part.get("code")).codes if c.code != vital[0]]
        if translations:
            # The first other coding (the GP's SNOMED code) is a slot of the template.
            first = translations[0]
            values["tr_code"] = first.code
            values["tr_system"] = first.oid
            values["tr_name"] = first.system_name
            values["tr_display"] = first.display or None
        quantity = part["valueQuantity"]
        simple = False
        if cda.number(quantity.get("value")) is not None:
            pq_value, pq_unit, translation = cda.pq_parts(quantity)
            if not translation:
                simple = True
                values["value"] = pq_value
                values["unit"] = pq_unit
        _comp, obs, code = _vital_template(bool(when), bool(translations), simple).stamp(
            org, values
        )
        for c in translations[1:]:
            cda.code(code, c.code, c.oid, c.display or None, c.system_name, local="translation")
        if not simple:
            cda.pq(obs, "value", quantity)
        interpretation(obs, part)
        ctx.author(obs, performer_ref(data), when or None, res)
        if note and not suffix:
            comment(obs, ctx, row, 3)
    ctx.mapped(res)


@functools.cache
def _organizer_template(timed: bool) -> Template:
    """Vital Signs Organizer (4.26); CONF:1198-32743: the LOINC vital signs panel as
    translation."""
    code = cda.p_code("46680005", SNOMED, "Vital signs", "SNOMED CT")
    code.append(
        cda.p_code(
            "74728-7",
            LOINC,
            "Vital signs, weight, height, head circumference, oximetry, BMI, and BSA panel",
            "LOINC",
            local="translation",
        )
    )
    return Template(
        E.entry(
            {"typeCode": "DRIV"},
            E.organizer(
                {"classCode": "CLUSTER", "moodCode": "EVN", "tpl-as": "org"},
                *cda.p_templates("2.16.840.1.113883.10.20.22.4.26", "2015-08-01"),
                E.id(root="$id"),
                code,
                E.statusCode(code="completed"),
                cda.p_ivl(True, True, low_slot="when", high_slot="when")
                if timed
                else E.effectiveTime(nullFlavor="UNK"),
            ),
        ),
        handles=("org",),
    )


@functools.cache
def _vital_template(timed: bool, translation: bool, value: bool) -> Template:
    """Vital Sign Observation (4.27): LOINC code (originalText -> the narrative row; the first
    other coding as a translation slot, further ones are appended), then the value (a PQ from
    slots, or appended by the caller), interpretation and author."""
    code = E.code(
        {
            "code": "$code",
            "codeSystem": LOINC,
            "codeSystemName": "LOINC",
            "displayName": "$name",
            "tpl-as": "code",
        },
        E.originalText(E.reference(value="$name_ref")),
    )
    if translation:
        code.append(
            E.translation(
                code="$tr_code",
                codeSystem="$tr_system",
                codeSystemName="$tr_name",
                displayName="$tr_display",
            )
        )
    return Template(
        E.component(
            E.observation(
                {"classCode": "OBS", "moodCode": "EVN", "tpl-as": "obs"},
                *cda.p_templates("2.16.840.1.113883.10.20.22.4.27", "2014-06-09"),
                E.id(root="$id"),
                code,
                cda.p_text_ref(),
                E.statusCode(code="completed"),
                cda.p_ts("effectiveTime", timed),
                *(
                    [E.value({cda.XSI_TYPE_ATTR: "PQ", "value": "$value", "unit": "$unit"})]
                    if value
                    else []
                ),
            )
        ),
        handles=("obs", "code"),
    )
