"""Prototype subtrees ("templates") stamped into the CCD with one C-level deep copy.

Why: through lxml's Python API every SubElement and every attribute crosses into Cython,
re-validates the tag and each attribute name and re-encodes every value. A 480-entry GP record
gives a CCD of ~13,000 elements and ~13,000 attributes, most of them constant (templateIds,
classCode/moodCode, statusCode, fixed codes), and building them one call at a time dominated the
conversion. A Template is built once with lxml's ElementMaker; stamping it is one libxml2 deep copy
(no name checks, no Python per constant element).

The variable values are written into the prototype itself *before* it is copied, through element
proxies kept from compilation: the copy then carries them, and nothing in the copy has to be
reached from Python except the elements the caller asked for (``handles``). A value equal to the
one the previous stamp wrote is not written again (records repeat statuses, dates and units).
Each thread stamps its own clone of the prototype (executor threads may convert concurrently).

Slots, written into the prototype:

- attribute value ``"$name"``: set from ``values[name]``; ``None`` leaves the attribute out;
- element text ``"$name"``: the element text (``None`` leaves the element empty, ``""`` gives an
  empty text node as ``el.text = ""`` does);
- attribute ``tpl-as="name"``: the copied element is returned by ``stamp`` (see ``handles``).

The ``tpl-as`` marker attributes are stripped from the prototype when the Template is compiled.
``tail`` elements are appended to the prototype root after compilation and never scanned for
slots: they may carry record data (names, identifiers), which must never be read as a slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from threading import get_ident
from typing import Any, Final, TypeAlias

from lxml import etree
from lxml.builder import ElementMaker

from ccda_converter.ns import PROTO_NSMAP, V3

Element: TypeAlias = etree._Element

# Builds prototypes only (once per process); documents are built by stamping copies of them.
E: Final = ElementMaker(namespace=V3, nsmap=PROTO_NSMAP)

_AS: Final = "tpl-as"
_HTML: Final = etree.HTMLParser()


def _placeholder(value: str | None) -> str | None:
    # "$" never starts a constant CDA value (OIDs, codes, UCUM units such as "{ratio}").
    if value and len(value) > 1 and value[0] == "$" and value[1:].isidentifier():
        return value[1:]
    return None


def adopt(el: Element) -> Element:
    """A copy of ``el`` for use as a prototype that is written to before being copied: it lives
    in a document of lxml's HTML parser, for which ``.set()`` skips re-validating the attribute
    name (an XML name check plus an exception raised and discarded inside lxml, about 40 % of
    the cost of a set). Names are ours and were validated when the prototype was built; the copies
    are moved into the (XML) CCD, which is serialised as XML. Nothing else differs: libxml2 copies,
    moves and serialises the nodes the same way."""
    holder = _HTML.makeelement("holder")
    holder.append(el.__copy__())
    return holder[0]


class _Clone:
    """One thread's copy of a prototype: its root and, per slot, [element proxy, attribute
    (None for a text slot), slot name, value written now, slot number]."""

    __slots__ = ("root", "slots")

    def __init__(self, template: Template) -> None:
        self.root = adopt(template._proto)
        nodes = list(self.root.iter())
        # The placeholders are still in the clone: the first stamp writes every slot.
        self.slots: list[list[Any]] = [
            [nodes[i], attr, name, nodes[i].get(attr), k]
            for k, (i, attr, name) in enumerate(template._attrs)
        ]
        self.slots += [[nodes[i], None, name, nodes[i].text, -1] for i, name in template._texts]


class Template:
    """A compiled prototype. ``stamp(parent, values)`` appends a filled copy to ``parent`` and
    returns the copy followed by the elements named in ``handles`` (in that order)."""

    __slots__ = ("_attrs", "_clones", "_handles", "_layout", "_proto", "_steps", "_texts")

    def __init__(
        self, proto: Element, handles: tuple[str, ...] = (), tail: tuple[Element, ...] = ()
    ) -> None:
        nodes = list(proto.iter())
        attrs: list[tuple[int, str, str]] = []
        texts: list[tuple[int, str]] = []
        named: dict[str, int] = {}
        # Elements with attribute slots: their attributes in document order, (name, constant
        # value or None, slot number or -1); rewritten in that order when a slot that may be
        # None appears or disappears, so the serialised attribute order never changes.
        layout: dict[int, list[tuple[str, str | None, int]]] = {}
        for i, node in enumerate(nodes):
            items: list[tuple[str, str | None, int]] = []
            for attr, value in list(node.attrib.items()):
                name = _placeholder(value)
                if attr == _AS:
                    named[value] = i
                    del node.attrib[attr]
                elif name is not None:
                    items.append((attr, None, len(attrs)))
                    attrs.append((i, attr, name))
                else:
                    items.append((attr, value, -1))
            if any(k >= 0 for _a, _v, k in items):
                layout[i] = items
            text_name = _placeholder(node.text)
            if text_name is not None:
                texts.append((i, text_name))
        missing = [h for h in handles if h not in named]
        if missing:
            raise ValueError(f"template has no tpl-as for {missing}")
        self._proto = proto
        # Tail nodes follow every compiled node in document order: slot positions stay valid.
        proto.extend(tail)
        # Navigation "steps" reach only the handles and their ancestors, creating no Python
        # proxy for any other element of the copy: nodes.append(nodes[parent_pos][child_index]).
        parent_of = {child: parent for parent in nodes for child in parent}
        needed: dict[int, None] = {}
        for h in handles:
            chain = []
            node = nodes[named[h]]
            while node is not proto:
                chain.append(node)
                node = parent_of[node]
            # A slice, not reversed(): mypyc (build_mypyc.py) cannot compile reversed() here.
            for el in chain[::-1]:
                needed[nodes.index(el)] = None
        pos = {0: 0}
        steps = []
        for i in sorted(needed):
            el = nodes[i]
            parent = parent_of[el]
            steps.append((pos[nodes.index(parent)], parent.index(el)))
            pos[i] = len(pos)
        self._steps = tuple(steps)
        self._attrs = tuple(attrs)
        self._texts = tuple(texts)
        self._handles = tuple(pos[named[h]] for h in handles)
        # Slot number -> the attribute layout of its element.
        self._layout = tuple(tuple(layout[i]) for i, _a, _n in attrs)
        self._clones: dict[int, _Clone] = {}

    def stamp(self, parent: Element, values: Mapping[str, Any] | None = None) -> list[Element]:
        clone = self._clones.get(get_ident())
        if clone is None:
            clone = self._clones[get_ident()] = _Clone(self)
        if values is not None:
            relayout = None
            for slot in clone.slots:
                value = values[slot[2]]
                old = slot[3]
                if value != old:
                    slot[3] = value
                    if slot[1] is None:
                        slot[0].text = value
                    elif value is None or old is None:
                        relayout = [*relayout, slot] if relayout else [slot]
                    else:
                        slot[0].set(slot[1], value)
            if relayout:
                self._relayout(clone, relayout)
        elif clone.slots:
            # The clone holds the previous stamp's values: never copy them into another entry.
            raise ValueError("template with slots stamped without values")
        root = clone.root.__copy__()
        parent.append(root)
        if not self._handles:
            return [root]
        nodes = [root]
        for up, child in self._steps:
            nodes.append(nodes[up][child])
        return [root] + [nodes[i] for i in self._handles]

    def _relayout(self, clone: _Clone, changed: list[list[Any]]) -> None:
        """Rewrite the attributes of elements whose optional slots appeared or disappeared, in
        the prototype's order."""
        current = [slot[3] for slot in clone.slots]
        for slot in changed:
            el = slot[0]
            el.attrib.clear()
            for attr, const, k in self._layout[slot[4]]:
                value = const if k < 0 else current[k]
                if value is not None:
                    el.set(attr, value)

    def stamp_root(self, parent: Element, values: Mapping[str, Any] | None = None) -> Element:
        """``stamp`` for templates without handles; returns the copy."""
        return self.stamp(parent, values)[0]
