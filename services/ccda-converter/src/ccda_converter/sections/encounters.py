"""Encounters Section (entries optional) V3: 2.16.840.1.113883.10.20.22.2.22.

GP Connect consultations: Encounter -> Encounter Activity 4.49; the consultation structure Lists
(Consultation -> Topic -> Category -> items) are summarised in the narrative row.
"""

from __future__ import annotations

import functools
from typing import Final

from ccda_converter import cda
from ccda_converter.bundle import Resource, as_list, obj, text_of
from ccda_converter.codes import concept
from ccda_converter.context import Context, first_name, name_text
from ccda_converter.dates import display_date
from ccda_converter.lists import list_code
from ccda_converter.sections.base import Section, SectionSpec, Table
from ccda_converter.template import E, Template

SPEC = SectionSpec(
    key="encounters",
    root="2.16.840.1.113883.10.20.22.2.22",
    extension="2015-08-01",
    loinc="46240-8",
    loinc_display="History of Hospitalizations+Outpatient visits Narrative",
    title="Encounters (consultations)",
    entries_required=False,
    prefix="enc",
)
HEADERS: Final = ("Consultation", "Date", "Clinician", "Location", "Content")


def build(ctx: Context) -> cda.Element:
    section = Section(ctx, SPEC)
    section.notices()
    table = section.table("", HEADERS)
    by_encounter: dict[int, Resource] = {}
    for lst in ctx.idx.of_type("List"):
        if list_code(lst) == "325851000000107":
            enc = ctx.idx.resolve(lst.data.get("encounter"), lst)
            if enc is not None:
                by_encounter[id(enc)] = lst
    for res in ctx.idx.of_type("Encounter"):
        try:
            _encounter(ctx, section, table, res, by_encounter.get(id(res)))
        except Exception as exc:  # noqa: BLE001 - one odd entry must never drop the others
            ctx.warn(f"{res.key}: encounter not converted ({type(exc).__name__})")
            table.row([f"Consultation that could not be converted: {res.key}"])
            ctx.narrative(res)
    if section.entries == 0:
        section.paragraph("No consultations are included in this record.")
    return section.finish("No consultations are included in this record.")


def _structure(
    ctx: Context, lst: Resource | None, depth: int = 0, seen: set[int] | None = None
) -> list[str]:
    if lst is None or depth > 4:
        return []
    seen = seen if seen is not None else set()
    lines = []
    for entry in as_list(lst.data.get("entry")):
        item = entry.get("item") if isinstance(entry, dict) else None
        target = ctx.idx.resolve(item, lst)
        if target is None or id(target) in seen:
            continue
        seen.add(id(target))
        indent = "\u00a0\u00a0" * depth
        if target.rtype == "List":
            title = text_of(target.data.get("title")) or concept(target.data.get("code")).text
            lines.append(f"{indent}{title}:")
            lines.extend(_structure(ctx, target, depth + 1, seen))
        else:
            data = target.data
            label = (
                concept(data.get("code")).text
                or concept(data.get("vaccineCode")).text
                or target.rtype
            )
            detail = text_of(data.get("comment"))
            lines.append(f"{indent}{label}" + (f": {detail}" if detail else ""))
    return lines


def _encounter(
    ctx: Context, section: Section, table: Table, res: Resource, structure: Resource | None
) -> None:
    data = res.data
    types = [concept(t) for t in as_list(data.get("type"))]
    enc_type = types[0] if types else concept(None)
    period = obj(data.get("period"))
    clinicians = []
    performer_ref = None
    for p in as_list(data.get("participant")):
        if isinstance(p, dict):
            who = ctx.idx.resolve(p.get("individual"), res)
            if who is not None and who.rtype == "Practitioner":
                clinicians.append(name_text(first_name(who.data)))
                performer_ref = performer_ref or p.get("individual")
    location = ""
    for loc in as_list(data.get("location")):
        target = ctx.idx.resolve(loc.get("location") if isinstance(loc, dict) else None, res)
        if target is not None:
            location = text_of(target.data.get("name"))
    row = table.row(
        [
            enc_type.text
            or (text_of(structure.data.get("title")) if structure else "")
            or "Consultation",
            display_date(period.get("start")),
            ", ".join(dict.fromkeys(c for c in clinicians if c)),
            location,
            _structure(ctx, structure),
        ]
    )
    start, end = ctx.ts(period.get("start")), ctx.ts(period.get("end"))
    _entry, enc, text = section.stamp(
        _encounter_template(bool(start), bool(end)),
        {"id": ctx.entry_uid(res), "ref": "#" + row.id, "low": start, "high": end},
    )
    cda.cd(enc, "code", enc_type, ref=row.name_id, before=text)
    ctx.author(enc, performer_ref, start, res)
    ctx.mapped(res)


@functools.cache
def _encounter_template(low: bool, high: bool) -> Template:
    """Encounter Activity (4.49); its code goes before <text>."""
    return Template(
        E.entry(
            {"typeCode": "DRIV"},
            E.encounter(
                {"classCode": "ENC", "moodCode": "EVN", "tpl-as": "enc"},
                *cda.p_templates("2.16.840.1.113883.10.20.22.4.49", "2015-08-01"),
                E.id(root="$id"),
                E.text({"tpl-as": "text"}, E.reference(value="$ref")),
                cda.p_ivl(low, high) if low or high else E.effectiveTime(nullFlavor="UNK"),
            ),
        ),
        handles=("enc", "text"),
    )
