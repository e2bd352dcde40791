"""SOAP 1.2 envelope: read the request envelope, build response envelopes."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from soap_edge.soap.faults import FaultCode, SoapFault, sender
from soap_edge.soap.ns import SOAP11, SOAP12, q

# SOAP 1.2 Part 1 §5.2.2: roles that target this node (absent role = ultimateReceiver).
_ROLE_NEXT = "http://www.w3.org/2003/05/soap-envelope/role/next"
_ROLE_ULTIMATE = "http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver"


@dataclass
class Envelope:
    """A parsed SOAP 1.2 request envelope."""

    root: etree._Element
    header: etree._Element | None
    payload: etree._Element

    def header_blocks(self) -> list[etree._Element]:
        if self.header is None:
            return []
        return [h for h in self.header if isinstance(h.tag, str)]


def read_envelope(root: etree._Element) -> Envelope:
    """Check the envelope shape and return its parts, or raise the right fault."""
    if root.tag == q(SOAP11, "Envelope"):
        # SOAP 1.2 Part 1 §5.4.7 and ihe-xca-rules §1.1: IHE requires SOAP 1.2.
        raise SoapFault(
            FaultCode.VERSION_MISMATCH,
            "SOAP 1.1 envelopes are not supported: IHE ITI transactions require SOAP 1.2",
        )
    if root.tag != q(SOAP12, "Envelope"):
        if etree.QName(root).localname == "Envelope":
            raise SoapFault(FaultCode.VERSION_MISMATCH, "Unknown SOAP envelope namespace")
        raise sender("The message is not a SOAP 1.2 envelope")
    header: etree._Element | None = None
    body: etree._Element | None = None
    for child in root:
        if not isinstance(child.tag, str):
            continue
        if child.tag == q(SOAP12, "Header") and header is None and body is None:
            header = child
        elif child.tag == q(SOAP12, "Body") and body is None:
            body = child
        else:
            raise sender("SOAP envelope must hold an optional Header then one Body")
    if body is None:
        raise sender("SOAP envelope has no Body")
    payload = [c for c in body if isinstance(c.tag, str)]
    if len(payload) != 1:
        raise sender("SOAP Body must hold exactly one element")
    return Envelope(root=root, header=header, payload=payload[0])


def targets_us(block: etree._Element) -> bool:
    """Whether a header block is addressed to this node (SOAP 1.2 Part 1 §2.2)."""
    role = block.get(q(SOAP12, "role"))
    return role is None or role.strip() in ("", _ROLE_NEXT, _ROLE_ULTIMATE)


def must_understand(block: etree._Element) -> bool:
    """SOAP 1.2 Part 1 §5.2.3: the attribute is an xs:boolean ("true" or "1")."""
    return (block.get(q(SOAP12, "mustUnderstand")) or "").strip() in ("true", "1")


def build_envelope(header_blocks: list[etree._Element], payload: etree._Element) -> bytes:
    """Serialise an envelope (UTF-8, with XML declaration)."""
    env = etree.Element(q(SOAP12, "Envelope"), nsmap={"env": SOAP12})
    header = etree.SubElement(env, q(SOAP12, "Header"))
    for block in header_blocks:
        header.append(block)
    body = etree.SubElement(env, q(SOAP12, "Body"))
    body.append(payload)
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))
