"""Results Section (entries required) V3: 2.16.840.1.113883.10.20.22.2.3.1.

DiagnosticReport -> Result Organizer 4.1 whose components are the report's Observations, test
groups flattened depth-first (has-member), each a Result Observation 4.2 with reference ranges,
interpretation and comments; Specimen -> organizer specimen. Uncategorised observations that are
not vital signs, smoking/alcohol or free-text notes also land here, one "Uncategorised data"
organizer per day, coded findings without a value as assertions.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from ccda_converter import cda
from ccda_converter.bundle import Resource, as_list, obj, text_of
from ccda_converter.classify import ObservationPlan
from ccda_converter.codes import SNOMED, concept
from ccda_converter.context import Context
from ccda_converter.dates import display_date, sort_key
from ccda_converter.sections.base import Section, SectionSpec, Table
from ccda_converter.sections.observations import (
    RESULT_STATUS,
    effective,
    effective_text,
    range_labels,
    reference_ranges,
    result_observation,
    value_text,
)
from ccda_converter.template import E, Template

SPEC = SectionSpec(
    key="results",
    root="2.16.840.1.113883.10.20.22.2.3.1",
    extension="2015-08-01",
    loinc="30954-2",
    loinc_display="Relevant diagnostic tests/laboratory data Narrative",
    title="Results",
    entries_required=True,
    prefix="res",
)
HEADERS: Final = (
    "Test",
    "Result",
    "Reference range",
    "Interpretation",
    "Date",
    "Status",
    "Comments",
)
UNCAT_HEADERS: Final = ("Item", "Value", "Reference range", "Date", "Comments")


def build(ctx: Context, obs_plan: ObservationPlan) -> cda.Element:
    section = Section(ctx, SPEC)
    section.notices()
    table = section.table("Investigation results", HEADERS)
    for report, items in obs_plan.reports:
        try:
            _report(ctx, section, table, report, items)
        except Exception as exc:  # noqa: BLE001 - one odd report must never drop the others
            ctx.warn(f"{report.key}: report not converted ({type(exc).__name__})")
            table.row([f"Report that could not be converted: {report.key}"])
            ctx.narrative(report)
    uncat = section.table("Other observations (uncategorised data)", UNCAT_HEADERS)
    groups: dict[str, list[Resource]] = {}
    for obs in obs_plan.results:
        day = (effective(ctx, obs.data) or "")[:8] or "undated"
        groups.setdefault(day, []).append(obs)
    for day in sorted(groups, key=lambda d: sort_key(d) if d != "undated" else "9"):
        try:
            _uncategorised(ctx, section, uncat, day, groups[day])
        except Exception as exc:  # noqa: BLE001
            ctx.warn(f"uncategorised observations of {day}: not converted ({type(exc).__name__})")
            for obs in groups[day]:
                uncat.row([concept(obs.data.get("code")).text or obs.key, value_text(obs.data)])
                ctx.narrative(obs)
    return section.finish("No information about results is available.")


def _obs_row(
    ctx: Context,
    table: Table,
    obs: Resource,
    depth: int,
    ranges: list[tuple[dict[str, Any], str, str]],
    comment: str,
) -> Any:
    data = obs.data
    name = ctx.concept(data.get("code")).text or "Unnamed observation"
    return table.row(
        [
            ("\u00a0\u00a0" * depth) + name,
            value_text(data),
            [label for _rr, _text, label in ranges],
            ctx.concept(data.get("interpretation")).text,
            effective_text(data),
            text_of(data.get("status")),
            comment,
        ],
        (6,) if comment else (),
    )


def _report(
    ctx: Context,
    section: Section,
    table: Table,
    report: Resource,
    items: list[tuple[Resource, int]],
) -> None:
    data = report.data
    code = ctx.concept(data.get("code"))
    specimens = [
        s
        for s in (ctx.idx.resolve(r, report) for r in as_list(data.get("specimen")))
        if s is not None
    ]
    requests = [
        r
        for r in (ctx.idx.resolve(b, report) for b in as_list(data.get("basedOn")))
        if r is not None
    ]
    spec_text = []
    for spec in specimens:
        collection = obj(spec.data.get("collection"))
        when = display_date(collection.get("collectedDateTime"))
        spec_text.append(
            f"Specimen: {concept(spec.data.get('type')).text or 'unspecified'}"
            + (f", collected {when}" if when else "")
        )
    extra = [
        f"Requested: {concept(r.data.get('code')).text}"
        for r in requests
        if concept(r.data.get("code")).text
    ]
    conclusion = text_of(data.get("conclusion"))
    head = table.row(
        [
            code.text or "Report",
            conclusion,
            spec_text + extra,
            "",
            display_date(data.get("effectiveDateTime") or data.get("issued")),
            text_of(data.get("status")),
            "",
        ]
    )
    times = [t for t in (effective(ctx, o.data) for o, _d in items) if t]
    report_time = ctx.ts(data.get("effectiveDateTime")) or ctx.ts(data.get("issued"))
    if report_time:
        times.append(report_time)
    if times:
        times.sort(key=sort_key)
    _entry, org, status = section.stamp(
        _report_template(bool(times)),
        {
            "id": ctx.entry_uid(report),
            "status": RESULT_STATUS.get(text_of(data.get("status")), "completed"),
            "low": times[0] if times else None,
            "high": times[-1] if times else None,
        },
    )
    cda.cd(org, "code", code, ref=head.name_id, before=status)
    for spec in specimens:
        sp = cda.fixed(org, "specimen", {"typeCode": "SPC"})
        role = cda.sub(sp, "specimenRole")
        ctx.identifiers(role, spec.data, spec.key)
        entity = cda.sub(role, "specimenPlayingEntity")
        cda.cd(entity, "code", concept(spec.data.get("type")))
        ctx.mapped(spec)
    performers = [
        p.get("actor") if isinstance(p, dict) and "actor" in p else p
        for p in as_list(data.get("performer"))
    ]
    if performers:
        ctx.author(org, performers[0], ctx.ts(data.get("issued")), report)
    if not items:
        comp = cda.sub(org, "component")
        obs = cda.fixed(comp, "observation", {"classCode": "OBS", "moodCode": "EVN"})
        cda.templates(obs, "2.16.840.1.113883.10.20.22.4.2", "2015-08-01")
        ctx.entry_id(obs, report, "#report")
        cda.cd(obs, "code", code, ref=head.name_id)
        cda.text_ref(obs, head.id)
        cda.status(obs, RESULT_STATUS.get(text_of(data.get("status")), "completed"))
        cda.ts(obs, "effectiveTime", report_time)
        if conclusion:
            cda.text_el(obs, "value", conclusion, {cda.XSI_TYPE_ATTR: "ST"})
        else:
            cda.sub(obs, "value", {cda.XSI_TYPE_ATTR: "ST", "nullFlavor": "NI"})
    for obs_res, depth in items:
        comment = text_of(obs_res.data.get("comment"))
        ranges = range_labels(obs_res.data)
        row = _obs_row(ctx, table, obs_res, depth + 1, ranges, comment)
        obs = result_observation(
            ctx,
            org,
            obs_res,
            row.id,
            row.name_id,
            comment_ref=f"#{row.id}c6" if comment else None,
        )
        if ranges:
            reference_ranges(obs, ranges)
        ctx.mapped(obs_res)
    ctx.mapped(report)


def _uncategorised(
    ctx: Context, section: Section, table: Table, day: str, observations: list[Resource]
) -> None:
    times = sorted((t for t in (effective(ctx, o.data) for o in observations) if t), key=sort_key)
    _entry, org = section.stamp(
        _uncategorised_template(bool(times)),
        {
            "id": ctx.uid(f"uncategorised#{day}#{observations[0].key}"),
            "low": times[0] if times else None,
            "high": times[-1] if times else None,
        },
    )
    for obs_res in observations:
        data = obs_res.data
        components = [c for c in as_list(data.get("component")) if isinstance(c, dict)]
        value = value_text(data) or "; ".join(
            f"{concept(c.get('code')).text}: {value_text(c)}" for c in components
        )
        ranges = range_labels(data)
        note = text_of(data.get("comment"))
        row = table.row(
            [
                ctx.concept(data.get("code")).text or "Unnamed observation",
                value,
                [label for _rr, _text, label in ranges],
                effective_text(data),
                note,
            ],
            (4,) if note else (),
        )
        obs = result_observation(
            ctx,
            org,
            obs_res,
            row.id,
            row.name_id,
            assertion=True,
            comment_ref=f"#{row.id}c4" if note else None,
        )
        if ranges:
            reference_ranges(obs, ranges)
        ctx.mapped(obs_res)


@functools.cache
def _report_template(timed: bool) -> Template:
    """Result Organizer (4.1) for a DiagnosticReport; its code goes before <statusCode>."""
    return Template(
        E.entry(
            {"typeCode": "DRIV"},
            E.organizer(
                {"classCode": "BATTERY", "moodCode": "EVN", "tpl-as": "org"},
                *cda.p_templates("2.16.840.1.113883.10.20.22.4.1", "2015-08-01"),
                E.id(root="$id"),
                E.statusCode({"code": "$status", "tpl-as": "status"}),
                *([cda.p_ivl(True, True)] if timed else []),
            ),
        ),
        handles=("org", "status"),
    )


@functools.cache
def _uncategorised_template(timed: bool) -> Template:
    """Result Organizer (4.1) grouping one day of uncategorised observations."""
    code = cda.p_code("826501000000100", SNOMED, "Miscellaneous record", "SNOMED CT")
    code.append(E.originalText("Uncategorised data"))
    return Template(
        E.entry(
            {"typeCode": "DRIV"},
            E.organizer(
                {"classCode": "CLUSTER", "moodCode": "EVN", "tpl-as": "org"},
                *cda.p_templates("2.16.840.1.113883.10.20.22.4.1", "2015-08-01"),
                E.id(root="$id"),
                code,
                E.statusCode(code="completed"),
                *([cda.p_ivl(True, True)] if timed else []),
            ),
        ),
        handles=("org",),
    )
