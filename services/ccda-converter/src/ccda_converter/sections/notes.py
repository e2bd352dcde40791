"""Notes Section: 2.16.840.1.113883.10.20.22.2.65 (C-CDA R2.1 Companion Guide, 2016-11-01).

Free-text GP entries (consultation "Comment note" observations and other value-less text) become
Note Activities 4.202; DocumentReferences become notes pointing at the practice's document.
Anything the other sections cannot carry (unknown resource types, unreadable entries, GP
Connect OperationOutcome warnings inside the Bundle) is written here as narrative, so nothing in
the record is silently dropped.
"""

from __future__ import annotations

import functools
from typing import Final

from ccda_converter import cda
from ccda_converter.bundle import Resource, as_list, text_of
from ccda_converter.codes import LOINC, concept
from ccda_converter.context import Context
from ccda_converter.dates import display_date
from ccda_converter.model import CLINICAL_TYPES
from ccda_converter.sections.base import Section, SectionSpec, Table
from ccda_converter.sections.observations import effective, effective_text, performer_ref
from ccda_converter.template import E, Template

SPEC = SectionSpec(
    key="notes",
    root="2.16.840.1.113883.10.20.22.2.65",
    extension="2016-11-01",
    loinc="34109-9",
    loinc_display="Note",
    title="Notes and uncategorised data",
    entries_required=False,
    prefix="not",
    dual=False,
)
HEADERS: Final = ("Date", "Heading", "Note", "Author")
HANDLED: Final = frozenset(
    {
        "AllergyIntolerance", "Condition", "MedicationStatement", "MedicationRequest", "Medication",
        "Immunization", "Observation", "DiagnosticReport", "Specimen", "Encounter", "Procedure",
        "ProcedureRequest", "ReferralRequest", "DocumentReference", "Patient", "Organization",
        "Practitioner", "PractitionerRole", "Location", "List", "OperationOutcome",
    }
)  # fmt: skip
SUPPORTING: Final = frozenset({"Device", "HealthcareService", "Endpoint", "Group", "RelatedPerson"})


def build(ctx: Context, note_observations: list[Resource]) -> cda.Element:
    section = Section(ctx, SPEC)
    section.notices()
    for outcome in ctx.idx.of_type("OperationOutcome"):
        for issue in as_list(outcome.data.get("issue")):
            if isinstance(issue, dict):
                text = text_of(issue.get("diagnostics")) or concept(issue.get("details")).text
                severity = text_of(issue.get("severity")) or "information"
                if text:
                    section.paragraph(text, f"GP system message ({severity}):")
        ctx.mapped(outcome)
    for problem in ctx.idx.skipped_entries:
        section.paragraph(problem, "Unreadable entry in the GP record (not converted):")
    table = section.table("", HEADERS)
    for res in note_observations:
        try:
            _note(ctx, section, table, res)
        except Exception as exc:  # noqa: BLE001
            ctx.warn(f"{res.key}: note not converted ({type(exc).__name__})")
            ctx.narrative(res)
    for res in ctx.idx.of_type("DocumentReference"):
        try:
            _document(ctx, section, table, res)
        except Exception as exc:  # noqa: BLE001
            ctx.warn(f"{res.key}: document reference not converted ({type(exc).__name__})")
            ctx.narrative(res)
    other = section.table(
        "Other record items (not coded in this document)", ("Item", "Kind", "Date", "Details")
    )
    for res in ctx.idx.resources:
        if res.rtype in HANDLED:
            continue
        if res.rtype in SUPPORTING and res.rtype not in CLINICAL_TYPES:
            ctx.mapped(res)
            continue
        data = res.data
        label = concept(data.get("code")).text or text_of(data.get("title")) or res.rtype
        date = next(
            (
                data.get(k)
                for k in ("date", "effectiveDateTime", "authoredOn", "created", "issued")
                if data.get(k)
            ),
            None,
        )
        other.row(
            [
                label,
                res.rtype,
                display_date(date),
                text_of(data.get("description")) or text_of(data.get("status")),
            ]
        )
        ctx.narrative(res)
        ctx.warn(f"{res.key}: resource type {res.rtype} has no CCD mapping; shown as narrative")
    return section.finish("No notes are included in this record.")


def _note_act(
    ctx: Context,
    section: Section,
    res: Resource,
    when: str | None,
    text_id: str,
    code_res: Resource | None,
) -> cda.Element:
    _entry, act, code = section.stamp(
        _note_template(bool(when)), {"id": ctx.entry_uid(res), "ref": "#" + text_id, "when": when}
    )
    if code_res is not None:
        for c in concept(code_res.data.get("code") or code_res.data.get("type")).codes:
            cda.code(code, c.code, c.oid, c.display or None, c.system_name, local="translation")
    return act


@functools.cache
def _note_template(timed: bool) -> Template:
    """Note Activity (4.202); the GP codes are appended to its code as translations."""
    return Template(
        E.entry(
            {"typeCode": "DRIV"},
            E.act(
                {"classCode": "ACT", "moodCode": "EVN", "tpl-as": "act"},
                cda.p_template("2.16.840.1.113883.10.20.22.4.202", "2016-11-01"),
                E.id(root="$id"),
                E.code(
                    {
                        "code": "34109-9",
                        "codeSystem": LOINC,
                        "codeSystemName": "LOINC",
                        "displayName": "Note",
                        "tpl-as": "code",
                    }
                ),
                cda.p_text_ref(),
                E.statusCode(code="completed"),
                cda.p_ts("effectiveTime", timed),
            ),
        ),
        handles=("act", "code"),
    )


def _author_or_unknown(
    ctx: Context, act: cda.Element, ref: object, when: str | None, res: Resource
) -> None:
    before = len(act)
    ctx.author(act, ref, when, res)
    if len(act) == before:
        # Note Activity SHALL have an author; the GP system did not say who.
        author = cda.sub(act, "author")
        cda.template_only(author, "2.16.840.1.113883.10.20.22.4.119")
        cda.ts(author, "time", when)
        assigned = cda.sub(author, "assignedAuthor")
        cda.null_ii(assigned)


def _note(ctx: Context, section: Section, table: Table, res: Resource) -> None:
    data = res.data
    heading = concept(data.get("code")).text
    text = text_of(data.get("comment")) or text_of(data.get("valueString"))
    who = ctx.idx.resolve(performer_ref(data), res)
    author_name = ""
    if who is not None and who.rtype == "Practitioner":
        from ccda_converter.context import first_name, name_text

        author_name = name_text(first_name(who.data))
    if not text and not heading:
        table.row(
            [
                effective_text(data),
                "Observation",
                "Recorded without a code, value or text.",
                author_name,
            ]
        )
        ctx.narrative(res)
        return
    row = table.row([effective_text(data), heading or "Note", text or heading, author_name], (2,))
    when = effective(ctx, data)
    act = _note_act(ctx, section, res, when, row.cell_id(2), res)
    _author_or_unknown(ctx, act, performer_ref(data), when, res)
    ctx.mapped(res)


def _document(ctx: Context, section: Section, table: Table, res: Resource) -> None:
    data = res.data
    kind = concept(data.get("type")).text or "Document"
    description = text_of(data.get("description"))
    titles = []
    for content in as_list(data.get("content")):
        attachment = content.get("attachment") if isinstance(content, dict) else None
        if isinstance(attachment, dict):
            title = text_of(attachment.get("title"))
            if title:
                titles.append(title)
    text = "; ".join(x for x in (description, *titles) if x) or kind
    text += " (document held by the GP practice; available through GP Connect Access Document)"
    row = table.row(
        [display_date(data.get("created") or data.get("indexed")), kind, text, ""], (2,)
    )
    when = ctx.ts(data.get("created")) or ctx.ts(data.get("indexed"))
    act = _note_act(ctx, section, res, when, row.cell_id(2), res)
    authors = as_list(data.get("author"))
    _author_or_unknown(ctx, act, authors[0] if authors else None, when, res)
    ctx.mapped(res)
