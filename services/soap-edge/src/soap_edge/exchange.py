"""What a handler gets (Exchange) and returns (Reply), and the shared services (Gateway)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from lxml import etree

from soap_edge.backends import Backends
from soap_edge.config import Settings
from soap_edge.documents import DocumentService
from soap_edge.security.partners import Partner
from soap_edge.security.xua import XuaIdentity
from soap_edge.soap.envelope import Envelope
from soap_edge.soap.mtom import Attachment
from soap_edge.soap.wsa import Addressing
from soap_edge.store import Store
from xcagw.common.v1 import common_pb2


@dataclass
class Exchange:
    """One understood SOAP request, routed to a transaction."""

    transaction: str
    action: str
    response_action: str
    envelope: Envelope
    addressing: Addressing
    # The requester from the verified XUA assertion (None when the partner sent none).
    xua: XuaIdentity | None
    context: common_pb2.RequestContext
    partner: str
    partner_config: Partner | None = None

    @property
    def payload(self) -> etree._Element:
        return self.envelope.payload

    @property
    def message_id(self) -> str:
        return self.addressing.message_id or ""


@dataclass
class Reply:
    """A transaction's answer. `outcome` feeds metrics and logs (success/partial/failure)."""

    payload: etree._Element
    outcome: str = "success"
    attachments: list[Attachment] = field(default_factory=list)
    mtom: bool = False
    # Overrides the route's response action (ITI-47 cancel answers MCCI_IN000002UV01).
    action: str | None = None
    # HL7 CX of patients the reply discloses that its XML does not name (ITI-39 documents);
    # they go into the ATNA audit record only.
    audit_patients: list[str] = field(default_factory=list)


@dataclass
class Gateway:
    """Long-lived services shared by every request (built in the app lifespan)."""

    settings: Settings
    store: Store
    backends: Backends
    documents: DocumentService


Handler = Callable[[Gateway, Exchange], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    """A request action, the body root it must carry, and who answers it."""

    transaction: str
    action: str
    response_action: str
    body_root: str
    handler: Handler
