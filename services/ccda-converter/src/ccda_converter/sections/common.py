"""Entry pieces shared by several sections (comments, entry references, problem-type codes)."""

from __future__ import annotations

from ccda_converter import cda
from ccda_converter.codes import LOINC, SNOMED
from ccda_converter.context import Context
from ccda_converter.sections.base import Row


def comment(parent: cda.Element, ctx: Context, row: Row, cell: int) -> None:
    """Comment Activity (4.64) inside an entry, pointing at the narrative cell holding the note
    (CONF:81-15969: the reference SHALL point to its narrative)."""
    rel = cda.fixed(parent, "entryRelationship", {"typeCode": "SUBJ", "inversionInd": "true"})
    act = cda.fixed(rel, "act", {"classCode": "ACT", "moodCode": "EVN"})
    cda.template_only(act, "2.16.840.1.113883.10.20.22.4.64")
    cda.code(act, "48767-8", LOINC, "Annotation comment", "LOINC")
    cda.text_ref(act, row.cell_id(cell))


def entry_reference(parent: cda.Element, target_id: str, type_code: str = "REFR") -> None:
    """Entry Reference (4.122): points at another entry of the document by its id."""
    rel = cda.sub(parent, "entryRelationship", {"typeCode": type_code})
    act = cda.fixed(rel, "act", {"classCode": "ACT", "moodCode": "EVN"})
    cda.template_only(act, "2.16.840.1.113883.10.20.22.4.122")
    cda.ii(act, target_id)
    cda.fixed(act, "code", {"nullFlavor": "NP"})
    cda.status(act, "completed")


def problem_type(parent: cda.Element, code: str = "55607006", display: str = "Problem") -> None:
    """Problem Type code with its LOINC translation (CONF:1198-32950)."""
    loinc = {"55607006": ("75326-9", "Problem"), "404684003": ("75321-0", "Clinical finding")}[code]
    el = cda.code(parent, code, SNOMED, display, "SNOMED CT")
    cda.code(el, loinc[0], LOINC, loinc[1], "LOINC", local="translation")
