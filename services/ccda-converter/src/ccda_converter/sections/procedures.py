"""Procedures Section (entries required) V2: 2.16.840.1.113883.10.20.22.2.7.1.

GP Connect 1.6 has no Procedure resource in Access Record Structured; procedures are recorded as
uncategorised Observations (they appear under Results). Any Procedure resource present is
converted to Procedure Activity Procedure 4.14.
"""

from __future__ import annotations

from typing import Final

from ccda_converter import cda
from ccda_converter.bundle import Resource, notes, text_of
from ccda_converter.codes import concept
from ccda_converter.context import Context
from ccda_converter.dates import display_date
from ccda_converter.sections.base import Section, SectionSpec, Table

SPEC = SectionSpec(
    key="procedures",
    root="2.16.840.1.113883.10.20.22.2.7.1",
    extension="2014-06-09",
    loinc="47519-4",
    loinc_display="History of Procedures Document",
    title="Procedures",
    entries_required=True,
    prefix="prc",
)
HEADERS: Final = ("Procedure", "Date", "Status", "Notes")
STATUS: Final = {
    "completed": "completed",
    "in-progress": "active",
    "aborted": "aborted",
    "entered-in-error": "nullified",
    "preparation": "new",
    "suspended": "suspended",
}


def build(ctx: Context) -> cda.Element:
    section = Section(ctx, SPEC)
    section.notices()
    table = section.table("", HEADERS)
    for res in ctx.idx.of_type("Procedure"):
        try:
            _procedure(ctx, section, table, res)
        except Exception as exc:  # noqa: BLE001
            ctx.warn(f"{res.key}: procedure not converted ({type(exc).__name__})")
            ctx.narrative(res)
    return section.finish(
        "No separately recorded procedures. GP systems record procedures as coded entries, "
        "which appear under Results (uncategorised data)."
    )


def _procedure(ctx: Context, section: Section, table: Table, res: Resource) -> None:
    data = res.data
    code = concept(data.get("code"))
    when = data.get("performedDateTime")
    if when is None and isinstance(data.get("performedPeriod"), dict):
        when = data["performedPeriod"].get("start")
    row = table.row(
        [code.text or "Procedure", display_date(when), text_of(data.get("status")), notes(data)]
    )
    entry = section.entry()
    proc = cda.fixed(entry, "procedure", {"classCode": "PROC", "moodCode": "EVN"})
    cda.templates(proc, "2.16.840.1.113883.10.20.22.4.14", "2014-06-09")
    ctx.entry_id(proc, res)
    cda.cd(proc, "code", code, ref=row.name_id)
    cda.text_ref(proc, row.id)
    cda.status(proc, STATUS.get(text_of(data.get("status")), "completed"))
    cda.ts(proc, "effectiveTime", ctx.ts(when))
    ctx.mapped(res)
