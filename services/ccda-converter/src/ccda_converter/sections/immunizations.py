"""Immunizations Section (entries required) V3: 2.16.840.1.113883.10.20.22.2.2.1.

GP Connect Immunization (CareConnect-GPC-Immunization-1) -> Immunization Activity 4.52 with
negationInd from notGiven. The vaccine slot wants CVX (CONF:1098-9007): without a validated
SNOMED->CVX map, @nullFlavor="OTH" with the SNOMED vaccine product and the VaccinationProcedure
extension code as translations (ccda-requirements section 5). Every Immunization is converted,
also those the Immunisations List does not reference (seen in real data).

The Immunisations List also holds consent and dissent Observations (GP Connect includeStatus,
e.g. "No consent for any immunization"): they are coded under Results (uncategorised data) and
listed here in the narrative. They are not Immunization Activities, so a section with only them
keeps nullFlavor NI (CONF:1198-9019: nullFlavor, or at least one Immunization Activity and then
no nullFlavor) but no longer says that nothing is known.
"""

from __future__ import annotations

import functools
from typing import Final

from ccda_converter import cda
from ccda_converter.bundle import Resource, as_list, ext_value, extension, notes, obj, text_of
from ccda_converter.codes import Concept, concept
from ccda_converter.context import Context
from ccda_converter.dates import display_date
from ccda_converter.lists import section_for_list
from ccda_converter.sections.base import Section, SectionSpec, Table
from ccda_converter.sections.common import INDICATION, comment
from ccda_converter.sections.observations import effective_text, value_text
from ccda_converter.template import E, Template

SPEC = SectionSpec(
    key="immunizations",
    root="2.16.840.1.113883.10.20.22.2.2.1",
    extension="2015-08-01",
    loinc="11369-6",
    loinc_display="History of Immunization Narrative",
    title="Immunizations",
    entries_required=True,
    prefix="imm",
)
HEADERS: Final = (
    "Vaccine",
    "Procedure",
    "Date",
    "Status",
    "Dose",
    "Route / site",
    "Batch",
    "Reason",
    "Notes",
)
OTHER_HEADERS: Final = ("Item", "Date", "Value", "Notes")
# Date elements of the resource types a List may hold, in order of preference.
DATE_KEYS: Final = ("date", "assertedDate", "onsetDateTime", "authoredOn", "issued")


def build(ctx: Context) -> cda.Element:
    section = Section(ctx, SPEC)
    section.notices()
    table = section.table("", HEADERS)
    for res in ctx.idx.of_type("Immunization"):
        try:
            _immunization(ctx, section, table, res)
        except Exception as exc:  # noqa: BLE001 - one odd entry must never drop the others
            ctx.warn(f"{res.key}: immunization not converted ({type(exc).__name__})")
            table.row([f"Immunization record that could not be converted: {res.key}"])
            ctx.narrative(res)
    _list_items(ctx, section)
    return section.finish("No information about immunizations is available.")


def _list_items(ctx: Context, section: Section) -> None:
    """Every item of the Immunisations List(s) that is not an Immunization (consent and dissent
    Observations), as narrative rows: its text, date, value and comment."""
    table = section.table("Other items in the Immunisations list", OTHER_HEADERS)
    seen: set[int] = set()
    for lst in ctx.idx.of_type("List"):
        if section_for_list(lst) != SPEC.key:
            continue
        for entry in as_list(lst.data.get("entry")):
            item = ctx.idx.resolve(entry.get("item") if isinstance(entry, dict) else None, lst)
            if item is None or item.rtype == "Immunization" or id(item) in seen:
                continue
            seen.add(id(item))
            try:
                _list_item(ctx, table, item)
            except Exception as exc:  # noqa: BLE001 - one odd item must never drop the others
                ctx.warn(f"{item.key}: immunisations list item not shown ({type(exc).__name__})")
                table.row([f"Immunisations list item that could not be shown: {item.key}"])


def _list_item(ctx: Context, table: Table, item: Resource) -> None:
    data = item.data
    label = concept(data.get("code")).text or text_of(data.get("title")) or item.rtype
    if item.rtype == "Observation":
        date = effective_text(data)
        value = value_text(data)
    else:
        date = display_date(next((data[k] for k in DATE_KEYS if data.get(k)), None))
        value = ""
    comments = [c for c in (text_of(data.get("comment")), *notes(data)) if c]
    table.row([label, date, value, comments])
    ctx.narrative(item)


def _immunization(ctx: Context, section: Section, table: Table, res: Resource) -> None:
    data = res.data
    vaccine = concept(data.get("vaccineCode"))
    procedure = concept(ext_value(extension(data, "Extension-CareConnect-VaccinationProcedure-1")))
    not_given = data.get("notGiven") is True
    explanation = obj(data.get("explanation"))
    reasons = [concept(r) for r in as_list(explanation.get("reason"))]
    not_given_reasons = [concept(r) for r in as_list(explanation.get("reasonNotGiven"))]
    protocols = [p for p in as_list(data.get("vaccinationProtocol")) if isinstance(p, dict)]
    dose_seq = next(
        (p.get("doseSequence") for p in protocols if isinstance(p.get("doseSequence"), int)), None
    )
    series = next(
        (p.get("seriesDoses") for p in protocols if isinstance(p.get("seriesDoses"), int)), None
    )
    dose_text = cda.quantity_text(data.get("doseQuantity"))
    if dose_seq is not None:
        dose_text = (
            (dose_text + "; " if dose_text else "")
            + f"dose {dose_seq}"
            + (f" of {series}" if series else "")
        )
    route = concept(data.get("route"))
    site = concept(data.get("site"))
    name = (
        vaccine.text
        if vaccine.codes or (vaccine.text and vaccine.text.lower() != "unknown")
        else ""
    )
    name = name or procedure.text or "Vaccine not recorded"
    note_texts = notes(data)
    row = table.row(
        [
            name,
            procedure.text,
            display_date(data.get("date")),
            ("Not given" if not_given else text_of(data.get("status")) or "completed"),
            dose_text,
            ", ".join(x for x in (route.text, site.text) if x),
            text_of(data.get("lotNumber")),
            [r.text for r in (*reasons, *not_given_reasons) if r.text],
            note_texts,
        ],
        (8,) if note_texts else (),
    )
    when = ctx.ts(data.get("date"))
    lot = text_of(data.get("lotNumber"))
    manufacturer = ctx.idx.resolve(data.get("manufacturer"), res)
    maker = text_of(manufacturer.data.get("name")) if manufacturer is not None else ""
    _entry, sbadm, consumable, material = section.stamp(
        _immunization_template(not_given, bool(when), dose_seq is not None, bool(lot), bool(maker)),
        {
            "id": ctx.entry_uid(res),
            "ref": "#" + row.id,
            "when": when,
            "repeat": str(dose_seq),
            "lot": lot,
            "maker": maker,
        },
    )
    if route.codes:
        consumable.addprevious(cda.cd(sbadm, "routeCode", route))
    if site.codes:
        consumable.addprevious(cda.cd(sbadm, "approachSiteCode", site))
    dose = data.get("doseQuantity")
    if isinstance(dose, dict) and cda.number(dose.get("value")) is not None:
        consumable.addprevious(cda.pq(sbadm, "doseQuantity", dose, xsi_type=None))
    # With notGiven the VaccinationProcedure is the situation "vaccination not done" (GP Connect
    # Immunization guidance, extension[vaccinationProcedure]): as a translation of the vaccine in
    # a negated act it would state the negation twice. The vaccine then stays vaccineCode only.
    merged = (
        vaccine
        if not_given
        else Concept(
            [*vaccine.codes, *procedure.codes],
            [*vaccine.unknown, *procedure.unknown],
            vaccine.text,
            None,
        )
    )
    cda.cd(
        material,
        "code",
        merged,
        ref=row.name_id,
        force_null="OTH",
        before=material[0] if lot else None,
    )
    practitioners = [p for p in as_list(data.get("practitioner")) if isinstance(p, dict)]
    if practitioners:
        ctx.author(sbadm, practitioners[0].get("actor"), when, res)
    for j, reason in enumerate(reasons):
        _rel, obs = INDICATION.stamp(sbadm, {"id": ctx.entry_uid(res, f"#indication{j}")})
        cda.cd(obs, "value", reason, xsi_type="CD")
    for j, reason in enumerate(not_given_reasons):
        _rel, obs, status = _REFUSAL.stamp(sbadm, {"id": ctx.entry_uid(res, f"#refusal{j}")})
        cda.cd(obs, "code", reason, before=status)
    if note_texts:
        comment(sbadm, ctx, row, 8)
    ctx.mapped(res)


@functools.cache
def _immunization_template(
    not_given: bool, timed: bool, repeat: bool, lot: bool, maker: bool
) -> Template:
    """Immunization Activity (4.52) with its Immunization Medication Information (4.54); route,
    site and dose go before <consumable>, the vaccine code before lotNumberText."""
    material = E.manufacturedMaterial({"tpl-as": "material"})
    if lot:
        material.append(E.lotNumberText("$lot"))
    product = E.manufacturedProduct(
        {"classCode": "MANU"},
        *cda.p_templates("2.16.840.1.113883.10.20.22.4.54", "2014-06-09"),
        material,
    )
    if maker:
        product.append(E.manufacturerOrganization(E.name("$maker")))
    return Template(
        E.entry(
            {"typeCode": "DRIV"},
            E.substanceAdministration(
                {
                    "classCode": "SBADM",
                    "moodCode": "EVN",
                    "negationInd": "true" if not_given else "false",
                    "tpl-as": "sbadm",
                },
                *cda.p_templates("2.16.840.1.113883.10.20.22.4.52", "2015-08-01"),
                E.id(root="$id"),
                cda.p_text_ref(),
                E.statusCode(code="completed"),
                cda.p_ts("effectiveTime", timed),
                *([E.repeatNumber(value="$repeat")] if repeat else []),
                E.consumable({"tpl-as": "consumable"}, product),
            ),
        ),
        handles=("sbadm", "consumable", "material"),
    )


# Immunization Refusal Reason (4.53); its code goes before <statusCode>.
_REFUSAL: Final = Template(
    E.entryRelationship(
        {"typeCode": "RSON"},
        E.observation(
            {"classCode": "OBS", "moodCode": "EVN", "tpl-as": "obs"},
            cda.p_template("2.16.840.1.113883.10.20.22.4.53"),
            E.id(root="$id"),
            E.statusCode({"code": "completed", "tpl-as": "status"}),
        ),
    ),
    handles=("obs", "status"),
)
