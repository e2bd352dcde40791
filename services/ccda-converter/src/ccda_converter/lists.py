"""GP Connect Lists: which section each List feeds, and its warnings / emptyReason as narrative.

GP Connect Access Record Structured 1.6, "List" guidance (nhs-apis.md section 4.4): primary Lists
carry SNOMED codes; warnings use Extension-CareConnect-GPC-ListWarningCode-1; an empty List has an
emptyReason (no-content-recorded is "nothing recorded", nil-known is "none known": not the same).
"""

from __future__ import annotations

from typing import Final

from ccda_converter.bundle import Resource, as_list, ext_value, extensions, notes, text_of
from ccda_converter.codes import concept
from ccda_converter.context import Context

# Primary List codes -> section key.
LIST_SECTIONS: Final[dict[str, str]] = {
    "886921000000105": "allergies",
    "1103671000000101": "allergies",
    "933361000000108": "medications",
    "717711000000103": "problems",
    "1102181000000102": "immunizations",
    "1149501000000101": "encounters",
    "826501000000100": "notes",
    "887191000000108": "results",
    "792931000000107": "plan",
    "886721000000107": "plan",
    "714311000000108": "plan",
}
ENDED_ALLERGIES: Final = "1103671000000101"
CONSULTATION_STRUCTURE: Final = frozenset({"325851000000107", "25851000000105", "24781000000107"})

WARNING_TEXT: Final[dict[str, str]] = {
    "confidential-items": "Items excluded due to confidentiality and/or patient preferences.",
    "data-in-transit": (
        "Patient record transfer from previous GP practice not yet complete; "
        "information recorded at the previous practice may be missing."
    ),
    "data-awaiting-filing": "Data is awaiting filing at the GP practice and is not included.",
}
EMPTY_REASON_TEXT: Final[dict[str, str]] = {
    "no-content-recorded": (
        "No content recorded: the GP record holds no items in this area "
        "(this is not a statement that the patient has none)."
    ),
    "nil-known": (
        "None known: the GP practice records that the patient has no known items in this area."
    ),
    "notasked": "Not asked: the GP practice has not asked about this area.",
    "withheld": "Withheld: the content has been withheld.",
    "unavailable": "Unavailable: the information is not available.",
    "closed": "Closed: this list is closed.",
}


def list_code(res: Resource) -> str:
    c = concept(res.data.get("code"))
    for code in c.codes:
        return code.code
    for _system, code_value, _display in c.unknown:
        return code_value
    return ""


def section_for_list(res: Resource) -> str | None:
    code = list_code(res)
    if code in LIST_SECTIONS:
        return LIST_SECTIONS[code]
    if code in CONSULTATION_STRUCTURE:
        return "encounters"
    if "-" in code:
        # Secondary lists (GPConnect-SecondaryListValues-1) are named after their area.
        area = code.split("-", 1)[0]
        return {
            "problems": "problems",
            "consultations": "encounters",
            "allergies": "allergies",
            "medications": "medications",
            "immunisations": "immunizations",
            "investigations": "results",
            "uncategorised": "notes",
        }.get(area, "notes")
    return None


def empty_reason_code(res: Resource) -> str:
    c = concept(res.data.get("emptyReason"))
    for code in c.codes:
        return code.code
    for _system, code_value, _display in c.unknown:
        return code_value
    return ""


def collect(ctx: Context) -> None:
    """Fill ctx.notices from every List and mark Lists as carried (supporting resources)."""
    for res in ctx.idx.of_type("List"):
        ctx.mapped(res)
        section = section_for_list(res)
        if section is None:
            continue
        code = list_code(res)
        if code in CONSULTATION_STRUCTURE:
            continue
        title = text_of(res.data.get("title")) or concept(res.data.get("code")).text or "List"
        out = ctx.notices.setdefault(section, [])
        shown: set[str] = set()
        for ext in extensions(res.data, "Extension-CareConnect-GPC-ListWarningCode-1"):
            value = ext_value(ext)
            for code_value in as_list(value):
                if not isinstance(code_value, str):
                    continue
                text = WARNING_TEXT.get(code_value.strip(), f"Warning code {code_value.strip()}.")
                out.append((f"{title}: warning ({code_value.strip()}).", text))
                shown.add(text)
        reason = empty_reason_code(res)
        if reason:
            text = (
                EMPTY_REASON_TEXT.get(reason) or concept(res.data.get("emptyReason")).text or reason
            )
            out.append((f"{title}:", text))
        for note in notes(res.data):
            for line in note.replace("\r\n", "\n").split("\n"):
                line = line.strip()
                if line and line not in shown:
                    out.append((f"{title}: note from the GP system:", line))
                    shown.add(line)
        for entry in as_list(res.data.get("entry")):
            if not isinstance(entry, dict):
                continue
            item = entry.get("item")
            if isinstance(item, dict) and not item.get("reference"):
                display = text_of(item.get("display"))
                if display:
                    # e.g. "Allergies items have been disabled." for an area switched off.
                    out.append((f"{title}:", display))
