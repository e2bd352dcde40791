"""Problem Section (entries required) V3: 2.16.840.1.113883.10.20.22.2.5.1.

GP Connect ProblemHeader Conditions (CareConnect-GPC-ProblemHeader-Condition-1) become Problem
Concern Acts 4.3 wrapping a Problem Observation 4.4. clinicalStatus is a FHIR status, not an act
status (ConceptMap-FC-ProblemStatus): active -> act active; inactive/resolved -> act completed.
ProblemSignificance (major/minor) -> Priority Preference 4.143; ActualProblem,
RelatedClinicalContent and RelatedProblemHeader -> Entry References 4.122 to the linked entries.
"""

from __future__ import annotations

from typing import Final

from ccda_converter import cda
from ccda_converter.bundle import Resource, ext_value, extensions, notes, sub_extension, text_of
from ccda_converter.codes import ACT_CLASS, SNOMED, concept
from ccda_converter.context import Context
from ccda_converter.dates import display_date
from ccda_converter.lists import empty_reason_code, list_code
from ccda_converter.sections.base import Section, SectionSpec, Table
from ccda_converter.sections.common import comment, entry_reference, problem_type

SPEC = SectionSpec(
    key="problems",
    root="2.16.840.1.113883.10.20.22.2.5.1",
    extension="2015-08-01",
    loinc="11450-4",
    loinc_display="Problem list - Reported",
    title="Problems",
    entries_required=True,
    prefix="prb",
)
HEADERS: Final = (
    "Problem",
    "Status",
    "Significance",
    "Onset",
    "Ended",
    "Recorded",
    "Linked items",
    "Notes",
)
SIGNIFICANCE: Final = {
    "major": ("394849002", "High priority"),
    "minor": ("394848005", "Normal priority"),
}


def build(ctx: Context) -> cda.Element:
    section = Section(ctx, SPEC)
    section.notices()
    active = section.table("Active problems", HEADERS)
    inactive = section.table("Inactive and resolved problems", HEADERS)
    conditions = sorted(
        ctx.idx.of_type("Condition"),
        key=lambda r: (
            0
            if text_of(r.data.get("clinicalStatus")) in ("active", "recurrence", "relapse", "")
            else 1
        ),
    )
    for res in conditions:
        is_active = text_of(res.data.get("clinicalStatus")) in (
            "active",
            "recurrence",
            "relapse",
            "",
        )
        table = active if is_active else inactive
        try:
            _problem(ctx, section, table, res, is_active)
        except Exception as exc:  # noqa: BLE001 - one odd entry must never drop the others
            ctx.warn(f"{res.key}: problem not converted ({type(exc).__name__})")
            table.row([f"Problem record that could not be converted: {res.key}"])
            ctx.narrative(res)
    nil_known = any(
        list_code(lst) == "717711000000103" and empty_reason_code(lst) == "nil-known"
        for lst in ctx.idx.of_type("List")
    )
    if nil_known and section.entries == 0:
        _no_known(ctx, section, active)
    return section.finish("No information about problems is available.")


def _links(ctx: Context, res: Resource) -> list[tuple[str, Resource | None, str]]:
    """(kind, target, text) for ActualProblem, RelatedClinicalContent and RelatedProblemHeader."""
    out: list[tuple[str, Resource | None, str]] = []
    for suffix, kind in (
        ("Extension-CareConnect-ActualProblem-1", "Problem recorded as"),
        ("Extension-CareConnect-RelatedClinicalContent-1", "Related"),
    ):
        for ext in extensions(res.data, suffix):
            ref = ext_value(ext)
            target = ctx.idx.resolve(ref, res)
            out.append((kind, target, _describe(ctx, target, ref)))
    for ext in extensions(res.data, "Extension-CareConnect-RelatedProblemHeader-1"):
        target_ext = sub_extension(ext, "target")
        ref = ext_value(target_ext) if target_ext is not None else ext_value(ext)
        rtype = text_of(ext_value(sub_extension(ext, "type")))
        target = ctx.idx.resolve(ref, res)
        kind = f"Related problem ({rtype})" if rtype else "Related problem"
        out.append((kind, target, _describe(ctx, target, ref)))
    return out


def _describe(ctx: Context, target: Resource | None, ref: object) -> str:
    if target is None:
        rtype = ctx.idx.ref_type(ref) or "item"
        return f"{rtype} not included in this record"
    data = target.data
    for key in ("code", "vaccineCode", "medicationCodeableConcept"):
        text = concept(data.get(key)).text
        if text:
            return f"{target.rtype}: {text}"
    med = ctx.idx.resolve(data.get("medicationReference"), target)
    if med is not None:
        return f"{target.rtype}: {concept(med.data.get('code')).text}"
    return target.rtype


def _problem(ctx: Context, section: Section, table: Table, res: Resource, is_active: bool) -> None:
    data = res.data
    code = concept(data.get("code"))
    significance = text_of(
        ext_value(next(iter(extensions(data, "Extension-CareConnect-ProblemSignificance-1")), None))
    )
    links = _links(ctx, res)
    onset = data.get("onsetDateTime")
    abatement = data.get("abatementDateTime")
    note_texts = notes(data)
    status_text = text_of(data.get("clinicalStatus")) or "unknown"
    row = table.row(
        [
            code.text or "Unnamed problem",
            status_text,
            significance,
            display_date(onset),
            display_date(abatement),
            display_date(data.get("assertedDate")),
            [f"{kind}: {text}" for kind, _t, text in links],
            note_texts,
        ]
    )
    onset_ts = ctx.ts(onset)
    abatement_ts = ctx.ts(abatement)
    asserted = ctx.ts(data.get("assertedDate"))
    entry = section.entry()
    act = cda.fixed(entry, "act", {"classCode": "ACT", "moodCode": "EVN"})
    cda.templates(act, "2.16.840.1.113883.10.20.22.4.3", "2015-08-01")
    ctx.entry_id(act, res, "#concern")
    cda.code(act, "CONC", ACT_CLASS, "Concern", "HL7ActClass")
    cda.text_ref(act, row.id)
    cda.status(act, "active" if is_active else "completed")
    cda.ivl_ts(
        act,
        asserted or onset_ts,
        None if is_active else abatement_ts,
        high_null=None if is_active else "UNK",
    )
    ctx.author(act, data.get("asserter"), asserted, res)
    rel = cda.fixed(act, "entryRelationship", {"typeCode": "SUBJ"})
    obs = cda.fixed(rel, "observation", {"classCode": "OBS", "moodCode": "EVN"})
    cda.templates(obs, "2.16.840.1.113883.10.20.22.4.4", "2015-08-01")
    ctx.entry_id(obs, res)
    problem_type(obs)
    cda.text_ref(obs, row.id)
    cda.status(obs, "completed")
    cda.ivl_ts(obs, onset_ts, abatement_ts)
    cda.cd(obs, "value", code, ref=row.name_id, xsi_type="CD")
    ctx.author(obs, data.get("asserter"), asserted, res)
    if note_texts:
        comment(obs, ctx, row, 7)
    for _kind, target, _text in links:
        if target is not None and target is not res:
            entry_reference(act, ctx.uid(target.key))
    if significance in SIGNIFICANCE:
        prel = cda.fixed(act, "entryRelationship", {"typeCode": "REFR"})
        pobs = cda.fixed(prel, "observation", {"classCode": "OBS", "moodCode": "EVN"})
        cda.template_only(pobs, "2.16.840.1.113883.10.20.22.4.143")
        ctx.entry_id(pobs, res, "#significance")
        cda.code(pobs, "225773000", SNOMED, "Preference", "SNOMED CT")
        value = SIGNIFICANCE[significance]
        cda.code(pobs, value[0], SNOMED, value[1], "SNOMED CT", local="value", xsi_type="CD")
    ctx.mapped(res)


def _no_known(ctx: Context, section: Section, table: Table) -> None:
    """emptyReason nil-known on the Problems List: a negated Problem Observation."""
    row = table.row(
        ["No known problems", "None known (List emptyReason nil-known)", "", "", "", "", "", ""]
    )
    entry = section.entry()
    act = cda.fixed(entry, "act", {"classCode": "ACT", "moodCode": "EVN"})
    cda.templates(act, "2.16.840.1.113883.10.20.22.4.3", "2015-08-01")
    cda.ii(act, ctx.uid("problems#nil-known#concern"))
    cda.code(act, "CONC", ACT_CLASS, "Concern", "HL7ActClass")
    cda.text_ref(act, row.id)
    cda.status(act, "active")
    cda.ivl_ts(act, None)
    rel = cda.fixed(act, "entryRelationship", {"typeCode": "SUBJ"})
    obs = cda.fixed(
        rel, "observation", {"classCode": "OBS", "moodCode": "EVN", "negationInd": "true"}
    )
    cda.templates(obs, "2.16.840.1.113883.10.20.22.4.4", "2015-08-01")
    cda.ii(obs, ctx.uid("problems#nil-known"))
    problem_type(obs)
    cda.text_ref(obs, row.id)
    cda.status(obs, "completed")
    cda.ivl_ts(obs, None)
    cda.code(obs, "55607006", SNOMED, "Problem", "SNOMED CT", local="value", xsi_type="CD")
