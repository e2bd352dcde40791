"""Medications Section (entries required) V2: 2.16.840.1.113883.10.20.22.2.1.1.

GP Connect: MedicationStatement (the medication as a whole) based on a MedicationRequest with
intent "plan" (the authorisation: repeats, quantity, validity) and MedicationRequests with intent
"order" (issues) based on the plan; Medication holds the dm+d code. Each statement becomes a
Medication Activity 4.16 (moodCode EVN); the plan and every issue become Medication Supply Orders
4.17 inside it. The drug code slot wants RxNorm (CONF:1098-7412): there is no public dm+d->RxNorm
crosswalk, so @nullFlavor="OTH" with the dm+d/SNOMED codes as translations (ccda-requirements 5).
Current and past medication are split in the narrative, not into two sections with one code.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from ccda_converter import cda
from ccda_converter.bundle import (
    Resource,
    as_list,
    ext_value,
    extension,
    notes,
    obj,
    sub_extension,
    text_of,
)
from ccda_converter.codes import (
    ACT_CODE,
    DMD_NAME,
    LOINC,
    SNOMED,
    Code,
    Concept,
    concept,
    first_snomed,
    label,
)
from ccda_converter.context import Context
from ccda_converter.dates import display_date
from ccda_converter.lists import empty_reason_code, list_code
from ccda_converter.sections.base import Row, Section, SectionSpec, Table
from ccda_converter.sections.common import INDICATION, comment
from ccda_converter.template import E, Template

SPEC = SectionSpec(
    key="medications",
    root="2.16.840.1.113883.10.20.22.2.1.1",
    extension="2014-06-09",
    loinc="10160-0",
    loinc_display="History of Medication use Narrative",
    title="Medications",
    entries_required=True,
    prefix="med",
)

# ConceptMap-FC-MedicationStatus (medicationrequest/statement status -> ActStatus).
STATUS: Final[dict[str, str]] = {
    "active": "active",
    "intended": "active",
    "on-hold": "suspended",
    "completed": "completed",
    "stopped": "aborted",
    "cancelled": "cancelled",
    "entered-in-error": "nullified",
    "draft": "new",
    "not-taken": "cancelled",
}
CURRENT: Final = frozenset({"active", "intended", "on-hold"})
HEADERS: Final = (
    "Medication",
    "Dose and instructions",
    "Quantity",
    "Repeats",
    "Start",
    "End",
    "Last issued",
    "Type",
    "Status",
    "Notes",
)
PERIOD_UNITS: Final = frozenset({"s", "min", "h", "d", "wk", "mo", "a"})


class _Item:
    """One medication: a statement, or a plan/issue whose statement is missing."""

    def __init__(self, main: Resource, plans: list[Resource], orders: list[Resource]) -> None:
        self.main = main
        self.plans = plans
        self.orders = orders


def build(ctx: Context) -> cda.Element:
    section = Section(ctx, SPEC)
    section.notices()
    items = _items(ctx)
    current_table = section.table("Current medication", HEADERS)
    past_table = section.table("Past medication", HEADERS)
    items.sort(key=lambda it: 0 if text_of(it.main.data.get("status")) in CURRENT else 1)
    for item in items:
        status = text_of(item.main.data.get("status"))
        table = current_table if status in CURRENT else past_table
        try:
            _activity(ctx, section, table, item)
        except Exception as exc:  # noqa: BLE001 - one odd entry must never drop the others
            ctx.warn(f"{item.main.key}: medication not converted ({type(exc).__name__})")
            table.row([f"Medication record that could not be converted: {item.main.key}"])
            ctx.narrative(item.main)
    nil_known = any(
        list_code(lst) == "933361000000108" and empty_reason_code(lst) == "nil-known"
        for lst in ctx.idx.of_type("List")
    )
    if nil_known and section.entries == 0:
        _no_known(ctx, section, current_table)
    unused = [m for m in ctx.idx.of_type("Medication") if not ctx.is_marked(m)]
    if unused:
        extra = section.table(
            "Medication definitions not referenced by any prescription", ("Medication", "Codes")
        )
        for med in unused:
            c = ctx.concept(med.data.get("code"))
            extra.row(
                [c.text or med.key, ", ".join(f"{x.code} ({x.system_name})" for x in c.codes)]
            )
            ctx.narrative(med)
    return section.finish("No information about medications is available.")


def _items(ctx: Context) -> list[_Item]:
    idx = ctx.idx
    plans_used: set[int] = set()
    orders_used: set[int] = set()
    orders_by_plan: dict[int, list[Resource]] = {}
    requests = idx.of_type("MedicationRequest")
    for req in requests:
        if text_of(req.data.get("intent")) == "order":
            for based in as_list(req.data.get("basedOn")):
                plan = idx.resolve(based, req)
                if plan is not None and plan.rtype == "MedicationRequest":
                    orders_by_plan.setdefault(id(plan), []).append(req)
    items: list[_Item] = []
    for stmt in idx.of_type("MedicationStatement"):
        plans = []
        for based in as_list(stmt.data.get("basedOn")):
            plan = idx.resolve(based, stmt)
            if (
                plan is not None
                and plan.rtype == "MedicationRequest"
                and id(plan) not in plans_used
            ):
                plans.append(plan)
                plans_used.add(id(plan))
        orders = []
        for plan in plans:
            for order in orders_by_plan.get(id(plan), []):
                if id(order) not in orders_used:
                    orders.append(order)
                    orders_used.add(id(order))
        items.append(_Item(stmt, plans, orders))
    for req in requests:
        if id(req) in plans_used or id(req) in orders_used:
            continue
        if text_of(req.data.get("intent")) != "order":
            plans_used.add(id(req))
            orders = [o for o in orders_by_plan.get(id(req), []) if id(o) not in orders_used]
            orders_used.update(id(o) for o in orders)
            items.append(_Item(req, [req], orders))
    for req in requests:
        if id(req) not in plans_used and id(req) not in orders_used:
            orders_used.add(id(req))
            items.append(_Item(req, [], [req]))
    return items


def _medication(ctx: Context, res: Resource) -> tuple[Concept, Resource | None]:
    data = res.data
    med_ref = data.get("medicationReference")
    if med_ref is not None:
        med = ctx.idx.resolve(med_ref, res)
        if med is not None:
            ctx.mapped(med)
            return ctx.concept(med.data.get("code")), med
        display = text_of(med_ref.get("display")) if isinstance(med_ref, dict) else ""
        ctx.warn(f"{res.key}: medicationReference does not resolve")
        return Concept([], [], display, None), None
    return concept(data.get("medicationCodeableConcept")), None


def _dosages(res: Resource) -> list[dict[str, Any]]:
    key = "dosage" if res.rtype == "MedicationStatement" else "dosageInstruction"
    return [d for d in as_list(res.data.get(key)) if isinstance(d, dict)]


def _repeat_info(plan: Resource | None) -> tuple[str, str]:
    if plan is None:
        return "", ""
    ext = extension(plan.data, "Extension-CareConnect-GPC-MedicationRepeatInformation-1")
    allowed = ext_value(sub_extension(ext, "numberOfRepeatPrescriptionsAllowed"))
    issued = ext_value(sub_extension(ext, "numberOfRepeatPrescriptionsIssued"))
    return (str(allowed) if allowed is not None else "", str(issued) if issued is not None else "")


def _expiry(plan: Resource | None) -> str:
    """The authorisation's expiry date (CareConnect-GPC-MedicationRepeatInformation-1
    authorisationExpiryDate: the date the repeat authorisation ends), or ''."""
    if plan is None:
        return ""
    ext = extension(plan.data, "Extension-CareConnect-GPC-MedicationRepeatInformation-1")
    return text_of(ext_value(sub_extension(ext, "authorisationExpiryDate")))


def _quantity(req: Resource) -> dict[str, Any] | None:
    dispense = req.data.get("dispenseRequest")
    if not isinstance(dispense, dict):
        return None
    qty = dispense.get("quantity")
    if not isinstance(qty, dict):
        return None
    text = text_of(ext_value(extension(qty, "Extension-CareConnect-GPC-MedicationQuantityText-1")))
    if qty.get("value") is None:
        if text:
            first = text.split()[0]
            return {"value": first, "unit": " ".join(text.split()[1:]) or qty.get("unit")}
    elif text and not text_of(qty.get("unit")) and not text_of(qty.get("code")):
        # A value whose unit is only in the quantity text (7 + "tablet", 250 + "ml",
        # 28 + "28 tablets"): that is the unit (UCUM when it is one, else a countable dose form
        # written without @unit).
        words = text.split()
        leading = cda.number(words[0])
        value = cda.number(qty.get("value"))
        if leading is None:
            return {**qty, "unit": text}
        if value is not None and len(words) > 1 and float(leading) == float(value):
            return {**qty, "unit": " ".join(words[1:])}
    return qty


def _quantity_text(qty: dict[str, Any] | None) -> str:
    """The quantity for the reader. MedicationQuantityText is often only the unit ("tablet"
    beside a value of 28): the number goes in front unless the text already starts with it."""
    if not qty:
        return ""
    text = text_of(ext_value(extension(qty, "Extension-CareConnect-GPC-MedicationQuantityText-1")))
    if not text:
        return cda.quantity_text(qty)
    value = cda.number(qty.get("value"))
    if value is None:
        return text
    first = cda.number(text.split()[0])
    if first is None:
        return f"{value} {text}"
    if float(first) == float(value):
        return text
    return f"{value} ({text})"


def _coded_text(value: Any) -> str:
    # CareConnect codings (PrescriptionType-1, PrescribingAgency-1, ...) have no CDA OID: their
    # display (or code) is the text.
    return label(value)


def _activity(ctx: Context, section: Section, table: Table, item: _Item) -> None:
    main = item.main
    data = main.data
    med_concept, _med = _medication(ctx, main)
    plan = item.plans[0] if item.plans else None
    dosages = _dosages(main) or (_dosages(plan) if plan is not None else [])
    status = text_of(data.get("status"))
    if main.rtype == "MedicationStatement":
        period = obj(data.get("effectivePeriod"))
        start = period.get("start") or data.get("effectiveDateTime")
        end = period.get("end")
        last_issue = ext_value(extension(data, "MedicationStatementLastIssueDate-1"))
    else:
        dispense = obj(data.get("dispenseRequest"))
        validity = obj(dispense.get("validityPeriod"))
        start = validity.get("start") or data.get("authoredOn")
        # The authorisation itself (no statement): it ends when it was stopped, else when it
        # expires (authorisationExpiryDate).
        end = validity.get("end") or _expiry(plan) or None
        last_issue = data.get("authoredOn") if text_of(data.get("intent")) == "order" else None
    if not last_issue and item.orders:
        issue_dates = [text_of(o.data.get("authoredOn")) for o in item.orders]
        last_issue = max((d for d in issue_dates if d), default=None)
    allowed, issued = _repeat_info(plan)
    rx_type = ""
    for source in (plan, main, *item.orders):
        if source is not None and not rx_type:
            rx_type = _coded_text(
                ext_value(extension(source.data, "Extension-CareConnect-GPC-PrescriptionType-1"))
            )
    agency = _coded_text(
        ext_value(extension(data, "Extension-CareConnect-GPC-PrescribingAgency-1"))
    )
    reason_ext = None
    for source in (main, plan):
        if source is not None and reason_ext is None:
            reason_ext = extension(
                source.data, "Extension-CareConnect-GPC-MedicationStatusReason-1"
            )
    stop_reason = (
        _coded_text(ext_value(sub_extension(reason_ext, "statusReason"))) if reason_ext else ""
    )

    sig_lines: list[str] = []
    patient_instructions: list[str] = []
    prn_lines: list[str] = []
    for d in dosages:
        if text_of(d.get("text")):
            sig_lines.append(text_of(d.get("text")))
        if text_of(d.get("patientInstruction")):
            patient_instructions.append(text_of(d.get("patientInstruction")))
        if isinstance(d.get("asNeededCodeableConcept"), dict):
            prn_lines.append(
                "As needed for " + (_coded_text(d["asNeededCodeableConcept"]) or "a stated reason")
            )
        elif d.get("asNeededBoolean") is True:
            prn_lines.append("As needed")
    dmd_info = (
        ctx.options.dmd.get(first_snomed(_med.data.get("code"))) if _med is not None else None
    )
    strength = dmd_info.strength if dmd_info is not None else ""
    dose_cell = [
        *sig_lines,
        *(f"Patient instruction: {p}" for p in patient_instructions),
        *prn_lines,
    ]
    if strength:
        dose_cell.append(f"Strength: {strength}")
    # The authorisation (plan): its type, repeats and expiry; the plan's supply order refers here.
    expiry = _expiry(plan)
    authorisation = [rx_type]
    if allowed or issued:
        authorisation.append(f"{issued or '?'} of {allowed or '?'} issued")
    if expiry:
        authorisation.append(f"authorised until {display_date(expiry)}")
    note_texts = []
    for source in (main, *item.plans, *item.orders):
        note_texts.extend(notes(source.data))
    if stop_reason:
        note_texts.append(f"Stopped: {stop_reason}")
    qty = (
        _quantity(plan)
        if plan is not None
        else (_quantity(item.orders[0]) if item.orders else None)
    )
    name = med_concept.text or "Unnamed medication"
    if dmd_info is not None and dmd_info.vmp_display and dmd_info.vmp_display != name:
        name = f"{name} (generic: {dmd_info.vmp_display})"
    row = table.row(
        [
            name,
            dose_cell,
            _quantity_text(qty),
            authorisation if any(authorisation) else "",
            display_date(start),
            display_date(end),
            display_date(last_issue),
            ", ".join(x for x in (rx_type, agency) if x),
            status or "unknown",
            list(dict.fromkeys(note_texts)),
        ],
        ((1,) if sig_lines or patient_instructions else ()) + ((9,) if note_texts else ()),
    )

    timing = _pivl(dosages)
    route = next((d.get("route") for d in dosages if isinstance(d.get("route"), dict)), None)
    dose = next(
        (d.get("doseQuantity") for d in dosages if isinstance(d.get("doseQuantity"), dict)), None
    )
    dose_value: str | None = None
    dose_unit: str | None = None
    if dose is not None and cda.number(dose.get("value")) is not None:
        dose_value, dose_unit, _none = cda.pq_parts(dose, countable_ok=True)
    low, high = ctx.ts(start), ctx.ts(end)
    _entry, sbadm, dose_el, material = section.stamp(
        _activity_template(bool(low), bool(high), timing is not None, dose_value is not None),
        {
            "id": ctx.entry_uid(main),
            "ref": "#" + row.id,
            "status": STATUS.get(status, "completed"),
            "low": low,
            "high": high,
            "pv": timing[0] if timing else None,
            "pu": timing[1] if timing else None,
            "dv": dose_value,
            "du": dose_unit,
        },
    )
    if route is not None:
        cda.cd(sbadm, "routeCode", concept(route), before=dose_el)
    elif dmd_info is not None and dmd_info.route_code:
        dose_el.addprevious(
            cda.code(
                sbadm,
                dmd_info.route_code,
                SNOMED,
                dmd_info.route_display or None,
                "SNOMED CT",
                local="routeCode",
            )
        )
    _material(material, med_concept, row.name_id, dmd_info)
    recorder = (plan.data.get("recorder") if plan is not None else None) or data.get("recorder")
    ctx.author(sbadm, recorder, ctx.ts(data.get("dateAsserted") or data.get("authoredOn")), main)
    plan_ref = "#" + row.cell_id(3) if any(authorisation) else None
    for req in item.plans:
        _supply(ctx, sbadm, req, plan_ref)
        ctx.mapped(req)
    for req in item.orders:
        if req not in item.plans:
            _supply(ctx, sbadm, req, None)
            ctx.mapped(req)
    if sig_lines:
        _SIG.stamp(sbadm, {"ref": "#" + row.cell_id(1)})
    if patient_instructions:
        _INSTRUCTIONS.stamp(sbadm, {"ref": "#" + row.cell_id(1)})
    for j, reason in enumerate(as_list(data.get("reasonCode"))):
        _indication(ctx, sbadm, main, concept(reason), j)
    if note_texts:
        comment(sbadm, ctx, row, 9)
    for d in dosages:
        if isinstance(d.get("asNeededCodeableConcept"), dict) or d.get("asNeededBoolean") is True:
            _precondition(sbadm, d)
            break
    ctx.mapped(main)


def _material(material: cda.Element, med: Concept, ref: str, dmd_info: Any) -> None:
    extra = []
    if (
        dmd_info is not None
        and dmd_info.vmp_code
        and all(c.code != dmd_info.vmp_code for c in med.codes)
    ):
        extra.append(Code(dmd_info.vmp_code, SNOMED, DMD_NAME, dmd_info.vmp_display))
    cda.cd(material, "code", med, ref=ref, force_null="OTH", extra=extra)


@functools.cache
def _activity_template(low: bool, high: bool, pivl: bool, dose: bool) -> Template:
    """Medication Activity (4.16) with its consumable (4.23); the route goes before the
    doseQuantity, the drug code into manufacturedMaterial. CONF:1098-7508: exactly one non-PIVL
    effectiveTime with low or @value, not both."""
    timing = (
        [
            E.effectiveTime(
                {cda.XSI_TYPE_ATTR: "PIVL_TS", "institutionSpecified": "true", "operator": "A"},
                E.period(value="$pv", unit="$pu"),
            )
        ]
        if pivl
        else []
    )
    return Template(
        E.entry(
            {"typeCode": "DRIV"},
            E.substanceAdministration(
                {"classCode": "SBADM", "moodCode": "EVN", "tpl-as": "sbadm"},
                *cda.p_templates("2.16.840.1.113883.10.20.22.4.16", "2014-06-09"),
                E.id(root="$id"),
                cda.p_text_ref(),
                E.statusCode(code="$status"),
                cda.p_ivl(low, high, xsi_type=True),
                *timing,
                E.doseQuantity(
                    {"value": "$dv", "unit": "$du", "tpl-as": "dose"}
                    if dose
                    else {"nullFlavor": "UNK", "tpl-as": "dose"}
                ),
                E.consumable(
                    E.manufacturedProduct(
                        {"classCode": "MANU"},
                        *cda.p_templates("2.16.840.1.113883.10.20.22.4.23", "2014-06-09"),
                        E.manufacturedMaterial({"tpl-as": "material"}),
                    )
                ),
            ),
        ),
        handles=("sbadm", "dose", "material"),
    )


# Medication Free Text Sig (4.147): the sig text is the narrative's dose cell.
_SIG: Final = Template(
    E.entryRelationship(
        {"typeCode": "COMP"},
        E.substanceAdministration(
            {"classCode": "SBADM", "moodCode": "EVN"},
            cda.p_template("2.16.840.1.113883.10.20.22.4.147"),
            cda.p_code("76662-6", LOINC, "Instructions Medication", "LOINC"),
            cda.p_text_ref(),
            E.consumable(E.manufacturedProduct(E.manufacturedLabeledDrug(nullFlavor="NA"))),
        ),
    )
)
# Instruction (4.20) for the patient instructions.
_INSTRUCTIONS: Final = Template(
    E.entryRelationship(
        {"typeCode": "SUBJ", "inversionInd": "true"},
        E.act(
            {"classCode": "ACT", "moodCode": "INT"},
            *cda.p_templates("2.16.840.1.113883.10.20.22.4.20", "2014-06-09"),
            cda.p_code("409073007", SNOMED, "Education", "SNOMED CT"),
            cda.p_text_ref(),
            E.statusCode(code="completed"),
        ),
    )
)


def _pivl(dosages: list[dict[str, Any]]) -> tuple[str, str] | None:
    for d in dosages:
        timing = d.get("timing")
        if not isinstance(timing, dict) or not isinstance(timing.get("repeat"), dict):
            continue
        rep = timing["repeat"]
        period = cda.number(rep.get("period"))
        unit = text_of(rep.get("periodUnit"))
        freq = rep.get("frequency")
        if period is None or unit not in PERIOD_UNITS:
            continue
        if isinstance(freq, int) and freq > 1:
            value = float(period) / freq
            return (f"{value:g}", unit)
        return (period, unit)
    return None


def _supply(ctx: Context, sbadm: cda.Element, req: Resource, ref: str | None) -> None:
    """Medication Supply Order (4.17); ``ref``: its narrative (the authorisation cell of a plan).
    A plan's authorisation runs until it was stopped (validityPeriod.end), else until it
    expires (authorisationExpiryDate)."""
    data = req.data
    dispense = obj(data.get("dispenseRequest"))
    validity = obj(dispense.get("validityPeriod"))
    low = ctx.ts(validity.get("start")) or ctx.ts(data.get("authoredOn"))
    high = ctx.ts(validity.get("end")) or ctx.ts(_expiry(req))
    allowed, _issued = _repeat_info(req)
    qty = _quantity(req)
    qty_value: str | None = None
    qty_unit: str | None = None
    if qty is not None and cda.number(qty.get("value")) is not None:
        qty_value, qty_unit, _none = cda.pq_parts(qty, countable_ok=True)
    repeats = allowed.isdigit()
    _rel, supply = _supply_template(
        bool(low), bool(high), repeats, qty_value is not None, ref is not None
    ).stamp(
        sbadm,
        {
            "id": ctx.entry_uid(req),
            "ref": ref,
            "status": STATUS.get(text_of(data.get("status")), "completed"),
            "low": low,
            "high": high,
            "repeats": allowed if repeats else None,
            "qv": qty_value,
            "qu": qty_unit,
        },
    )
    ctx.author(
        supply, data.get("recorder") or data.get("requester"), ctx.ts(data.get("authoredOn")), req
    )


@functools.cache
def _supply_template(low: bool, high: bool, repeats: bool, quantity: bool, text: bool) -> Template:
    """Medication Supply Order (4.17) for the authorisation (plan) or one issue (order);
    ``text``: a reference to its narrative."""
    return Template(
        E.entryRelationship(
            {"typeCode": "REFR"},
            E.supply(
                {"classCode": "SPLY", "moodCode": "INT", "tpl-as": "supply"},
                *cda.p_templates("2.16.840.1.113883.10.20.22.4.17", "2014-06-09"),
                E.id(root="$id"),
                *([cda.p_text_ref()] if text else []),
                E.statusCode(code="$status"),
                cda.p_ivl(low, high, xsi_type=True),
                *([E.repeatNumber(value="$repeats")] if repeats else []),
                *([E.quantity(value="$qv", unit="$qu")] if quantity else []),
            ),
        ),
        handles=("supply",),
    )


def _indication(ctx: Context, parent: cda.Element, res: Resource, reason: Concept, j: int) -> None:
    _rel, obs = INDICATION.stamp(parent, {"id": ctx.entry_uid(res, f"#indication{j}")})
    cda.cd(obs, "value", reason, xsi_type="CD")


def _precondition(sbadm: cda.Element, dosage: dict[str, Any]) -> None:
    """PRN: Precondition for Substance Administration (4.25), for asNeededCodeableConcept and
    asNeededBoolean alike (Xhuma crashed on the former)."""
    pre = cda.fixed(sbadm, "precondition", {"typeCode": "PRCN"})
    criterion = cda.sub(pre, "criterion")
    cda.templates(criterion, "2.16.840.1.113883.10.20.22.4.25", "2014-06-09")
    cda.code(criterion, "ASSERTION", ACT_CODE, "Assertion", "HL7ActCode", xsi_type="CD")
    reason = dosage.get("asNeededCodeableConcept")
    if isinstance(reason, dict):
        cda.cd(criterion, "value", concept(reason), xsi_type="CD")
    else:
        val = cda.sub(criterion, "value", {cda.XSI_TYPE_ATTR: "CD", "nullFlavor": "NI"})
        cda.text_el(val, "originalText", "As needed")


def _no_known(ctx: Context, section: Section, table: Table) -> None:
    """emptyReason nil-known: "no known medications" (negated Medication Activity)."""
    row: Row = table.row(
        [
            "No known medications",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "None known (List emptyReason nil-known)",
            "",
        ]
    )
    entry = section.entry()
    sbadm = cda.fixed(
        entry,
        "substanceAdministration",
        {"classCode": "SBADM", "moodCode": "EVN", "negationInd": "true"},
    )
    cda.templates(sbadm, "2.16.840.1.113883.10.20.22.4.16", "2014-06-09")
    cda.ii(sbadm, ctx.uid("medications#nil-known"))
    cda.text_ref(sbadm, row.id)
    cda.status(sbadm, "active")
    cda.ivl_ts(sbadm, None, xsi_type=True)
    cda.fixed(sbadm, "doseQuantity", {"nullFlavor": "NA"})
    consumable = cda.sub(sbadm, "consumable")
    product = cda.fixed(consumable, "manufacturedProduct", {"classCode": "MANU"})
    cda.templates(product, "2.16.840.1.113883.10.20.22.4.23", "2014-06-09")
    material = cda.sub(product, "manufacturedMaterial")
    code = cda.fixed(material, "code", {"nullFlavor": "OTH"})
    ot = cda.sub(code, "originalText")
    cda.sub(ot, "reference", {"value": "#" + row.name_id})
    cda.code(code, "410942007", SNOMED, "Drug or medicament", "SNOMED CT", local="translation")
