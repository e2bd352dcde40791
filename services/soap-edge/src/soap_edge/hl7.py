"""HL7 v3 message wrappers (MCCI transmission + acknowledgement) shared by ITI-47 and ITI-55."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

from lxml import etree

from soap_edge.config import Settings
from soap_edge.soap.ns import HL7, XSI, q

INTERACTION_ROOT = "2.16.840.1.113883.1.6"
ACK_DETAIL_CODES = "2.16.840.1.113883.5.1100"  # HL7 AcknowledgementDetailCode (SYN113, INTERR)
HL7_TABLE_0357 = "2.16.840.1.113883.12.357"  # HL7 v2 table 0357 message error codes (204)
NSMAP = {None: HL7, "xsi": XSI}


def sub(parent: etree._Element, local: str, **attrs: str) -> etree._Element:
    """An HL7 child element with attributes in the given order."""
    el = etree.SubElement(parent, q(HL7, local))
    for name, value in attrs.items():
        el.set(name.rstrip("_"), value)
    return el


def ii(parent: etree._Element, local: str, root: str, extension: str = "") -> etree._Element:
    el = sub(parent, local, root=root)
    if extension:
        el.set("extension", extension)
    return el


def hl7_now() -> str:
    """HL7 TS with UTC offset, e.g. 20260101120000+0000 (never an epoch, ihe-xca-rules §7.2)."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S+0000")


@dataclass
class InstanceId:
    root: str
    extension: str = ""

    @classmethod
    def read(cls, el: etree._Element | None) -> InstanceId | None:
        if el is None or not el.get("root"):
            return None
        return cls(el.get("root", ""), el.get("extension", ""))

    def key(self) -> str:
        return f"{self.root}^{self.extension}"


@dataclass
class Device:
    """A sender/receiver device: its ids and its represented organisation's ids."""

    ids: list[InstanceId]
    org_ids: list[InstanceId] = field(default_factory=list)


def read_device(message: etree._Element, role: str) -> Device | None:
    dev = message.find(f"{q(HL7, role)}/{q(HL7, 'device')}")
    if dev is None:
        return None
    ids = [i for i in (InstanceId.read(e) for e in dev.findall(q(HL7, "id"))) if i]
    org_path = f"{q(HL7, 'asAgent')}/{q(HL7, 'representedOrganization')}/{q(HL7, 'id')}"
    orgs = [i for i in (InstanceId.read(e) for e in dev.findall(org_path)) if i]
    return Device(ids, orgs) if ids else None


def _device(parent: etree._Element, role: str, type_code: str, device: Device) -> None:
    wrapper = sub(parent, role, typeCode=type_code)
    dev = sub(wrapper, "device", classCode="DEV", determinerCode="INSTANCE")
    for i in device.ids:
        ii(dev, "id", i.root, i.extension)
    if device.org_ids:
        agent = sub(dev, "asAgent", classCode="AGNT")
        org = sub(agent, "representedOrganization", classCode="ORG", determinerCode="INSTANCE")
        for i in device.org_ids:
            ii(org, "id", i.root, i.extension)


@dataclass
class AckDetail:
    code: str
    code_system: str
    text: str
    location: str = ""


def message(
    root_name: str,
    settings: Settings,
    request_id: InstanceId | None,
    request_sender: Device | None,
    ack_code: str,
    details: list[AckDetail] | None = None,
) -> etree._Element:
    """Transmission wrapper + acknowledgement (MCCI_MT000300UV01 / MCCI_MT000200UV01).

    Receiver and sender are swapped relative to the request; targetMessage is the request's HL7
    id, not the WS-A MessageID (ihe-xca-rules §7.2).
    """
    msg = etree.Element(q(HL7, root_name), nsmap=NSMAP)
    msg.set("ITSVersion", "XML_1.0")
    ii(msg, "id", settings.home_community_id, uuid.uuid4().hex)
    sub(msg, "creationTime", value=hl7_now())
    ii(msg, "interactionId", INTERACTION_ROOT, root_name)
    sub(msg, "processingCode", code=settings.processing_code)
    sub(msg, "processingModeCode", code="T")
    sub(msg, "acceptAckCode", code="NE")
    # The request's sender is our receiver; with no sender we answer to a null-flavoured device.
    receiver = request_sender or Device([InstanceId(settings.home_community_id, "unknown-sender")])
    _device(msg, "receiver", "RCV", receiver)
    ours = Device(
        [InstanceId(settings.home_community_id)], [InstanceId(settings.home_community_id)]
    )
    _device(msg, "sender", "SND", ours)
    ack = sub(msg, "acknowledgement")
    sub(ack, "typeCode", code=ack_code)
    target = sub(ack, "targetMessage")
    if request_id is not None:
        ii(target, "id", request_id.root, request_id.extension)
    else:
        sub(target, "id", nullFlavor="NI")
    for detail in details or []:
        d = sub(ack, "acknowledgementDetail", typeCode="E")
        sub(d, "code", code=detail.code, codeSystem=detail.code_system)
        sub(d, "text").text = detail.text
        if detail.location:
            sub(d, "location").text = detail.location
    return msg
