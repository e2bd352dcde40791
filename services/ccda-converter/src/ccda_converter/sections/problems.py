"""Problem Section (entries required) V3: 2.16.840.1.113883.10.20.22.2.5.1.

GP Connect ProblemHeader Conditions (CareConnect-GPC-ProblemHeader-Condition-1) become Problem
Concern Acts 4.3 wrapping a Problem Observation 4.4. clinicalStatus is a FHIR status, not an act
status (ConceptMap-FC-ProblemStatus): active -> act active; inactive/resolved -> act completed.
ProblemSignificance (major/minor) -> Priority Preference 4.143; ActualProblem,
RelatedClinicalContent and RelatedProblemHeader -> Entry References 4.122 to the linked entries.
"""

from __future__ import annotations

import functools
from typing import Final

from ccda_converter import cda
from ccda_converter.bundle import Resource, ext_value, extensions, notes, sub_extension, text_of
from ccda_converter.codes import ACT_CLASS, SNOMED, concept
from ccda_converter.context import Context
from ccda_converter.dates import display_date
from ccda_converter.lists import empty_reason_code, list_code
from ccda_converter.sections.base import Section, SectionSpec, Table
from ccda_converter.sections.common import (
    comment,
    entry_reference,
    p_problem_type,
    problem_type,
)
from ccda_converter.template import E, Template

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
        ],
        (7,) if note_texts else (),
    )
    onset_ts = ctx.ts(onset)
    abatement_ts = ctx.ts(abatement)
    asserted = ctx.ts(data.get("assertedDate"))
    low = asserted or onset_ts
    high = None if is_active else abatement_ts
    asserter = data.get("asserter")
    _entry, act, obs = section.stamp(
        _problem_template(bool(low), bool(high), is_active, bool(onset_ts), bool(abatement_ts)),
        {
            "concern_id": ctx.entry_uid(res, "#concern"),
            "ref": "#" + row.id,
            "low": low,
            "high": high,
            "id": ctx.entry_uid(res),
            "onset": onset_ts,
            "abatement": abatement_ts,
        },
    )
    ctx.author(act, asserter, asserted, res, before=act[-1])
    cda.cd(obs, "value", code, ref=row.name_id, xsi_type="CD")
    ctx.author(obs, asserter, asserted, res)
    if note_texts:
        comment(obs, ctx, row, 7)
    for _kind, target, _text in links:
        if target is not None and target is not res:
            entry_reference(act, ctx.uid(target.key))
    if significance in SIGNIFICANCE:
        value = SIGNIFICANCE[significance]
        _PRIORITY.stamp(
            act,
            {
                "id": ctx.entry_uid(res, "#significance"),
                "code": value[0],
                "name": value[1],
            },
        )
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


@functools.cache
def _problem_template(
    low: bool, high: bool, active: bool, onset: bool, abatement: bool
) -> Template:
    """Problem Concern Act (4.3) wrapping a Problem Observation (4.4); the concern author goes
    before the act's last child; the problem code (value) and its author are appended to the
    observation."""
    return Template(
        E.entry(
            {"typeCode": "DRIV"},
            E.act(
                {"classCode": "ACT", "moodCode": "EVN", "tpl-as": "act"},
                *cda.p_templates("2.16.840.1.113883.10.20.22.4.3", "2015-08-01"),
                E.id(root="$concern_id"),
                cda.p_code("CONC", ACT_CLASS, "Concern", "HL7ActClass"),
                cda.p_text_ref(),
                E.statusCode(code="active" if active else "completed"),
                cda.p_ivl(low, high, high_null=None if active else "UNK"),
                E.entryRelationship(
                    {"typeCode": "SUBJ"},
                    E.observation(
                        {"classCode": "OBS", "moodCode": "EVN", "tpl-as": "obs"},
                        *cda.p_templates("2.16.840.1.113883.10.20.22.4.4", "2015-08-01"),
                        E.id(root="$id"),
                        p_problem_type(),
                        cda.p_text_ref(),
                        E.statusCode(code="completed"),
                        # C-CDA R2.1 Problem Observation (V3) effectiveTime: a problem known to
                        # be resolved SHALL have high, nullFlavor UNK when the date of
                        # resolution is not known (as the concern act above).
                        cda.p_ivl(
                            onset,
                            abatement,
                            low_slot="onset",
                            high_slot="abatement",
                            high_null=None if active else "UNK",
                        ),
                    ),
                ),
            ),
        ),
        handles=("act", "obs"),
    )


# Priority Preference (4.143) for GP Connect ProblemSignificance.
_PRIORITY: Final = Template(
    E.entryRelationship(
        {"typeCode": "REFR"},
        E.observation(
            {"classCode": "OBS", "moodCode": "EVN"},
            cda.p_template("2.16.840.1.113883.10.20.22.4.143"),
            E.id(root="$id"),
            cda.p_code("225773000", SNOMED, "Preference", "SNOMED CT"),
            cda.p_code("$code", SNOMED, "$name", "SNOMED CT", local="value", xsi_type="CD"),
        ),
    )
)
