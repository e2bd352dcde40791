"""Observation value, interpretation, reference range and status builders (Results, Vitals)."""

from __future__ import annotations

from typing import Any, Final

from ccda_converter import cda
from ccda_converter.bundle import Resource, as_list, text_of
from ccda_converter.classify import value_key
from ccda_converter.codes import OBS_INTERPRETATION, concept
from ccda_converter.context import Context
from ccda_converter.dates import display_date

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
) -> None:
    """The typed <value>. With no value[x]: the comment as ST, else a nullFlavor ST."""
    key = value_key(data)
    if key == "valueQuantity" and isinstance(data[key], dict):
        q = data[key]
        comparator = text_of(q.get("comparator"))
        if comparator in ("<", "<=", ">", ">=") and cda.number(q.get("value")) is not None:
            ivl = cda.sub(obs, "value", {cda.XSI_TYPE_ATTR: "IVL_PQ"})
            bound = "high" if comparator.startswith("<") else "low"
            el = cda.pq(ivl, bound, q, xsi_type=None)
            el.set("inclusive", "true" if "=" in comparator else "false")
            return
        cda.pq(obs, "value", q)
        return
    if key == "valueCodeableConcept":
        cda.cd(obs, "value", concept(data[key]), xsi_type="CD")
        return
    if key == "valueBoolean" and isinstance(data[key], bool):
        cda.sub(obs, "value", {cda.XSI_TYPE_ATTR: "BL", "value": "true" if data[key] else "false"})
        return
    if key == "valueInteger" and isinstance(data[key], int):
        cda.sub(obs, "value", {cda.XSI_TYPE_ATTR: "INT", "value": str(data[key])})
        return
    if key == "valueRange" and isinstance(data[key], dict):
        ivl = cda.sub(obs, "value", {cda.XSI_TYPE_ATTR: "IVL_PQ"})
        for bound in ("low", "high"):
            q = data[key].get(bound)
            if isinstance(q, dict) and cda.number(q.get("value")) is not None:
                cda.pq(ivl, bound, q, xsi_type=None)
        return
    if key == "valueDateTime" and ctx.ts(data[key]):
        cda.sub(obs, "value", {cda.XSI_TYPE_ATTR: "TS", "value": ctx.ts(data[key]) or ""})
        return
    if key is not None:
        text = value_text(data)
        if text:
            cda.text_el(obs, "value", text, {cda.XSI_TYPE_ATTR: "ST"})
            return
    if assertion_code is not None:
        cda.cd(obs, "value", assertion_code, ref=row_name, xsi_type="CD")
        return
    comment = text_of(data.get("comment"))
    if comment:
        cda.text_el(obs, "value", comment, {cda.XSI_TYPE_ATTR: "ST"})
    else:
        cda.sub(obs, "value", {cda.XSI_TYPE_ATTR: "ST", "nullFlavor": "NA"})


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


def reference_ranges(obs: cda.Element, data: dict[str, Any]) -> list[str]:
    texts = []
    for rr in as_list(data.get("referenceRange")):
        if not isinstance(rr, dict):
            continue
        low, high = rr.get("low"), rr.get("high")
        text = text_of(rr.get("text"))
        label = text or " - ".join(
            x for x in (cda.quantity_text(low), cda.quantity_text(high)) if x
        )
        if not label:
            continue
        texts.append(label)
        ref = cda.sub(obs, "referenceRange")
        orange = cda.sub(ref, "observationRange")
        if text:
            cda.text_el(orange, "text", text)
        low_ok = isinstance(low, dict) and cda.number(low.get("value")) is not None
        high_ok = isinstance(high, dict) and cda.number(high.get("value")) is not None
        if low_ok or high_ok:
            ivl = cda.sub(orange, "value", {cda.XSI_TYPE_ATTR: "IVL_PQ"})
            if low_ok:
                cda.pq(ivl, "low", low, xsi_type=None)  # type: ignore[arg-type]
            if high_ok:
                cda.pq(ivl, "high", high, xsi_type=None)  # type: ignore[arg-type]
        else:
            # CONF:1198-32175: observationRange SHALL contain a value.
            cda.text_el(orange, "value", label, {cda.XSI_TYPE_ATTR: "ST"})
    return texts


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
) -> cda.Element:
    """Result Observation (V3) 4.2. ``assertion``: a coded finding without a value is carried as
    code ASSERTION + value = the finding (HL7 v3 assertion pattern)."""
    data = res.data
    obs = cda.fixed(parent, "observation", {"classCode": "OBS", "moodCode": "EVN"})
    cda.templates(obs, "2.16.840.1.113883.10.20.22.4.2", "2015-08-01")
    ctx.entry_id(obs, res)
    code = ctx.concept(data.get("code"))
    finding = assertion and value_key(data) is None and bool(code.codes)
    if finding:
        cda.code(obs, "ASSERTION", "2.16.840.1.113883.5.4", "Assertion", "HL7ActCode")
    else:
        cda.cd(
            obs,
            "code",
            code,
            ref=name_id,
            prefer=("2.16.840.1.113883.6.1", "2.16.840.1.113883.6.96"),
        )
    cda.text_ref(obs, row_id)
    cda.status(obs, RESULT_STATUS.get(text_of(data.get("status")), "completed"))
    cda.ts(obs, "effectiveTime", effective(ctx, data))
    add_value(ctx, obs, data, row_name=name_id, assertion_code=code if finding else None)
    interpretation(obs, data)
    ctx.author(obs, performer_ref(data), ctx.ts(data.get("issued")), res)
    return obs
