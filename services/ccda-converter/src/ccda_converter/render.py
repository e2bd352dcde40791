"""CCD -> a clean, printable HTML page: patient banner, then each section's narrative table.

Only the CDA narrative block is rendered (what receiving systems show); its elements map to
plain HTML. Text is escaped by lxml; no attribute from the CCD is copied except table spans,
so a hostile CCD cannot inject markup or script.
"""

from __future__ import annotations

import functools

from lxml import etree, html
from lxml.html import builder as h

from ccda_converter.ns import XPATH_NS, v3

MAX_CCD_BYTES = 50 * 1024 * 1024
# soap-edge reads the CCDs it serves with max_xml_depth (64) x 4 = 256 levels, and libxml2 stops
# at 256 levels by itself without XML_PARSE_HUGE; the CCDs this converter writes are < 20 deep.
MAX_CCD_DEPTH = 256

CSS = """
body{font-family:Arial,Helvetica,sans-serif;margin:1.5em;color:#212b32;font-size:14px}
.banner{border:2px solid #005eb8;padding:.6em 1em;margin-bottom:1em;background:#f0f4f5}
.banner h1{margin:0 0 .3em 0;font-size:1.5em}
.banner dl{display:grid;grid-template-columns:max-content auto;gap:.15em 1em;margin:0}
.banner dt{font-weight:bold}
h2{color:#005eb8;border-bottom:1px solid #aeb7bd;margin-top:1.4em}
table{border-collapse:collapse;width:100%;margin:.4em 0}
caption{text-align:left;font-weight:bold;padding:.3em 0}
th,td{border:1px solid #aeb7bd;padding:.25em .4em;text-align:left;vertical-align:top}
th{background:#e8edee}
.meta{color:#4c6272;font-size:.9em}
@media print{h2{page-break-after:avoid}table{page-break-inside:auto}tr{page-break-inside:avoid}}
"""

_INLINE = {"content": "span", "sub": "sub", "sup": "sup", "caption": "caption"}
_BLOCK = {
    "paragraph": "p",
    "table": "table",
    "thead": "thead",
    "tbody": "tbody",
    "tfoot": "tfoot",
    "tr": "tr",
    "th": "th",
    "td": "td",
    "list": "ul",
    "item": "li",
    "br": "br",
}


class RenderError(ValueError):
    """The input is not a CDA document we can render."""


def _parser() -> etree.XMLParser:
    # A new parser per call: lxml parsers are not thread-safe and the thread executor shares
    # this module between threads. Parsing dominates; building the parser is cheap.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
    )


@functools.lru_cache(maxsize=8)
def _too_deep(max_depth: int) -> etree.XPath:
    # True when an element sits at depth max_depth + 1: /*/*/... evaluated in C.
    return etree.XPath("boolean(" + "/*" * (max_depth + 1) + ")")


def _depth_error(exc: etree.XMLSyntaxError) -> bool:
    """Whether libxml2 stopped at its own nesting cap ("Excessive depth in document: 256").

    The error that stopped the parse, not ``exc.error_log``: that log also holds the errors of
    earlier parses in the same thread.
    """
    return "excessive depth" in str(exc.msg).lower()


def parse_ccd(ccd_xml: bytes, *, max_depth: int = MAX_CCD_DEPTH) -> etree._Element:
    """Parse untrusted CDA XML or raise RenderError with a fixed message.

    No entities, no network, no DTD, no huge trees, bounded size and depth, and no DOCTYPE at all
    (CDA R2 documents have none; refusing it is the simplest defence against entity tricks). The
    messages never echo the parser's text: it quotes the input, and it goes back to the caller.
    """
    if len(ccd_xml) > MAX_CCD_BYTES:
        raise RenderError("CCD is larger than the 50 MB limit")
    deeper = f"CCD XML is nested deeper than {max_depth} levels"
    try:
        root = etree.fromstring(ccd_xml, _parser())
    except etree.XMLSyntaxError as exc:
        raise RenderError(deeper if _depth_error(exc) else "CCD is not well-formed XML") from None
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None:
        raise RenderError("CCD XML with a DOCTYPE is not accepted")
    if _too_deep(max_depth)(root):
        raise RenderError(deeper)
    if root.tag != v3("ClinicalDocument"):
        raise RenderError("XML root is not an HL7 CDA ClinicalDocument")
    return root


def _text(el: etree._Element | None) -> str:
    return " ".join("".join(el.itertext()).split()) if el is not None else ""


def _name(el: etree._Element | None) -> str:
    if el is None:
        return ""
    parts = [
        _text(c)
        for c in el
        if isinstance(c.tag, str)
        and etree.QName(c).localname in ("prefix", "given", "family", "suffix")
    ]
    return " ".join(p for p in parts if p) or _text(el)


def _date(value: str | None) -> str:
    if not value:
        return ""
    d = value
    out = d[:4]
    if len(d) >= 6:
        out += "-" + d[4:6]
    if len(d) >= 8:
        out += "-" + d[6:8]
    if len(d) >= 12:
        out += f" {d[8:10]}:{d[10:12]}"
    return out


def _convert(src: etree._Element, dst: etree._Element) -> None:
    """Copy narrative content into HTML: known elements mapped, others flattened to text."""
    if src.text:
        _append_text(dst, src.text)
    for child in src:
        if not isinstance(child.tag, str):
            if child.tail:
                _append_text(dst, child.tail)
            continue
        local = etree.QName(child).localname
        tag = _BLOCK.get(local) or _INLINE.get(local)
        if local == "list" and child.get("listType") == "ordered":
            tag = "ol"
        if tag is None:
            _append_text(dst, _text(child))
        else:
            out = etree.SubElement(dst, tag)
            style = child.get("styleCode") or ""
            if local == "content" and "Bold" in style:
                out.tag = "strong"
            for span in ("colspan", "rowspan"):
                value = child.get(span)
                if value and value.isdigit():
                    out.set(span, value)
            if tag != "br":
                _convert(child, out)
        if child.tail:
            _append_text(dst, child.tail)


def _append_text(dst: etree._Element, text: str) -> None:
    if len(dst):
        last = dst[-1]
        last.tail = (last.tail or "") + text
    else:
        dst.text = (dst.text or "") + text


def render_html(ccd_xml: bytes) -> str:
    """A printable HTML page for a CCD (raises RenderError for non-CDA input)."""
    root = parse_ccd(ccd_xml)
    ns = XPATH_NS
    title = _text(root.find("cda:title", ns)) or "Clinical document"
    patient_role = root.find("cda:recordTarget/cda:patientRole", ns)
    patient = patient_role.find("cda:patient", ns) if patient_role is not None else None
    name = _name(patient.find("cda:name", ns)) if patient is not None else ""
    banner_items: list[tuple[str, str]] = []
    if patient_role is not None:
        for ident in patient_role.findall("cda:id", ns):
            if ident.get("root") == "2.16.840.1.113883.2.1.4.1" and ident.get("extension"):
                banner_items.append(("NHS number", ident.get("extension") or ""))
    if patient is not None:
        birth = patient.find("cda:birthTime", ns)
        banner_items.append(("Born", _date(birth.get("value") if birth is not None else None)))
        gender = patient.find("cda:administrativeGenderCode", ns)
        if gender is not None:
            banner_items.append(
                ("Gender", gender.get("displayName") or gender.get("code") or "Unknown")
            )
    if patient_role is not None:
        addr = patient_role.find("cda:addr", ns)
        if addr is not None and addr.get("nullFlavor") is None:
            banner_items.append(
                (
                    "Address",
                    ", ".join(_text(a) for a in addr if isinstance(a.tag, str) and _text(a)),
                )
            )
        org = patient_role.find("cda:providerOrganization/cda:name", ns)
        if org is not None:
            banner_items.append(("GP practice", _text(org)))
    effective = root.find("cda:effectiveTime", ns)
    custodian = _text(
        root.find(
            "cda:custodian/cda:assignedCustodian/cda:representedCustodianOrganization/cda:name", ns
        )
    )
    body = h.BODY()
    banner = h.DIV(h.H1(name or "Unidentified patient"), **{"class": "banner"})
    dl = etree.SubElement(banner, "dl")
    for label, value in banner_items:
        etree.SubElement(dl, "dt").text = label
        etree.SubElement(dl, "dd").text = value or "-"
    body.append(banner)
    body.append(
        h.P(
            f"{title}. Created {_date(effective.get('value') if effective is not None else None)}"
            + (f" from the record held by {custodian}." if custodian else "."),
            **{"class": "meta"},
        )
    )
    for section in root.iterfind("cda:component/cda:structuredBody/cda:component/cda:section", ns):
        wrapper = etree.SubElement(body, "section")
        etree.SubElement(wrapper, "h2").text = _text(section.find("cda:title", ns)) or "Section"
        text = section.find("cda:text", ns)
        content = etree.SubElement(wrapper, "div")
        if text is not None:
            _convert(text, content)
    page = h.HTML(
        h.HEAD(
            h.META(charset="utf-8"), h.TITLE(f"{name} - {title}" if name else title), h.STYLE(CSS)
        ),
        body,
    )
    out: str = html.tostring(page, doctype="<!DOCTYPE html>", encoding="unicode", method="html")
    return out
