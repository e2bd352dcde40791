"""Plan of Treatment Section V2: 2.16.840.1.113883.10.20.22.2.10 (entries optional).

GP Connect ProcedureRequest (investigation requests, diary entries / recalls) -> Planned
Procedure 4.41; ReferralRequest (outbound referrals) -> Planned Act 4.39.
"""

from __future__ import annotations

import functools
from typing import Final

from ccda_converter import cda
from ccda_converter.bundle import Resource, as_list, notes, text_of
from ccda_converter.codes import SNOMED, Concept, concept
from ccda_converter.context import Context
from ccda_converter.dates import display_date
from ccda_converter.sections.base import Section, SectionSpec, Table
from ccda_converter.template import E, Template

SPEC = SectionSpec(
    key="plan",
    root="2.16.840.1.113883.10.20.22.2.10",
    extension="2014-06-09",
    loinc="18776-5",
    loinc_display="Plan of care note",
    title="Plan of treatment (requests, referrals and recalls)",
    entries_required=False,
    prefix="pln",
)
HEADERS: Final = ("Item", "Kind", "Date", "Status", "Details")
STATUS: Final = {
    "active": "active",
    "completed": "completed",
    "cancelled": "cancelled",
    "entered-in-error": "nullified",
    "suspended": "suspended",
    "draft": "new",
}


def build(ctx: Context) -> cda.Element:
    section = Section(ctx, SPEC)
    section.notices()
    table = section.table("", HEADERS)
    fulfilled: dict[int, list[str]] = {}
    for report in ctx.idx.of_type("DiagnosticReport"):
        for based in as_list(report.data.get("basedOn")):
            target = ctx.idx.resolve(based, report)
            if target is not None:
                label = concept(report.data.get("code")).text or report.key
                fulfilled.setdefault(id(target), []).append(label)
    for res in ctx.idx.of_type("ProcedureRequest"):
        try:
            _procedure_request(ctx, section, table, res, fulfilled.get(id(res), []))
        except Exception as exc:  # noqa: BLE001
            ctx.warn(f"{res.key}: request not converted ({type(exc).__name__})")
            ctx.narrative(res)
    for res in ctx.idx.of_type("ReferralRequest"):
        try:
            _referral(ctx, section, table, res)
        except Exception as exc:  # noqa: BLE001
            ctx.warn(f"{res.key}: referral not converted ({type(exc).__name__})")
            ctx.narrative(res)
    if section.entries == 0:
        section.paragraph("No requests, referrals or recalls are included in this record.")
    return section.finish("No requests, referrals or recalls are included in this record.")


def _procedure_request(
    ctx: Context, section: Section, table: Table, res: Resource, fulfilled: list[str]
) -> None:
    data = res.data
    code = concept(data.get("code"))
    intent = text_of(data.get("intent"))
    when = data.get("occurrenceDateTime") or data.get("authoredOn")
    if when is None and isinstance(data.get("occurrencePeriod"), dict):
        when = data["occurrencePeriod"].get("start")
    details = notes(data) + [f"Reported in: {f}" for f in fulfilled]
    kind = "Recall / diary entry" if intent == "plan" else "Investigation request"
    row = table.row(
        [code.text or "Request", kind, display_date(when), text_of(data.get("status")), details]
    )
    when_ts = ctx.ts(when)
    _entry, proc, text = section.stamp(
        _planned_procedure_template(intent == "plan", bool(when_ts)),
        {
            "id": ctx.entry_uid(res),
            "ref": "#" + row.id,
            "status": STATUS.get(text_of(data.get("status")), "active"),
            "when": when_ts,
        },
    )
    cda.cd(proc, "code", code, ref=row.name_id, before=text)
    requester = data.get("requester")
    ctx.author(
        proc,
        requester.get("agent") if isinstance(requester, dict) else None,
        ctx.ts(data.get("authoredOn")),
        res,
    )
    ctx.mapped(res)


def _referral(ctx: Context, section: Section, table: Table, res: Resource) -> None:
    data = res.data
    service = [concept(s) for s in as_list(data.get("serviceRequested"))]
    code = service[0] if service else concept(data.get("type"))
    if not code.codes and not code.text:
        code = Concept([], [], "Patient referral", None)
    reasons = [concept(r).text for r in as_list(data.get("reasonCode")) if concept(r).text]
    recipients = []
    for r in as_list(data.get("recipient")):
        target = ctx.idx.resolve(r, res)
        if target is not None:
            recipients.append(text_of(target.data.get("name")) or target.rtype)
        elif isinstance(r, dict) and text_of(r.get("display")):
            recipients.append(text_of(r.get("display")))
    details = [*(f"Reason: {r}" for r in reasons), *(f"To: {r}" for r in recipients)]
    if text_of(data.get("description")):
        details.append(text_of(data.get("description")))
    details += notes(data)
    priority = text_of(data.get("priority"))
    if priority:
        details.append(f"Priority: {priority}")
    row = table.row(
        [
            code.text or "Referral",
            "Referral",
            display_date(data.get("authoredOn")),
            text_of(data.get("status")),
            details,
        ]
    )
    authored = ctx.ts(data.get("authoredOn"))
    _entry, act, text = section.stamp(
        _planned_act_template(bool(authored)),
        {"id": ctx.entry_uid(res), "ref": "#" + row.id, "when": authored},
    )
    if code.codes:
        cda.cd(act, "code", code, ref=row.name_id, before=text)
    else:
        el = cda.code(act, "3457005", SNOMED, "Patient referral", "SNOMED CT")
        ot = cda.sub(el, "originalText")
        cda.sub(ot, "reference", {"value": "#" + row.name_id})
        text.addprevious(el)
    requester = data.get("requester")
    ctx.author(
        act,
        requester.get("agent") if isinstance(requester, dict) else None,
        ctx.ts(data.get("authoredOn")),
        res,
    )
    ctx.mapped(res)


@functools.cache
def _planned_procedure_template(recall: bool, timed: bool) -> Template:
    """Planned Procedure (4.41): a recall (INT) or an investigation request (RQO); its code goes
    before <text>."""
    return Template(
        E.entry(
            {"typeCode": "DRIV"},
            E.procedure(
                {"classCode": "PROC", "moodCode": "INT" if recall else "RQO", "tpl-as": "proc"},
                *cda.p_templates("2.16.840.1.113883.10.20.22.4.41", "2014-06-09"),
                E.id(root="$id"),
                E.text({"tpl-as": "text"}, E.reference(value="$ref")),
                E.statusCode(code="$status"),
                cda.p_ts("effectiveTime", timed),
            ),
        ),
        handles=("proc", "text"),
    )


@functools.cache
def _planned_act_template(timed: bool) -> Template:
    """Planned Act (4.39) for a referral; its code goes before <text>. CONF:1098-32019: a Planned
    Act is always "active"; the FHIR status is in the narrative."""
    return Template(
        E.entry(
            {"typeCode": "DRIV"},
            E.act(
                {"classCode": "ACT", "moodCode": "INT", "tpl-as": "act"},
                *cda.p_templates("2.16.840.1.113883.10.20.22.4.39", "2014-06-09"),
                E.id(root="$id"),
                E.text({"tpl-as": "text"}, E.reference(value="$ref")),
                E.statusCode(code="active"),
                cda.p_ts("effectiveTime", timed),
            ),
        ),
        handles=("act", "text"),
    )
