"""Hardened parsing of untrusted XML: no DTD, no entities, no network, bounded size and depth."""

from __future__ import annotations

import functools
import logging
import re
import threading

from lxml import etree

log = logging.getLogger(__name__)

# XML declaration at the very start of a document, e.g. <?xml version="1.0" encoding="UTF-8"?>.
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*\?>")


class XmlRejected(ValueError):
    """The bytes are not acceptable XML; the message is safe to show to the partner."""


def _parser_kwargs() -> dict[str, bool]:
    return {
        "resolve_entities": False,
        "no_network": True,
        "load_dtd": False,
        "huge_tree": False,
        "remove_comments": True,
        "remove_pis": True,
    }


def parse_untrusted(data: bytes, *, max_bytes: int, max_depth: int) -> etree._Element:
    """Parse `data` or raise XmlRejected.

    Depth is checked right after the C parse; the tree cannot outgrow `max_bytes`, and libxml2
    itself refuses more than 256 levels. Documents with a DOCTYPE are refused outright: SOAP 1.2
    Part 1 §5 forbids DTDs in messages, and refusing them is the simplest defence against entity
    tricks.
    """
    if len(data) > max_bytes:
        raise XmlRejected(f"XML part larger than {max_bytes} bytes")
    try:
        return _parse(data, max_depth)
    except etree.XMLSyntaxError as exc:
        if not _is_encoding_error(exc):
            raise XmlRejected("Body is not well-formed XML") from exc
    # Policy (ihe-xca-rules §1.1): real captures (NHN Axis2) carry latin-1 bytes in a part declared
    # UTF-8. Retry once as latin-1 and log it, rather than refusing the partner's whole message.
    log.warning("XML bytes do not match the declared encoding; retried as latin-1")
    text = _XML_DECL.sub(b"", data.lstrip()).decode("latin-1")
    try:
        return _parse(text.encode("utf-8"), max_depth)
    except etree.XMLSyntaxError as exc:
        raise XmlRejected("Body is not well-formed XML") from exc


def _is_encoding_error(exc: etree.XMLSyntaxError) -> bool:
    msg = str(exc).lower()
    return "encoding" in msg or "utf-8" in msg or "bytes" in msg


_local = threading.local()


def _parser() -> etree.XMLParser:
    # lxml parsers are reusable but not thread-safe: one per thread.
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = etree.XMLParser(**_parser_kwargs())
    return parser


def hardened_parser() -> etree.XMLParser:
    """This thread's parser with the hardened options, for libraries that take a parser
    (signxml): the same no-DTD, no-entity, no-network rules as parse_untrusted. It has no size
    or depth bound of its own, so give it only bytes that already passed parse_untrusted."""
    return _parser()


@functools.lru_cache(maxsize=16)
def _too_deep(max_depth: int) -> etree.XPath:
    # True when an element sits at depth max_depth + 1: /*/*/... evaluated in C.
    return etree.XPath("boolean(" + "/*" * (max_depth + 1) + ")")


def _parse(data: bytes, max_depth: int) -> etree._Element:
    # One C parse, then the depth check in C (XPath): the Python event loop of iterparse cost
    # more than the parse itself (benchmarks/PROFILE.md). A deeper bomb cannot grow the tree
    # past the byte cap, and libxml2 stops at 256 levels by itself (no huge_tree).
    text = data.strip()
    if not text:
        raise XmlRejected("Empty XML document")
    root = etree.fromstring(text, _parser())
    if root is None:
        raise XmlRejected("Empty XML document")
    if _too_deep(max_depth)(root):
        raise XmlRejected(f"XML nesting deeper than {max_depth} levels")
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None:
        raise XmlRejected("XML with a DOCTYPE is not accepted (SOAP 1.2 forbids DTDs)")
    return root


def parse_fragment(data: bytes) -> etree._Element | None:
    """Parse a small XML value that arrived escaped in a text node (XUA CE values).

    Still untrusted input, so the same hardened options apply; returns None instead of raising.
    """
    if len(data) > 16_384:
        return None
    try:
        return _parse(data, 16)
    except (etree.XMLSyntaxError, XmlRejected):
        return None
