"""Prototype subtrees ("templates") stamped into the CCD with one C-level deep copy.

Why: through lxml's Python API every SubElement and every attribute crosses into Cython,
re-validates the tag and each attribute name and re-encodes every value. A 480-entry GP record
gives a CCD of ~13,000 elements and ~13,000 attributes, most of them constant (templateIds,
classCode/moodCode, statusCode, fixed codes), and building them one call at a time dominated the
conversion. A Template is built once with lxml's ElementMaker; stamping it is one libxml2 deep copy
(no name checks, no Python per constant element) plus one ``.set()``/``.text`` per variable value.

Slots, written into the prototype:

- attribute value ``"$name"``: set from ``values[name]``; ``None`` deletes the attribute;
- element text ``"$name"``: the element text (``None`` leaves the element empty);
- attribute ``tpl-as="name"``: the copied element is returned by ``stamp`` (see ``handles``).

The ``tpl-as`` marker attributes are stripped from the prototype when the Template is compiled.
``tail`` elements are appended to the prototype root after compilation and never scanned for
slots: they may carry record data (names, identifiers), which must never be read as a slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypeAlias

from lxml import etree
from lxml.builder import ElementMaker

from ccda_converter.ns import PROTO_NSMAP, V3

Element: TypeAlias = etree._Element

# Builds prototypes only (once per process); documents are built by stamping copies of them.
E: Final = ElementMaker(namespace=V3, nsmap=PROTO_NSMAP)

_AS: Final = "tpl-as"


def _placeholder(value: str | None) -> str | None:
    # "$" never starts a constant CDA value (OIDs, codes, UCUM units such as "{ratio}").
    if value and len(value) > 1 and value[0] == "$" and value[1:].isidentifier():
        return value[1:]
    return None


class Template:
    """A compiled prototype. ``stamp(parent, values)`` appends a filled copy to ``parent`` and
    returns the copy followed by the elements named in ``handles`` (in that order)."""

    __slots__ = ("_attrs", "_handles", "_proto", "_steps", "_texts")

    def __init__(
        self, proto: Element, handles: tuple[str, ...] = (), tail: tuple[Element, ...] = ()
    ) -> None:
        nodes = list(proto.iter())
        wanted: dict[int, None] = {}
        attrs: list[tuple[int, str, str]] = []
        texts: list[tuple[int, str]] = []
        named: dict[str, int] = {}
        for i, node in enumerate(nodes):
            for attr, value in list(node.attrib.items()):
                name = _placeholder(value)
                if attr == _AS:
                    named[value] = i
                    del node.attrib[attr]
                    wanted[i] = None
                elif name is not None:
                    attrs.append((i, attr, name))
                    wanted[i] = None
            text_name = _placeholder(node.text)
            if text_name is not None:
                texts.append((i, text_name))
                wanted[i] = None
        missing = [h for h in handles if h not in named]
        if missing:
            raise ValueError(f"template has no tpl-as for {missing}")
        self._proto = proto
        # Tail nodes follow every compiled node in document order: slot positions stay valid.
        proto.extend(tail)
        # Navigation "steps" reach only the slot elements and their ancestors, creating no Python
        # proxy for any other element: nodes.append(nodes[parent_pos][child_index]).
        parent_of = {child: parent for parent in nodes for child in parent}
        needed: dict[int, None] = {}
        for i in wanted:
            chain = []
            node = nodes[i]
            while node is not proto:
                chain.append(node)
                node = parent_of[node]
            for el in reversed(chain):
                needed[nodes.index(el)] = None
        pos = {0: 0}
        steps = []
        for i in sorted(needed):
            el = nodes[i]
            parent = parent_of[el]
            steps.append((pos[nodes.index(parent)], parent.index(el)))
            pos[i] = len(pos)
        self._steps = tuple(steps)
        self._attrs = tuple((pos[i], a, n) for i, a, n in attrs)
        self._texts = tuple((pos[i], n) for i, n in texts)
        self._handles = tuple(pos[named[h]] for h in handles)

    def stamp(self, parent: Element, values: Mapping[str, Any] | None = None) -> list[Element]:
        root = self._proto.__copy__()
        parent.append(root)
        nodes = [root]
        for up, child in self._steps:
            nodes.append(nodes[up][child])
        if values is not None:
            for i, attr, name in self._attrs:
                value = values[name]
                if value is None:
                    del nodes[i].attrib[attr]
                else:
                    nodes[i].set(attr, value)
            for i, name in self._texts:
                nodes[i].text = values[name]
        return [root, *(nodes[i] for i in self._handles)]

    def stamp_root(self, parent: Element, values: Mapping[str, Any] | None = None) -> Element:
        """``stamp`` for templates without handles; returns the copy."""
        return self.stamp(parent, values)[0]
