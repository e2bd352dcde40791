"""Section scaffolding: templateIds, code, title, narrative tables and the empty-section rule."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree

from ccda_converter import cda
from ccda_converter.codes import LOINC
from ccda_converter.context import Context
from ccda_converter.ns import NSMAP, v3
from ccda_converter.template import E, Template

Cell = str | Sequence[str] | None
_BR = v3("br")
_SECTION = v3("section")


@dataclass(frozen=True, slots=True)
class SectionSpec:
    key: str
    root: str
    extension: str | None
    loinc: str
    loinc_display: str
    title: str
    entries_required: bool
    prefix: str  # narrative ID prefix
    dual: bool = True


class Table:
    """A narrative table, created on its first row (an empty tbody is invalid NarrativeBlock)."""

    def __init__(self, section: Section, caption: str, headers: Sequence[str]) -> None:
        self.section = section
        self.caption = caption
        self.headers = headers
        self._tbody: cda.Element | None = None
        self.rows = 0

    def _create(self) -> cda.Element:
        table = cda.fixed(self.section.text, "table", {"border": "1", "width": "100%"})
        if self.caption:
            cda.text_el(table, "caption", self.caption)
        thead = cda.sub(table, "thead")
        tr = cda.sub(thead, "tr")
        for header in self.headers:
            cda.text_el(tr, "th", header)
        return cda.sub(table, "tbody")

    def row(self, cells: Sequence[Cell], ids: tuple[int, ...] = ()) -> Row:
        """Add a row; it gets an ID (the entry's text/reference) and its first cell another one
        (the originalText/reference of the entry's main code). Cells listed in ``ids`` get an ID
        too (``Row.cell_id``), e.g. a note that a Comment Activity will reference."""
        tbody = self._tbody
        if tbody is None:
            tbody = self._tbody = self._create()
        self.rows += 1
        row_id = self.section.ctx.narrative_id(self.section.spec.prefix)
        values = {"id": row_id, "nid": row_id + "n"}
        for i in ids:
            values[f"c{i}"] = f"{row_id}c{i}"
        # Cells are reached one by one (a proxy each) only when they get text; an empty string
        # (an empty text node: <td></td>, unlike an absent value: <td/>) is in the prototype.
        empty = 0
        todo = []
        for i, cell in enumerate(cells):
            if cell.__class__ is str:
                if cell:
                    todo.append(i)
                else:
                    empty |= 1 << i
            elif cell:
                todo.append(i)
        tr = _row_template(len(cells), ids, empty).stamp_root(tbody, values)
        for i in todo:
            cell = cells[i]
            if cell.__class__ is str:
                tr[i].text = cell
            else:
                _fill(tr[i], cell)  # type: ignore[arg-type]
        return Row(row_id, tr, ids)


class Row:
    __slots__ = ("id", "ids", "name_id", "tr")

    def __init__(self, row_id: str, tr: cda.Element, ids: tuple[int, ...] = ()) -> None:
        self.id = row_id
        self.name_id = row_id + "n"
        self.tr = tr
        self.ids = ids

    def cell_id(self, index: int) -> str:
        """Give a cell its own ID (e.g. a note referenced by a Comment Activity)."""
        if index in self.ids:
            return f"{self.id}c{index}"
        td = self.tr[index]
        existing = td.get("ID")
        if existing:
            return str(existing)
        new = f"{self.id}c{index}"
        td.set("ID", new)
        return new


@functools.cache
def _row_template(width: int, ids: tuple[int, ...] = (), empty: int = 0) -> Template:
    """<tr ID><td ID/><td/>...</tr> for a row of ``width`` cells (``ids``: cells with an ID;
    ``empty``: bit i set when cell i is an empty string)."""
    cells = [E.td({"ID": "$nid"})] if width else []
    cells += [E.td() for _ in range(width - 1)]
    for i in ids:
        cells[i].set("ID", f"$c{i}")
    for i, td in enumerate(cells):
        if empty >> i & 1:
            td.text = ""
    return Template(E.tr({"ID": "$id"}, *cells))


def _fill(td: cda.Element, cell: Sequence[str]) -> None:
    lines = [c for c in cell if c]
    if not lines:
        return
    td.text = lines[0]
    for line in lines[1:]:
        br = etree.SubElement(td, _BR)
        br.tail = line


class Section:
    """One CDA section under construction."""

    def __init__(self, ctx: Context, spec: SectionSpec) -> None:
        self.ctx = ctx
        self.spec = spec
        parent = ctx.section_parent
        self.el = (
            etree.SubElement(parent, _SECTION)
            if parent is not None
            else etree.Element(_SECTION, nsmap=NSMAP)
        )
        if spec.dual:
            cda.templates(self.el, spec.root, spec.extension)
        else:
            cda.template_only(self.el, spec.root, spec.extension)
        cda.code(self.el, spec.loinc, LOINC, spec.loinc_display, "LOINC")
        cda.text_el(self.el, "title", spec.title)
        self.text = cda.sub(self.el, "text")
        self.entries = 0

    def paragraph(self, text: str, label: str | None = None) -> cda.Element:
        p = cda.sub(self.text, "paragraph")
        if label:
            content = cda.text_el(p, "content", label, {"styleCode": "Bold"})
            content.tail = " " + text
        else:
            p.text = text
        return p

    def notices(self) -> None:
        """GP Connect list warnings, emptyReason and list notes for this section, as visible
        narrative (GP Connect List guidance: every warning must reach the reader)."""
        for label, text in self.ctx.notices.get(self.spec.key, []):
            self.paragraph(text, label)

    def table(self, caption: str, headers: Sequence[str]) -> Table:
        return Table(self, caption, headers)

    def stamp(
        self, template: Template, values: Mapping[str, Any] | None = None
    ) -> list[cda.Element]:
        """Stamp an entry template (its root is the <entry>) into the section."""
        self.entries += 1
        return template.stamp(self.el, values)

    def entry(self, type_code: str = "DRIV") -> cda.Element:
        self.entries += 1
        return cda.sub(self.el, "entry", {"typeCode": type_code})

    def finish(self, empty_text: str) -> cda.Element:
        """Close the section. An entries-required section without entries gets
        nullFlavor="NI" and no entry (schematron: nullFlavor XOR at least one entry)."""
        if self.entries == 0 and self.spec.entries_required:
            self.el.set("nullFlavor", "NI")
        if len(self.text) == 0 or (self.entries == 0 and not self._has_table()):
            self.paragraph(empty_text)
        return self.el

    def _has_table(self) -> bool:
        return self.text.find(v3("table")) is not None
