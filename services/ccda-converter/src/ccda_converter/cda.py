"""Small, fast CDA element builders on lxml SubElement (no string templates, no xmltodict)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from threading import get_ident
from typing import Any, Final, TypeAlias

from lxml import etree

from ccda_converter.codes import SNOMED, Code, Concept, primary
from ccda_converter.ns import PROTO_NSMAP, V3_PREFIX, XSI_TYPE
from ccda_converter.template import E, adopt

_SE = etree.SubElement
_V = V3_PREFIX
XSI_TYPE_ATTR = XSI_TYPE

Element: TypeAlias = etree._Element


# Prototype elements for fixed attribute sets. Setting attributes is the most expensive part of
# building the tree with lxml (several times a bare SubElement); copying a prototype is cheaper
# and yields the same XML (lxml drops the redundant namespace declarations on append).
_PROTO: dict[Any, Element] = {}


def fixed(parent: Element, local: str, attrib: dict[str, str]) -> Element:
    """A child element whose attributes repeat across the document (templateIds, codes...)."""
    key = (local, *attrib.items())
    proto = _PROTO.get(key)
    if proto is None:
        proto = etree.Element(_V + local, attrib, nsmap=PROTO_NSMAP)
        if len(_PROTO) < 50_000:
            _PROTO[key] = proto
    el = proto.__copy__()
    parent.append(el)
    return el


def sub(parent: Element, local: str, attrib: dict[str, str] | None = None) -> Element:
    """A CDA child element (v3 namespace)."""
    if attrib:
        return _SE(parent, _V + local, attrib)
    return _SE(parent, _V + local)


def text_el(
    parent: Element, local: str, text: str, attrib: dict[str, str] | None = None
) -> Element:
    """A CDA child element with text content."""
    el = sub(parent, local, attrib)
    el.text = text
    return el


def templates(parent: Element, root: str, extension: str | None = None) -> None:
    """templateIds for a template. C-CDA R2.1 Vol 1 "Design Considerations" (CONF:1198-32936):
    a template that had an R1.1 version carries the versioned id and the R1.1 root without an
    extension."""
    if extension:
        fixed(parent, "templateId", {"root": root, "extension": extension})
    fixed(parent, "templateId", {"root": root})


def template_only(parent: Element, root: str, extension: str | None = None) -> None:
    """A single templateId (templates that did not exist in C-CDA R1.1)."""
    attrib = {"root": root}
    if extension:
        attrib["extension"] = extension
    fixed(parent, "templateId", attrib)


def ii(parent: Element, root: str, extension: str | None = None, local: str = "id") -> Element:
    """An II (instance identifier)."""
    if extension:
        return _SE(parent, _V + local, {"root": root, "extension": extension})
    return _SE(parent, _V + local, {"root": root})


def null_ii(parent: Element, flavor: str = "UNK", local: str = "id") -> Element:
    """An II with only a nullFlavor."""
    return _SE(parent, _V + local, {"nullFlavor": flavor})


def _code_attrib(
    code_value: str,
    system: str,
    display: str | None,
    system_name: str | None,
    xsi_type: str | None,
) -> dict[str, str]:
    """A fixed code's attributes, in the order every code element is written."""
    attrib: dict[str, str] = {}
    if xsi_type:
        attrib[XSI_TYPE] = xsi_type
    attrib["code"] = code_value
    attrib["codeSystem"] = system
    if system_name:
        attrib["codeSystemName"] = system_name
    if display:
        attrib["displayName"] = display
    return attrib


def code(
    parent: Element,
    code_value: str,
    system: str,
    display: str | None = None,
    system_name: str | None = None,
    local: str = "code",
    xsi_type: str | None = None,
) -> Element:
    """A fixed code (template-mandated values)."""
    key = (local, code_value, system, display, system_name, xsi_type)
    proto = _CODE_PROTO.get(key)
    if proto is not None:
        el = proto.__copy__()
        parent.append(el)
        return el
    attrib = _code_attrib(code_value, system, display, system_name, xsi_type)
    el = fixed(parent, local, attrib)
    proto = _PROTO.get((local, *attrib.items()))
    if proto is not None and len(_CODE_PROTO) < 50_000:
        _CODE_PROTO[key] = proto
    return el


# ``code`` prototypes by its arguments (the same elements as in _PROTO, without building the
# attribute dict first).
_CODE_PROTO: dict[tuple[str | None, ...], Element] = {}


def _translation(parent: Element, c: Code) -> None:
    attrib = {"code": c.code, "codeSystem": c.oid, "codeSystemName": c.system_name}
    if c.display:
        attrib["displayName"] = c.display
    fixed(parent, "translation", attrib)


def cd(
    parent: Element,
    local: str,
    concept: Concept,
    *,
    ref: str | None = None,
    xsi_type: str | None = None,
    force_null: str | None = None,
    prefer: tuple[str, ...] = (SNOMED,),
    extra: Iterable[Code] = (),
    before: Element | None = None,
) -> Element:
    """A CD/CE from a normalised CodeableConcept.

    The preferred coding (SNOMED first) goes in @code, every other coding in <translation>, the
    text in <originalText> (a reference to the narrative when given). ``force_null`` is for slots
    whose value set we cannot meet (RxNorm, CVX): @nullFlavor="OTH" and every coding as a
    translation (HL7 C-CDA on FHIR mappingGuidance). ``before``: insert before that child of
    ``parent`` instead of appending.

    Records repeat the same codes (one drug, one test, many times): the element is built once and
    later copies are stamped from it (only the originalText reference differs)."""
    extra = tuple(extra) if extra else ()
    key = (
        local,
        xsi_type,
        force_null,
        prefer,
        extra,
        bool(ref),
        "" if ref else concept.text,  # with a reference the text is not written
        concept.signature(),
    )
    found = _CD_PROTO.get(key)
    if found is not None:
        proto, reference, owner = found
        if ref and owner != get_ident():
            # Another thread's prototype: never written to from here.
            el = proto.__copy__()
            el[0][0].set("value", "#" + ref)
        else:
            if ref:
                reference.set("value", "#" + ref)
            el = proto.__copy__()
        if before is not None:
            before.addprevious(el)
        else:
            parent.append(el)
        return el
    el = _cd(parent, local, concept, ref, xsi_type, force_null, prefer, extra)
    if before is not None:
        # Built in place, then moved into schema order (same document: a cheap relink).
        before.addprevious(el)
    if len(_CD_PROTO) >= _CD_PROTO_LIMIT:
        _CD_PROTO.clear()
    proto = adopt(el)
    # The originalText reference (the only part that differs between copies) is written into
    # the prototype before each copy, by the thread that created it.
    _CD_PROTO[key] = (proto, proto[0][0] if ref else proto, get_ident())
    return el


# CD prototypes by content (process-wide, bounded: cleared when full; dict operations are atomic,
# prototypes are only ever copied, and written only by the thread that created them).
_CD_PROTO: dict[tuple[Any, ...], tuple[Element, Element, int]] = {}
_CD_PROTO_LIMIT: Final = 4096


def _cd(
    parent: Element,
    local: str,
    concept: Concept,
    ref: str | None,
    xsi_type: str | None,
    force_null: str | None,
    prefer: tuple[str, ...],
    extra: tuple[Code, ...],
) -> Element:
    attrib: dict[str, str] = {}
    if xsi_type:
        attrib[XSI_TYPE] = xsi_type
    chosen = None if force_null else primary(concept, prefer)
    if chosen is not None:
        attrib["code"] = chosen.code
        attrib["codeSystem"] = chosen.oid
        attrib["codeSystemName"] = chosen.system_name
        if chosen.display:
            attrib["displayName"] = chosen.display
    elif force_null:
        attrib["nullFlavor"] = force_null
    elif concept.null_flavor:
        attrib["nullFlavor"] = concept.null_flavor
    elif concept.codes or concept.unknown or concept.text or ref:
        attrib["nullFlavor"] = "OTH"
    else:
        attrib["nullFlavor"] = "UNK"
    el = _SE(parent, _V + local, attrib)
    if ref:
        ot = _SE(el, _V + "originalText")
        _SE(ot, _V + "reference", {"value": "#" + ref})
    elif concept.text:
        _SE(el, _V + "originalText").text = concept.text
    for c in concept.codes:
        if c is not chosen:
            _translation(el, c)
    for c in extra:
        _translation(el, c)
    for system, code_value, display in concept.unknown:
        # No OID for this system: never an empty @codeSystem; keep the coding readable instead.
        tr = _SE(el, _V + "translation", {"nullFlavor": "OTH"})
        _SE(tr, _V + "originalText").text = f"{display or code_value} [{code_value}] ({system})"
    return el


def status(parent: Element, value: str) -> Element:
    """statusCode."""
    return fixed(parent, "statusCode", {"code": value})


def ts(parent: Element, local: str, value: str | None, null: str = "UNK") -> Element:
    """A TS with @value, or a nullFlavor."""
    if value:
        return _SE(parent, _V + local, {"value": value})
    return _SE(parent, _V + local, {"nullFlavor": null})


def ivl_ts(
    parent: Element,
    low: str | None,
    high: str | None = None,
    *,
    local: str = "effectiveTime",
    low_null: str | None = "UNK",
    high_null: str | None = None,
    xsi_type: bool = False,
) -> Element:
    """An IVL_TS with low (value or nullFlavor) and an optional high."""
    el = _SE(parent, _V + local, {XSI_TYPE: "IVL_TS"}) if xsi_type else _SE(parent, _V + local)
    if low:
        _SE(el, _V + "low", {"value": low})
    elif low_null:
        _SE(el, _V + "low", {"nullFlavor": low_null})
    if high:
        _SE(el, _V + "high", {"value": high})
    elif high_null:
        _SE(el, _V + "high", {"nullFlavor": high_null})
    return el


def text_ref(parent: Element, ref: str) -> Element:
    """<text><reference value="#ref"/></text>: the entry's link to its narrative row."""
    el = _SE(parent, _V + "text")
    _SE(el, _V + "reference", {"value": "#" + ref})
    return el


# ---- prototype parts (for Templates; same attribute order as the builders above) ---------------


def p_templates(root: str, extension: str | None = None) -> list[Element]:
    """templateId parts as ``templates`` writes them."""
    if extension:
        return [E.templateId(root=root, extension=extension), E.templateId(root=root)]
    return [E.templateId(root=root)]


def p_template(root: str, extension: str | None = None) -> Element:
    """A single templateId part as ``template_only`` writes it."""
    if extension:
        return E.templateId(root=root, extension=extension)
    return E.templateId(root=root)


def p_code(
    code_value: str,
    system: str,
    display: str | None = None,
    system_name: str | None = None,
    local: str = "code",
    xsi_type: str | None = None,
) -> Element:
    """A fixed code part as ``code`` writes it."""
    attrib = _code_attrib(code_value, system, display, system_name, xsi_type)
    return E(local, attrib)


def p_text_ref(slot: str = "ref") -> Element:
    """<text><reference value="$slot"/></text>; the slot value includes the '#'."""
    return E.text(E.reference(value="$" + slot))


def p_ivl(
    low: bool,
    high: bool,
    *,
    local: str = "effectiveTime",
    low_null: str | None = "UNK",
    high_null: str | None = None,
    xsi_type: bool = False,
    low_slot: str = "low",
    high_slot: str = "high",
) -> Element:
    """An ``ivl_ts`` part: low/high from slots when present, else their nullFlavors."""
    el = E(local, {XSI_TYPE: "IVL_TS"}) if xsi_type else E(local)
    if low:
        el.append(E.low(value="$" + low_slot))
    elif low_null:
        el.append(E.low(nullFlavor=low_null))
    if high:
        el.append(E.high(value="$" + high_slot))
    elif high_null:
        el.append(E.high(nullFlavor=high_null))
    return el


def p_ts(local: str, timed: bool, slot: str = "when", null: str = "UNK") -> Element:
    """A ``ts`` part: @value from the slot, or the nullFlavor."""
    return E(local, value="$" + slot) if timed else E(local, nullFlavor=null)


# ---- quantities -------------------------------------------------------------------------------

# Free-text units seen in GP Connect data -> UCUM (case-insensitive keys).
_UNIT_MAP = {
    "mmhg": "mm[Hg]",
    "mm hg": "mm[Hg]",
    "kg": "kg",
    "g": "g",
    "gram": "g",
    "grams": "g",
    "mg": "mg",
    "microgram": "ug",
    "cm": "cm",
    "mm": "mm",
    "m": "m",
    "metres": "m",
    "c": "Cel",
    "°c": "Cel",
    "degc": "Cel",
    "deg c": "Cel",
    "%": "%",
    "breaths per minute": "/min",
    "breaths/min": "/min",
    "per minute": "/min",
    "beats per minute": "/min",
    "beats/min": "/min",
    "bpm": "/min",
    "/min": "/min",
    "10^9/l": "10*9/L",
    "10*9/l": "10*9/L",
    "10^12/l": "10*12/L",
    "10*12/l": "10*12/L",
    "iu/l": "[IU]/L",
    "miu/l": "m[IU]/L",
    "mu/l": "m[U]/L",
    "u/l": "U/L",
    "umol/l": "umol/L",
    "mmol/l": "mmol/L",
    "nmol/l": "nmol/L",
    "pmol/l": "pmol/L",
    "mmol/mol": "mmol/mol",
    "g/l": "g/L",
    "g/dl": "g/dL",
    "mg/l": "mg/L",
    "ug/l": "ug/L",
    "ng/l": "ng/L",
    "ng/ml": "ng/mL",
    "fl": "fL",
    "pg": "pg",
    "ml": "mL",
    "l": "L",
    "kg/m2": "kg/m2",
    "kg/m^2": "kg/m2",
    "units/week": "{units}/wk",
    "units per week": "{units}/wk",
    "ml/min/1.73m2": "mL/min/{1.73_m2}",
    "mm/h": "mm/h",
    "mm/hr": "mm/h",
    "s": "s",
    "sec": "s",
    "seconds": "s",
    "ratio": "{ratio}",
    "day": "d",
    "days": "d",
    "week": "wk",
    "weeks": "wk",
    "hour": "h",
    "hours": "h",
    "min": "min",
    "minutes": "min",
}
_UCUM_SAFE = re.compile(r"^[A-Za-z0-9%*/.\[\]{}^_\-]+$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def ucum(quantity: dict[str, Any]) -> str | None:
    """A UCUM unit for a FHIR Quantity, or None when the unit is not UCUM-expressible."""
    key = (quantity.get("system"), quantity.get("code"), quantity.get("unit"))
    try:
        return _UCUM_OF[key]
    except KeyError:
        pass
    except TypeError:  # an object or array where a string belongs: not cacheable
        return _ucum(*key)
    found = _UCUM_OF[key] = _ucum(*key)
    if len(_UCUM_OF) > 4096:
        _UCUM_OF.clear()
    return found


# ``ucum`` by (system, code, unit): records repeat a handful of units (bounded, process-wide).
_UCUM_OF: dict[tuple[Any, Any, Any], str | None] = {}


def _ucum(system: Any, unit_code: Any, unit: Any) -> str | None:
    if (
        isinstance(system, str)
        and system.strip() == "http://unitsofmeasure.org"
        and isinstance(unit_code, str)
        and _UCUM_SAFE.match(unit_code.strip())
    ):
        return unit_code.strip()
    if not isinstance(unit, str):
        unit = unit_code if isinstance(unit_code, str) and system is None else None
    if not isinstance(unit, str) or not unit.strip():
        return None
    key = unit.strip().lower()
    if key in _UNIT_MAP:
        return _UNIT_MAP[key]
    return None


def number(value: Any) -> str | None:
    """A decimal literal for a FHIR decimal (numbers, or numeric strings in hand-written data)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return value.strip()
    return None


def unit_label(quantity: dict[str, Any]) -> str:
    """The human unit of a Quantity for narrative."""
    unit = quantity.get("unit")
    if isinstance(unit, str) and unit.strip():
        return unit.strip()
    unit_code = quantity.get("code")
    return unit_code.strip() if isinstance(unit_code, str) else ""


def pq_parts(quantity: dict[str, Any], countable_ok: bool = False) -> tuple[str, str | None, str]:
    """What ``pq`` writes for a Quantity with a numeric value: (value, @unit or None, text of
    the nullFlavor translation or ''). The value must be numeric (``number`` not None)."""
    value = number(quantity.get("value"))
    if value is None:
        raise ValueError("pq_parts needs a Quantity with a numeric value")
    unit = ucum(quantity)
    if unit:
        return value, unit, ""
    label_text = unit_label(quantity)
    if not label_text:
        return value, "1", ""
    return value, None, "" if countable_ok else label_text


def pq(
    parent: Element,
    local: str,
    quantity: dict[str, Any],
    *,
    xsi_type: str | None = "PQ",
    countable_ok: bool = False,
) -> Element:
    """A PQ from a FHIR Quantity. UCUM units go in @unit; other units (dose forms such as
    'tablet', free text) keep their text in a nullFlavor translation (mappingGuidance: non-UCUM
    unit -> PQ translation). With ``countable_ok`` a dose-form unit is simply omitted, as C-CDA
    doseQuantity expects for countable products (e.g. 1 tablet: value="1", no unit)."""
    # Records repeat the same quantities (doses, vital signs): stamped from ``fixed`` prototypes.
    attrib: dict[str, str] = {}
    if xsi_type:
        attrib[XSI_TYPE] = xsi_type
    if number(quantity.get("value")) is None:
        attrib["nullFlavor"] = "UNK"
        return fixed(parent, local, attrib)
    value, unit, translation = pq_parts(quantity, countable_ok)
    attrib["value"] = value
    if unit:
        attrib["unit"] = unit
    el = fixed(parent, local, attrib)
    if translation:
        pq_translation(el, value, translation)
    return el


def pq_translation(el: Element, value: str, text: str) -> None:
    """The nullFlavor translation carrying a non-UCUM unit as text."""
    tr = _SE(el, _V + "translation", {"value": value, "nullFlavor": "OTH"})
    _SE(tr, _V + "originalText").text = text


def quantity_text(quantity: Any) -> str:
    """'5.7 10*9/L' for narrative."""
    if not isinstance(quantity, dict):
        return ""
    value = quantity.get("value")
    # The value's type is part of the key: 1 == 1.0 == True, but their texts differ.
    key = (
        value.__class__,
        value,
        quantity.get("comparator"),
        quantity.get("unit"),
        quantity.get("code"),
    )
    try:
        return _QUANTITY_TEXT[key]
    except KeyError:
        pass
    except TypeError:  # an object or array where a string or number belongs
        return _quantity_text(quantity)
    text = _QUANTITY_TEXT[key] = _quantity_text(quantity)
    if len(_QUANTITY_TEXT) > 16384:
        _QUANTITY_TEXT.clear()
    return text


# ``quantity_text`` by (type of value, value, comparator, unit, code) (bounded, process-wide).
_QUANTITY_TEXT: dict[tuple[Any, ...], str] = {}


def _quantity_text(quantity: dict[str, Any]) -> str:
    value = quantity.get("value")
    comparator = quantity.get("comparator")
    parts = []
    if isinstance(comparator, str):
        parts.append(comparator)
    if value is not None and not isinstance(value, (dict, list)):
        parts.append(str(value))
    unit = unit_label(quantity)
    if unit:
        parts.append(unit)
    return " ".join(parts) if len(parts) > 1 and isinstance(comparator, str) else " ".join(parts)
