"""Observation value, interpretation, reference range and status builders (Results, Vitals)."""

from __future__ import annotations

import functools
from typing import Any, Final

from ccda_converter import cda
from ccda_converter.bundle import Resource, as_list, text_of
from ccda_converter.classify import value_key
from ccda_converter.codes import ACT_CODE, LOINC, OBS_INTERPRETATION, SNOMED, concept
from ccda_converter.context import Context
from ccda_converter.dates import display_date
from ccda_converter.template import E, Template

# ConceptMap-FC-ObservationStatus, restricted to the Result Status value set.
RESULT_STATUS: Final[dict[str, str]] = {
    "registered": "active",
    "preliminary": "active",
    "final": "completed",
    "amended": "completed",
    "corrected": "completed",
    "cancelled": "cancelled",
    "entered-in-error": "aborted",
}


def effective(ctx: Context, data: dict[str, Any]) -> str | None:
    value = data.get("effectiveDateTime")
    if value is None and isinstance(data.get("effectivePeriod"), dict):
        value = data["effectivePeriod"].get("start")
    if value is None:
        value = data.get("issued")
    return ctx.ts(value)


def effective_text(data: dict[str, Any]) -> str:
    value = data.get("effectiveDateTime")
    if value is None and isinstance(data.get("effectivePeriod"), dict):
        value = data["effectivePeriod"].get("start")
    return display_date(value if value is not None else data.get("issued"))


def value_text(data: dict[str, Any]) -> str:
    key = value_key(data)
    if key is None:
        return ""
    value = data[key]
    if key == "valueQuantity":
        return cda.quantity_text(value)
    if key == "valueCodeableConcept":
        return concept(value).text
    if key == "valueRange" and isinstance(value, dict):
        return f"{cda.quantity_text(value.get('low'))} - {cda.quantity_text(value.get('high'))}"
    if key == "valuePeriod" and isinstance(value, dict):
        return f"{display_date(value.get('start'))} - {display_date(value.get('end'))}"
    if isinstance(value, (dict, list)):
        return text_of(value.get("text")) if isinstance(value, dict) else ""
    return str(value)


def add_value(
    ctx: Context,
    obs: cda.Element,
    data: dict[str, Any],
    *,
    row_name: str,
    assertion_code: Any = None,
    key: str | None = "",
) -> cda.Element:
    """The typed <value> (returned). With no value[x]: the comment as ST, else a nullFlavor ST.
    ``key``: the observation's value_key when the caller already has it."""
    if key == "":
        key = value_key(data)
    if key == "valueQuantity" and isinstance(data[key], dict):
        q = data[key]
        comparator = text_of(q.get("comparator"))
        if comparator in ("<", "<=", ">", ">=") and cda.number(q.get("value")) is not None:
            ivl = cda.sub(obs, "value", {cda.XSI_TYPE_ATTR: "IVL_PQ"})
            bound = "high" if comparator.startswith("<") else "low"
            el = cda.pq(ivl, bound, q, xsi_type=None)
            el.set("inclusive", "true" if "=" in comparator else "false")
            return ivl
        return cda.pq(obs, "value", q)
    if key == "valueCodeableConcept":
        return cda.cd(obs, "value", concept(data[key]), xsi_type="CD")
    if key == "valueBoolean" and isinstance(data[key], bool):
        return cda.sub(
            obs, "value", {cda.XSI_TYPE_ATTR: "BL", "value": "true" if data[key] else "false"}
        )
    if key == "valueInteger" and isinstance(data[key], int):
        return cda.sub(obs, "value", {cda.XSI_TYPE_ATTR: "INT", "value": str(data[key])})
    if key == "valueRange" and isinstance(data[key], dict):
        ivl = cda.sub(obs, "value", {cda.XSI_TYPE_ATTR: "IVL_PQ"})
        for bound in ("low", "high"):
            q = data[key].get(bound)
            if isinstance(q, dict) and cda.number(q.get("value")) is not None:
                cda.pq(ivl, bound, q, xsi_type=None)
        return ivl
    if key == "valueDateTime" and ctx.ts(data[key]):
        return cda.sub(obs, "value", {cda.XSI_TYPE_ATTR: "TS", "value": ctx.ts(data[key]) or ""})
    if key is not None:
        text = value_text(data)
        if text:
            return cda.text_el(obs, "value", text, {cda.XSI_TYPE_ATTR: "ST"})
    if assertion_code is not None:
        return cda.cd(obs, "value", assertion_code, ref=row_name, xsi_type="CD")
    comment = text_of(data.get("comment"))
    if comment:
        return cda.text_el(obs, "value", comment, {cda.XSI_TYPE_ATTR: "ST"})
    return cda.sub(obs, "value", {cda.XSI_TYPE_ATTR: "ST", "nullFlavor": "NA"})


def interpretation(obs: cda.Element, data: dict[str, Any]) -> str:
    c = concept(data.get("interpretation"))
    for code in c.codes:
        if code.oid == OBS_INTERPRETATION:
            cda.code(
                obs,
                code.code,
                OBS_INTERPRETATION,
                code.display or None,
                "HL7 ObservationInterpretation",
                local="interpretationCode",
            )
            break
    return c.text


def range_labels(data: dict[str, Any]) -> list[tuple[dict[str, Any], str, str]]:
    """(referenceRange, its text, its narrative label) for each range worth showing.

    A bound without a unit of its own is in the unit of the observation's value: GP Connect
    pathology sends "low 200, high 800" beside a value of 1000 ng/L (FHIR STU3
    Observation.referenceRange: the range applies to the value). Such bounds are returned with
    the value's unit, so the narrative and the IVL_PQ carry it (not "1", the unit of a pure
    number)."""
    out: list[tuple[dict[str, Any], str, str]] = []
    raw = data.get("referenceRange")
    if raw is None:
        return out
    unit: dict[str, Any] | None = None
    for rr in as_list(raw):
        if not isinstance(rr, dict):
            continue
        if _unitless_bound(rr):
            if unit is None:
                unit = _value_unit(data)
            if unit:
                rr = {**rr, **{b: {**rr[b], **unit} for b in _BOUNDS if _unitless(rr.get(b))}}
        text = text_of(rr.get("text"))
        label = text or " - ".join(
            x for x in (cda.quantity_text(rr.get("low")), cda.quantity_text(rr.get("high"))) if x
        )
        if label:
            out.append((rr, text, label))
    return out


_BOUNDS: Final = ("low", "high")
_UNIT_KEYS: Final = ("unit", "system", "code")


def _unitless(q: Any) -> bool:
    """A Quantity with a value but neither a unit nor a unit code."""
    return (
        isinstance(q, dict)
        and q.get("value") is not None
        and not text_of(q.get("unit"))
        and not text_of(q.get("code"))
    )


def _unitless_bound(rr: dict[str, Any]) -> bool:
    return _unitless(rr.get("low")) or _unitless(rr.get("high"))


def _value_unit(data: dict[str, Any]) -> dict[str, Any]:
    """The unit fields (unit, system, code) of the observation's value: valueQuantity, else a
    bound of valueRange; {} when the value has no unit."""
    candidates = [data.get("valueQuantity")]
    value_range = data.get("valueRange")
    if isinstance(value_range, dict):
        candidates += [value_range.get("low"), value_range.get("high")]
    for q in candidates:
        if isinstance(q, dict) and (text_of(q.get("unit")) or text_of(q.get("code"))):
            return {k: q[k] for k in _UNIT_KEYS if k in q}
    return {}


def reference_ranges(obs: cda.Element, ranges: list[tuple[dict[str, Any], str, str]]) -> None:
    """referenceRange elements for the ranges from ``range_labels``."""
    for rr, text, label in ranges:
        low, high = rr.get("low"), rr.get("high")
        low_ok = isinstance(low, dict) and cda.number(low.get("value")) is not None
        high_ok = isinstance(high, dict) and cda.number(high.get("value")) is not None
        values: dict[str, str | None] = {"text": text}
        if low_ok:
            values["lv"], values["lu"], low_tr = cda.pq_parts(low)  # type: ignore[arg-type]
        if high_ok:
            values["hv"], values["hu"], high_tr = cda.pq_parts(high)  # type: ignore[arg-type]
        if not (low_ok or high_ok):
            # CONF:1198-32175: observationRange SHALL contain a value.
            values["label"] = label
        _rr, ivl = _range_template(bool(text), low_ok, high_ok).stamp(obs, values)
        if low_ok and low_tr:
            cda.pq_translation(ivl[0], values["lv"] or "", low_tr)
        if high_ok and high_tr:
            cda.pq_translation(ivl[-1], values["hv"] or "", high_tr)


@functools.cache
def _range_template(text: bool, low: bool, high: bool) -> Template:
    """referenceRange/observationRange with optional text and an IVL_PQ (or ST) value."""
    orange = E.observationRange()
    if text:
        orange.append(E.text("$text"))
    if low or high:
        ivl = E.value({cda.XSI_TYPE_ATTR: "IVL_PQ", "tpl-as": "value"})
        if low:
            ivl.append(E.low(value="$lv", unit="$lu"))
        if high:
            ivl.append(E.high(value="$hv", unit="$hu"))
        orange.append(ivl)
    else:
        orange.append(E.value({cda.XSI_TYPE_ATTR: "ST", "tpl-as": "value"}, "$label"))
    return Template(E.referenceRange(orange), handles=("value",))


def performer_ref(data: dict[str, Any]) -> Any:
    for p in as_list(data.get("performer")):
        if isinstance(p, dict):
            return p.get("actor", p)
    return None


def result_observation(
    ctx: Context,
    parent: cda.Element,
    res: Resource,
    row_id: str,
    name_id: str,
    *,
    assertion: bool = False,
    comment_ref: str | None = None,
) -> cda.Element:
    """Result Observation (V3) 4.2 in a new <component> of ``parent``. ``assertion``: a coded
    finding without a value is carried as code ASSERTION + value = the finding (HL7 v3 assertion
    pattern). ``comment_ref``: the narrative cell of a Comment Activity (4.64).

    The common shapes (a numeric UCUM value, an HL7 interpretation, the comment) are part of the
    template; the code and any other value are built and moved into place."""
    data = res.data
    code = concept(data.get("code"))
    vkey = value_key(data)
    finding = assertion and vkey is None and bool(code.codes)
    when = effective(ctx, data)
    values: dict[str, str | None] = {
        "id": ctx.entry_uid(res),
        "ref": "#" + row_id,
        "when": when,
        "cref": comment_ref,
    }
    # The value, when it has one of the common shapes, is a slot of the template: "pq" (a numeric
    # UCUM quantity), "st" (text) or "na" (no value at all); None: built by ``add_value``.
    kind: str | None = None
    if vkey == "valueQuantity":
        quantity = data["valueQuantity"]
        if (
            isinstance(quantity, dict)
            and quantity.get("comparator") not in _COMPARATORS
            and cda.number(quantity.get("value")) is not None
        ):
            value, unit, translation = cda.pq_parts(quantity)
            if not translation:
                kind = "pq"
                values["value"] = value
                values["unit"] = unit
    if kind is None and not finding:
        text = _plain_value(ctx, data, vkey)
        if text is not None:
            kind = "st" if text else "na"
            values["st"] = text or None
    interp = next(
        (c for c in concept(data.get("interpretation")).codes if c.oid == OBS_INTERPRETATION),
        None,
    )
    _comp, obs, text_el = _result_template(
        finding,
        RESULT_STATUS.get(text_of(data.get("status")), "completed"),
        when is not None,
        kind,
        comment_ref is not None,
    ).stamp(parent, values)
    if not finding:
        cda.cd(obs, "code", code, ref=name_id, prefer=_LOINC_FIRST, before=text_el)
    # After the value: interpretationCode, author, then the comment (the template's last child).
    anchor = obs[-1] if comment_ref is not None else None
    if kind is None:
        el = add_value(
            ctx, obs, data, row_name=name_id, assertion_code=code if finding else None, key=vkey
        )
        if anchor is not None:
            anchor.addprevious(el)
    if interp is not None:
        el = cda.code(
            obs,
            interp.code,
            OBS_INTERPRETATION,
            interp.display or None,
            "HL7 ObservationInterpretation",
            local="interpretationCode",
        )
        if anchor is not None:
            anchor.addprevious(el)
    ctx.author(obs, performer_ref(data), ctx.ts(data.get("issued")), res, before=anchor)
    return obs


def _plain_value(ctx: Context, data: dict[str, Any], key: str | None) -> str | None:
    """What ``add_value`` writes as an ST for an observation that is not a coded finding: the
    text ('' for the nullFlavor NA value), or None when the value needs its own data type."""
    if key is not None:
        value = data[key]
        if key in _TYPED_DICT_VALUES and isinstance(value, dict):
            return None
        if (
            key == "valueCodeableConcept"
            or (key == "valueBoolean" and isinstance(value, bool))
            or (key == "valueInteger" and isinstance(value, int))
            or (key == "valueDateTime" and ctx.ts(value))
        ):
            return None
        text = value_text(data)
        if text:
            return text
    return text_of(data.get("comment"))


_TYPED_DICT_VALUES: Final = frozenset({"valueQuantity", "valueRange"})
_LOINC_FIRST: Final = (LOINC, SNOMED)
_COMPARATORS: Final = frozenset({"<", "<=", ">", ">="})


@functools.cache
def _result_template(
    assertion: bool, status: str, timed: bool, value: str | None, comment: bool
) -> Template:
    """component/observation (4.2). ``assertion``: code ASSERTION, else the code is built and
    goes before <text>. ``value``: "pq" (PQ from slots), "st" (ST text slot), "na" (ST
    nullFlavor NA) or None (built by the caller). ``comment``: a Comment Activity (4.64) as the
    last child (interpretation and author are inserted before it)."""
    code = [cda.p_code("ASSERTION", ACT_CODE, "Assertion", "HL7ActCode")] if assertion else []
    tail = []
    if value == "pq":
        tail.append(E.value({cda.XSI_TYPE_ATTR: "PQ", "value": "$value", "unit": "$unit"}))
    elif value == "st":
        tail.append(E.value({cda.XSI_TYPE_ATTR: "ST"}, "$st"))
    elif value == "na":
        tail.append(E.value({cda.XSI_TYPE_ATTR: "ST", "nullFlavor": "NA"}))
    if comment:
        tail.append(
            E.entryRelationship(
                {"typeCode": "SUBJ", "inversionInd": "true"},
                E.act(
                    {"classCode": "ACT", "moodCode": "EVN"},
                    cda.p_template("2.16.840.1.113883.10.20.22.4.64"),
                    cda.p_code("48767-8", LOINC, "Annotation comment", "LOINC"),
                    cda.p_text_ref("cref"),
                ),
            )
        )
    return Template(
        E.component(
            E.observation(
                {"classCode": "OBS", "moodCode": "EVN", "tpl-as": "obs"},
                E.templateId(root="2.16.840.1.113883.10.20.22.4.2", extension="2015-08-01"),
                E.templateId(root="2.16.840.1.113883.10.20.22.4.2"),
                E.id(root="$id"),
                *code,
                E.text({"tpl-as": "text"}, E.reference(value="$ref")),
                E.statusCode(code=status),
                E.effectiveTime(value="$when") if timed else E.effectiveTime(nullFlavor="UNK"),
                *tail,
            )
        ),
        handles=("obs", "text"),
    )
