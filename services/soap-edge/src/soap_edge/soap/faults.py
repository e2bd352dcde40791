"""SOAP 1.2 faults (Part 1 §5.4) with the WS-Addressing 1.0 SOAP Binding §6 fault subcodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from lxml import etree

from soap_edge.soap.ns import SOAP12, WSA, XML, q


class FaultCode(StrEnum):
    """The SOAP 1.2 fault code values this gateway raises."""

    SENDER = "Sender"
    RECEIVER = "Receiver"
    MUST_UNDERSTAND = "MustUnderstand"
    VERSION_MISMATCH = "VersionMismatch"


# WS-Addressing 1.0 SOAP Binding §6.4: the fault subcodes we use.
ACTION_NOT_SUPPORTED = "ActionNotSupported"
HEADER_REQUIRED = "MessageAddressingHeaderRequired"
INVALID_HEADER = "InvalidAddressingHeader"
ONLY_ANONYMOUS = "OnlyAnonymousAddressSupported"

# WS-Addressing 1.0 SOAP Binding §6: WS-A faults carry this action, other faults soap/fault.
WSA_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/fault"
SOAP_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"


@dataclass
class SoapFault(Exception):
    """A fault to send back instead of a response. `reason` is shown to the partner: never PHI."""

    code: FaultCode
    reason: str
    wsa_subcode: str | None = None
    # Qualified names of header blocks that were mustUnderstand but not understood.
    not_understood: list[etree.QName] = field(default_factory=list)
    # Clark name of the WS-A header a MessageAddressingHeaderRequired / Invalid fault is about.
    problem_header: str | None = None
    http_status: int | None = None
    # A non-WS-A subcode as (namespace, prefix, local name), e.g. WS-Security 1.1 §12
    # wsse:InvalidSecurity; ignored when wsa_subcode is set.
    subcode: tuple[str, str, str] | None = None
    # Extra HTTP response headers (e.g. Retry-After on a rate-limit fault).
    http_headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.reason)

    @property
    def status(self) -> int:
        # SOAP 1.2 Part 2 §7.5.2.2 (Table 20): env:Sender -> 400, every other fault -> 500.
        if self.http_status is not None:
            return self.http_status
        return 400 if self.code is FaultCode.SENDER else 500

    @property
    def action(self) -> str:
        return WSA_FAULT_ACTION if self.wsa_subcode else SOAP_FAULT_ACTION


def sender(
    reason: str, *, wsa_subcode: str | None = None, http_status: int | None = None
) -> SoapFault:
    """A fault caused by the message (malformed, unsupported, not addressed properly)."""
    return SoapFault(FaultCode.SENDER, reason, wsa_subcode=wsa_subcode, http_status=http_status)


def receiver(reason: str = "The gateway could not process the message.") -> SoapFault:
    """A fault caused by us; the reason never carries exception text."""
    return SoapFault(FaultCode.RECEIVER, reason)


def build_fault_element(fault: SoapFault) -> etree._Element:
    """`env:Fault` with children in the order fixed by soap-envelope.xsd: Code, Reason, Detail."""
    nsmap = {"env": SOAP12, "wsa": WSA}
    if fault.subcode and not fault.wsa_subcode:
        nsmap[fault.subcode[1]] = fault.subcode[0]
    el = etree.Element(q(SOAP12, "Fault"), nsmap=nsmap)
    code = etree.SubElement(el, q(SOAP12, "Code"))
    etree.SubElement(code, q(SOAP12, "Value")).text = f"env:{fault.code.value}"
    if fault.wsa_subcode:
        sub = etree.SubElement(code, q(SOAP12, "Subcode"))
        etree.SubElement(sub, q(SOAP12, "Value")).text = f"wsa:{fault.wsa_subcode}"
    elif fault.subcode:
        # The Subcode Value is a QName whose prefix is declared on env:Fault (SOAP 1.2 §5.4.6).
        sub = etree.SubElement(code, q(SOAP12, "Subcode"))
        etree.SubElement(sub, q(SOAP12, "Value")).text = f"{fault.subcode[1]}:{fault.subcode[2]}"
    reason = etree.SubElement(el, q(SOAP12, "Reason"))
    text = etree.SubElement(reason, q(SOAP12, "Text"))
    text.set(q(XML, "lang"), "en")
    text.text = fault.reason
    if fault.problem_header:
        # WS-Addressing 1.0 SOAP Binding §6.4.1/§6.4.2: name the offending header.
        detail = etree.SubElement(el, q(SOAP12, "Detail"))
        local = etree.QName(fault.problem_header).localname
        etree.SubElement(detail, q(WSA, "ProblemHeaderQName")).text = f"wsa:{local}"
    return el


def not_understood_headers(fault: SoapFault) -> list[etree._Element]:
    """SOAP 1.2 Part 1 §5.4.8: one `env:NotUnderstood qname=...` header block per failed header."""
    blocks = []
    for name in fault.not_understood:
        if name.namespace:
            block = etree.Element(
                q(SOAP12, "NotUnderstood"), nsmap={"env": SOAP12, "p": name.namespace}
            )
            block.set("qname", f"p:{name.localname}")
        else:
            block = etree.Element(q(SOAP12, "NotUnderstood"), nsmap={"env": SOAP12})
            block.set("qname", name.localname)
        blocks.append(block)
    return blocks


def upgrade_header() -> etree._Element:
    """SOAP 1.2 Part 1 §5.4.7: a VersionMismatch fault lists the envelope versions we support."""
    up = etree.Element(q(SOAP12, "Upgrade"), nsmap={"env": SOAP12})
    supported = etree.SubElement(up, q(SOAP12, "SupportedEnvelope"))
    # The QName's prefix must be in scope: `env` is declared on Upgrade (and the Envelope).
    supported.set("qname", "env:Envelope")
    return up
