"""ITI-39 Cross Gateway Retrieve (and ITI-43, same body): stored documents as MTOM attachments.

Stable entries are served from Redis byte-for-byte (their hash/size were advertised); unknown or
expired stable ids get XDSDocumentUniqueIdError. On-demand entries return the patient's current
snapshot, regenerated when it has expired, with NewDocumentUniqueId/NewRepositoryUniqueId
(ITI TF-2b 3.39.4.1.3, On-Demand Documents option).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lxml import etree
from redis.exceptions import RedisError

from soap_edge.backends import BackendFailure, xds_error
from soap_edge.exchange import Exchange, Gateway, Reply
from soap_edge.patient_ids import nhs_cx
from soap_edge.soap.mtom import Attachment, new_content_id, xop_include
from soap_edge.soap.ns import RS, XDSB, q
from soap_edge.soap.xua import normalise_hcid
from soap_edge.store import DocumentRecord
from soap_edge.xds import MIME_TYPE, RegistryErrorInfo, registry_error_list, status_for
from xcagw_common.logging import pseudonymise

log = logging.getLogger(__name__)

ACTION = "urn:ihe:iti:2007:CrossGatewayRetrieve"
RESPONSE_ACTION = "urn:ihe:iti:2007:CrossGatewayRetrieveResponse"
ITI43_ACTION = "urn:ihe:iti:2007:RetrieveDocumentSet"
ITI43_RESPONSE_ACTION = "urn:ihe:iti:2007:RetrieveDocumentSetResponse"
BODY_ROOT = q(XDSB, "RetrieveDocumentSetRequest")
CID_DOMAIN = "soap-edge.xcagw"


class RetrieveError(Exception):
    def __init__(self, code: str, context: str) -> None:
        super().__init__(context)
        self.code = code
        self.context = context


@dataclass
class DocumentRequest:
    home: str
    repository: str
    unique_id: str


@dataclass
class Found:
    request: DocumentRequest
    record: DocumentRecord
    on_demand: bool


def parse_requests(payload: etree._Element) -> list[DocumentRequest]:
    out = []
    for req in payload.findall(q(XDSB, "DocumentRequest")):
        out.append(
            DocumentRequest(
                home=(req.findtext(q(XDSB, "HomeCommunityId")) or "").strip(),
                repository=(req.findtext(q(XDSB, "RepositoryUniqueId")) or "").strip(),
                unique_id=(req.findtext(q(XDSB, "DocumentUniqueId")) or "").strip(),
            )
        )
    return out


async def _retrieve_one(gw: Gateway, ex: Exchange, req: DocumentRequest) -> Found:
    settings = gw.settings
    if not req.home:
        if ex.transaction == "ITI-39":
            raise RetrieveError(
                "XDSMissingHomeCommunityId", "DocumentRequest without HomeCommunityId"
            )
    elif not settings.is_our_hcid(req.home):
        raise RetrieveError("XDSUnknownCommunity", "HomeCommunityId is not a community served here")
    if req.repository != settings.repository_unique_id:
        raise RetrieveError("XDSUnknownRepositoryId", "RepositoryUniqueId is not known here")
    if not req.unique_id:
        raise RetrieveError("XDSDocumentUniqueIdError", "DocumentUniqueId is empty")
    session, record = await gw.store.retrieval(ex.partner, req.unique_id)
    if session is None and settings.require_query_before_retrieve:
        raise RetrieveError(
            "LocalPolicyRestrictionError", "Document was not returned to this partner by a query"
        )
    if session is not None:
        log.info(
            "retrieve follows query",
            extra={"ecs": {"xcagw.query_message_id": session.get("query_message_id", "")}},
        )
    nhs = record.nhs_number if record is not None else None
    if nhs is None:
        nhs = await gw.store.on_demand_patient(req.unique_id)
    # A patient restricted (R/V/S) or gone since the document was stored reads exactly like an
    # unknown document: nothing tells the partner the document or the patient exists (issue #9).
    if nhs is None or not await gw.documents.disclosable(ex.context, nhs):
        raise RetrieveError("XDSDocumentUniqueIdError", "DocumentUniqueId is not known here")
    if record is not None:
        return Found(req, record, on_demand=False)
    log.info("on-demand retrieve", extra={"ecs": {"xcagw.patient": pseudonymise(nhs)}})
    record = await gw.documents.current_or_generate(ex.context, nhs)
    return Found(req, record, on_demand=True)


def _document_response(
    found: Found, settings_home: str, repository: str, cid: str
) -> etree._Element:
    """DocumentResponse children in XDS.b_DocumentRepository.xsd order."""
    dr = etree.Element(q(XDSB, "DocumentResponse"))
    etree.SubElement(dr, q(XDSB, "HomeCommunityId")).text = settings_home
    etree.SubElement(dr, q(XDSB, "RepositoryUniqueId")).text = repository
    etree.SubElement(dr, q(XDSB, "DocumentUniqueId")).text = found.request.unique_id
    if found.on_demand:
        # The persisted snapshot's identity, so a later retrieve gets the same bytes.
        etree.SubElement(dr, q(XDSB, "NewRepositoryUniqueId")).text = repository
        etree.SubElement(dr, q(XDSB, "NewDocumentUniqueId")).text = found.record.unique_id
    etree.SubElement(dr, q(XDSB, "mimeType")).text = MIME_TYPE
    doc = etree.SubElement(dr, q(XDSB, "Document"))
    doc.append(xop_include(cid))
    return dr


async def handle(gw: Gateway, ex: Exchange) -> Reply:
    settings = gw.settings
    found: list[Found] = []
    errors: list[RegistryErrorInfo] = []
    requests = parse_requests(ex.payload)
    if not requests:
        errors.append(RegistryErrorInfo("XDSRepositoryError", "No DocumentRequest in the message"))
    for req in requests:
        try:
            found.append(await _retrieve_one(gw, ex, req))
        except RetrieveError as err:
            errors.append(RegistryErrorInfo(err.code, err.context))
        except BackendFailure as failure:
            errors.append(RegistryErrorInfo(*xds_error(failure, retrieve=True)))
        except RedisError:
            log.warning("redis unavailable during ITI-39", exc_info=True)
            errors.append(
                RegistryErrorInfo(
                    "XDSRepositoryError", "Repository storage temporarily unavailable"
                )
            )
        except Exception:
            log.exception("unexpected error in ITI-39")
            errors.append(
                RegistryErrorInfo(
                    "XDSRepositoryError", "The gateway could not produce the document"
                )
            )
    status = status_for(bool(found), errors)
    resp = etree.Element(q(XDSB, "RetrieveDocumentSetResponse"), nsmap={"xdsb": XDSB, "rs": RS})
    rr = etree.SubElement(resp, q(RS, "RegistryResponse"))
    rr.set("status", status)
    if errors:
        rr.append(registry_error_list(errors, settings.hcid))
    attachments = []
    for item in found:
        cid = new_content_id(CID_DOMAIN)
        home = normalise_hcid(item.request.home) if item.request.home else settings.hcid
        resp.append(_document_response(item, home, settings.repository_unique_id, cid))
        attachments.append(Attachment(cid, MIME_TYPE, item.record.content))
    outcome = "success" if not errors else ("partial" if found else "failure")
    # IHE ITI TF-2x V.3.6 / ihe-xca-rules §6.2: the retrieve response is MTOM/XOP.
    return Reply(
        resp,
        outcome=outcome,
        attachments=attachments,
        mtom=True,
        audit_patients=[nhs_cx(item.record.nhs_number).render() for item in found],
    )
