"""Entry pieces shared by several sections (comments, entry references, problem-type codes)."""

from __future__ import annotations

from typing import Final

from ccda_converter import cda
from ccda_converter.codes import LOINC, SNOMED
from ccda_converter.context import Context
from ccda_converter.sections.base import Row
from ccda_converter.template import E, Template

# Comment Activity (4.64); the reference SHALL point to its narrative (CONF:81-15969).
_COMMENT: Final = Template(
    E.entryRelationship(
        {"typeCode": "SUBJ", "inversionInd": "true"},
        E.act(
            {"classCode": "ACT", "moodCode": "EVN"},
            cda.p_template("2.16.840.1.113883.10.20.22.4.64"),
            cda.p_code("48767-8", LOINC, "Annotation comment", "LOINC"),
            cda.p_text_ref(),
        ),
    )
)
# Entry Reference (4.122).
_ENTRY_REFERENCE: Final = Template(
    E.entryRelationship(
        {"typeCode": "$type"},
        E.act(
            {"classCode": "ACT", "moodCode": "EVN"},
            cda.p_template("2.16.840.1.113883.10.20.22.4.122"),
            E.id(root="$id"),
            E.code(nullFlavor="NP"),
            E.statusCode(code="completed"),
        ),
    )
)
# Problem Type code -> its LOINC translation (CONF:1198-32950).
PROBLEM_TYPE_LOINC: Final = {
    "55607006": ("75326-9", "Problem"),
    "404684003": ("75321-0", "Clinical finding"),
}


def comment(parent: cda.Element, ctx: Context, row: Row, cell: int) -> None:
    """Comment Activity (4.64) inside an entry, pointing at the narrative cell holding the note
    (CONF:81-15969: the reference SHALL point to its narrative)."""
    _COMMENT.stamp(parent, {"ref": "#" + row.cell_id(cell)})


def entry_reference(parent: cda.Element, target_id: str, type_code: str = "REFR") -> None:
    """Entry Reference (4.122): points at another entry of the document by its id."""
    _ENTRY_REFERENCE.stamp(parent, {"type": type_code, "id": target_id})


def p_problem_type(code: str = "55607006", display: str = "Problem") -> cda.Element:
    """Problem Type code part with its LOINC translation (CONF:1198-32950)."""
    loinc = PROBLEM_TYPE_LOINC[code]
    el = cda.p_code(code, SNOMED, display, "SNOMED CT")
    el.append(cda.p_code(loinc[0], LOINC, loinc[1], "LOINC", local="translation"))
    return el


def problem_type(parent: cda.Element, code: str = "55607006", display: str = "Problem") -> None:
    """Problem Type code with its LOINC translation (CONF:1198-32950)."""
    loinc = PROBLEM_TYPE_LOINC[code]
    el = cda.code(parent, code, SNOMED, display, "SNOMED CT")
    cda.code(el, loinc[0], LOINC, loinc[1], "LOINC", local="translation")


# Indication (4.19): the reason for a medication or an immunization (reasonCode, explanation);
# the caller writes the reason's value into the stamped observation (handle "obs").
INDICATION: Final = Template(
    E.entryRelationship(
        {"typeCode": "RSON"},
        E.observation(
            {"classCode": "OBS", "moodCode": "EVN", "tpl-as": "obs"},
            *cda.p_templates("2.16.840.1.113883.10.20.22.4.19", "2014-06-09"),
            E.id(root="$id"),
            p_problem_type("404684003", "Clinical finding"),
            E.statusCode(code="completed"),
        ),
    ),
    handles=("obs",),
)
