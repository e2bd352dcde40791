"""WS-Addressing 1.0 (W3C 2006) headers: read the request's, write the response's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from lxml import etree

from soap_edge.soap.envelope import Envelope, must_understand, targets_us
from soap_edge.soap.faults import (
    HEADER_REQUIRED,
    INVALID_HEADER,
    ONLY_ANONYMOUS,
    FaultCode,
    SoapFault,
    sender,
)
from soap_edge.soap.ns import SOAP12, WSA, WSSE, q

ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"
NONE_ADDRESS = "http://www.w3.org/2005/08/addressing/none"

# Header blocks this node processes, so mustUnderstand="true" on them is honoured rather than
# faulted. wsse:Security is understood: its XUA assertion is read here and verified by the
# security layer (issue #9).
UNDERSTOOD: frozenset[str] = frozenset(
    {
        q(WSA, "Action"),
        q(WSA, "MessageID"),
        q(WSA, "To"),
        q(WSA, "ReplyTo"),
        q(WSA, "FaultTo"),
        q(WSA, "From"),
        q(WSA, "RelatesTo"),
        q(WSSE, "Security"),
    }
)


@dataclass
class Addressing:
    """The request's WS-A message addressing properties."""

    action: str | None
    message_id: str | None
    to: str | None
    reply_to: str
    fault_to: str | None

    @property
    def anonymous_reply(self) -> bool:
        return self.reply_to == ANONYMOUS


def _single_text(env: Envelope, local: str) -> str | None:
    blocks = [b for b in env.header_blocks() if b.tag == q(WSA, local)]
    if len(blocks) > 1:
        # WS-Addressing 1.0 SOAP Binding §6.4.1: InvalidCardinality under InvalidAddressingHeader.
        fault = sender(f"More than one wsa:{local} header", wsa_subcode=INVALID_HEADER)
        fault.problem_header = q(WSA, local)
        raise fault
    if not blocks:
        return None
    return (blocks[0].text or "").strip() or None


def _address(env: Envelope, local: str) -> str | None:
    blocks = [b for b in env.header_blocks() if b.tag == q(WSA, local)]
    if len(blocks) > 1:
        fault = sender(f"More than one wsa:{local} header", wsa_subcode=INVALID_HEADER)
        fault.problem_header = q(WSA, local)
        raise fault
    if not blocks:
        return None
    addr = blocks[0].find(q(WSA, "Address"))
    if addr is None or not (addr.text or "").strip():
        fault = sender(f"wsa:{local} without wsa:Address", wsa_subcode=INVALID_HEADER)
        fault.problem_header = q(WSA, local)
        raise fault
    return (addr.text or "").strip()


def read_message_id(env: Envelope) -> str | None:
    """The request MessageID, read leniently so that even faults can carry RelatesTo."""
    blocks = [b for b in env.header_blocks() if b.tag == q(WSA, "MessageID")]
    if len(blocks) != 1:
        return None
    return (blocks[0].text or "").strip() or None


def read_addressing(env: Envelope) -> Addressing:
    """Read and check the WS-A headers (ihe-xca-rules §1.2)."""
    action = _single_text(env, "Action")
    message_id = _single_text(env, "MessageID")
    to = _single_text(env, "To")
    reply_to = _address(env, "ReplyTo") or ANONYMOUS
    fault_to = _address(env, "FaultTo")
    if action is None:
        fault = sender("wsa:Action header is required", wsa_subcode=HEADER_REQUIRED)
        fault.problem_header = q(WSA, "Action")
        raise fault
    if message_id is None:
        # IHE ITI TF-2x V.3.2.1: request-response messages carry wsa:MessageID.
        fault = sender("wsa:MessageID header is required", wsa_subcode=HEADER_REQUIRED)
        fault.problem_header = q(WSA, "MessageID")
        raise fault
    if fault_to not in (None, ANONYMOUS, NONE_ADDRESS) and fault_to != reply_to:
        # WS-Addressing 1.0 SOAP Binding §6.4.1.5: faults reach the sender on the HTTP response
        # (or, with the XCA asynchronous option, at the allow-listed ReplyTo, ihe-xca-rules §1.4);
        # another address cannot be honoured, and an unchecked one would be an SSRF hole.
        fault = sender(
            "Only an anonymous wsa:FaultTo (or one equal to wsa:ReplyTo) is supported",
            wsa_subcode=ONLY_ANONYMOUS,
        )
        fault.problem_header = q(WSA, "FaultTo")
        raise fault
    return Addressing(action, message_id, to, reply_to, fault_to)


def check_must_understand(env: Envelope) -> None:
    """Fault with env:MustUnderstand when a header targeted at us is mandatory but unknown."""
    failed = [
        etree.QName(b)
        for b in env.header_blocks()
        if targets_us(b) and must_understand(b) and b.tag not in UNDERSTOOD
    ]
    if failed:
        names = ", ".join(f"{{{n.namespace}}}{n.localname}" for n in failed)
        raise SoapFault(
            FaultCode.MUST_UNDERSTAND,
            f"Header block(s) not understood: {names}",
            not_understood=failed,
        )


def new_message_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def response_headers(
    action: str, relates_to: str | None, *, to: str | None = None
) -> list[etree._Element]:
    """wsa:Action (mustUnderstand, NIST IHE_WSA101), own wsa:MessageID, wsa:RelatesTo, wsa:To."""
    nsmap = {"wsa": WSA, "env": SOAP12}
    blocks = []
    act = etree.Element(q(WSA, "Action"), nsmap=nsmap)
    act.set(q(SOAP12, "mustUnderstand"), "true")
    act.text = action
    blocks.append(act)
    mid = etree.Element(q(WSA, "MessageID"), nsmap=nsmap)
    mid.text = new_message_id()
    blocks.append(mid)
    if relates_to:
        # ihe-xca-rules §1.2: RelatesTo is the request MessageID (never a query or document id).
        rel = etree.Element(q(WSA, "RelatesTo"), nsmap=nsmap)
        rel.text = relates_to
        blocks.append(rel)
    if to:
        to_el = etree.Element(q(WSA, "To"), nsmap=nsmap)
        to_el.text = to
        blocks.append(to_el)
    return blocks
