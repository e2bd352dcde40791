"""Social History Section V3: 2.16.840.1.113883.10.20.22.2.17 (entries optional).

Smoking status findings -> Smoking Status - Meaningful Use 4.78 (code LOINC 72166-2, value the
SNOMED finding, a point in time); alcohol -> Social History Observation 4.38 (LOINC 11331-6 with
the SNOMED code as translation, CONF:1198-32951).
"""

from __future__ import annotations

import functools
from typing import Final

from ccda_converter import cda
from ccda_converter.bundle import Resource, text_of
from ccda_converter.classify import SMOKING, value_key
from ccda_converter.codes import LOINC, SNOMED, concept
from ccda_converter.context import Context
from ccda_converter.sections.base import Section, SectionSpec, Table
from ccda_converter.sections.common import comment
from ccda_converter.sections.observations import (
    add_value,
    effective,
    effective_text,
    performer_ref,
    value_text,
)
from ccda_converter.template import E, Template

SPEC = SectionSpec(
    key="social",
    root="2.16.840.1.113883.10.20.22.2.17",
    extension="2015-08-01",
    loinc="29762-2",
    loinc_display="Social history Narrative",
    title="Social history",
    entries_required=False,
    prefix="soc",
)
HEADERS: Final = ("Item", "Value", "Date", "Comments")


def build(ctx: Context, smoking: list[Resource], social: list[Resource]) -> cda.Element:
    section = Section(ctx, SPEC)
    section.notices()
    table = section.table("", HEADERS)
    for res in smoking:
        try:
            _smoking(ctx, section, table, res)
        except Exception as exc:  # noqa: BLE001
            ctx.warn(f"{res.key}: smoking status not converted ({type(exc).__name__})")
            ctx.narrative(res)
    for res in social:
        try:
            _social(ctx, section, table, res)
        except Exception as exc:  # noqa: BLE001
            ctx.warn(f"{res.key}: social history item not converted ({type(exc).__name__})")
            ctx.narrative(res)
    if section.entries == 0:
        section.paragraph("No smoking status or other social history is recorded.")
    return section.finish("No social history is recorded.")


def _smoking(ctx: Context, section: Section, table: Table, res: Resource) -> None:
    data = res.data
    code = concept(data.get("code"))
    value = (
        concept(data.get("valueCodeableConcept"))
        if value_key(data) == "valueCodeableConcept"
        else None
    )
    finding = next((c for c in code.codes if c.oid == SNOMED and c.code in SMOKING), None)
    if finding is None and value is not None:
        finding = next((c for c in value.codes if c.oid == SNOMED), None)
    if finding is None:
        _social(ctx, section, table, res)
        return
    label = (value.text if value is not None else "") or code.text
    comment_text = text_of(data.get("comment"))
    row = table.row(
        ["Smoking status", label, effective_text(data), comment_text],
        (1, 3) if comment_text else (1,),
    )
    when = effective(ctx, data)
    _entry, obs = section.stamp(
        _smoking_template(bool(when), bool(finding.display)),
        {
            "id": ctx.entry_uid(res),
            "ref": "#" + row.id,
            "when": when,
            "code": finding.code,
            "name": finding.display,
            "value_ref": "#" + row.cell_id(1),
        },
    )
    ctx.author(obs, performer_ref(data), effective(ctx, data), res)
    if text_of(data.get("comment")):
        comment(obs, ctx, row, 3)
    ctx.mapped(res)


def _social(ctx: Context, section: Section, table: Table, res: Resource) -> None:
    data = res.data
    code = concept(data.get("code"))
    row = table.row(
        [
            code.text or "Social history item",
            value_text(data),
            effective_text(data),
            text_of(data.get("comment")),
        ]
    )
    when = effective(ctx, data)
    _entry, obs, el = section.stamp(
        _social_template(bool(when)),
        {
            "id": ctx.entry_uid(res),
            "name_ref": "#" + row.name_id,
            "ref": "#" + row.id,
            "when": when,
        },
    )
    for c in code.codes:
        cda.code(el, c.code, c.oid, c.display or None, c.system_name, local="translation")
    add_value(
        ctx,
        obs,
        data,
        row_name=row.name_id,
        assertion_code=code if value_key(data) is None and code.codes else None,
    )
    ctx.author(obs, performer_ref(data), effective(ctx, data), res)
    if text_of(data.get("comment")):
        comment(obs, ctx, row, 3)
    ctx.mapped(res)


@functools.cache
def _smoking_template(timed: bool, named: bool) -> Template:
    """Smoking Status - Meaningful Use (4.78): LOINC 72166-2, the SNOMED finding as value."""
    value = cda.p_code(
        "$code", SNOMED, "$name" if named else None, "SNOMED CT", local="value", xsi_type="CD"
    )
    value.append(E.originalText(E.reference(value="$value_ref")))
    return Template(
        E.entry(
            {"typeCode": "DRIV"},
            E.observation(
                {"classCode": "OBS", "moodCode": "EVN", "tpl-as": "obs"},
                *cda.p_templates("2.16.840.1.113883.10.20.22.4.78", "2014-06-09"),
                E.id(root="$id"),
                cda.p_code("72166-2", LOINC, "Tobacco smoking status", "LOINC"),
                cda.p_text_ref(),
                E.statusCode(code="completed"),
                cda.p_ts("effectiveTime", timed),
                value,
            ),
        ),
        handles=("obs",),
    )


@functools.cache
def _social_template(timed: bool) -> Template:
    """Social History Observation (4.38): LOINC 11331-6 with the SNOMED codes as translations
    (appended to the code, CONF:1198-32951)."""
    return Template(
        E.entry(
            {"typeCode": "DRIV"},
            E.observation(
                {"classCode": "OBS", "moodCode": "EVN", "tpl-as": "obs"},
                *cda.p_templates("2.16.840.1.113883.10.20.22.4.38", "2015-08-01"),
                E.id(root="$id"),
                E.code(
                    {
                        "code": "11331-6",
                        "codeSystem": LOINC,
                        "codeSystemName": "LOINC",
                        "displayName": "History of Alcohol use",
                        "tpl-as": "code",
                    },
                    E.originalText(E.reference(value="$name_ref")),
                ),
                cda.p_text_ref(),
                E.statusCode(code="completed"),
                cda.p_ts("effectiveTime", timed),
            ),
        ),
        handles=("obs", "code"),
    )
