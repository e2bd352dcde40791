"""What each SOAP exchange records in its ATNA audit message (ihe-xca-rules §10.2).

Reads the request and the reply to fill `security.audit.AuditRecord`: the patients the request
names and the reply discloses, the query object (stored query id or HL7 queryId, and the query
itself), and for ITI-39 the requested documents. Patient identifiers end up in the audit record
only: nothing here logs.
"""

from __future__ import annotations

import datetime as dt

from lxml import etree

from soap_edge.exchange import Exchange, Reply
from soap_edge.patient_ids import parse_cx
from soap_edge.security.audit import (
    OUTCOME_MINOR_FAILURE,
    OUTCOME_SERIOUS_FAILURE,
    OUTCOME_SUCCESS,
    AuditRecord,
    DocumentRef,
)
from soap_edge.security.partners import normalise_hcid
from soap_edge.soap.ns import HL7, QUERY, RIM, XDSB, q
from soap_edge.xds import ID_PATIENT

AUDITED = frozenset({"ITI-18", "ITI-38", "ITI-39", "ITI-43", "ITI-47", "ITI-55"})
# Every Reply.outcome a handler gives. "not_found" is the PDQ/XCPD AA/NF answer: the query
# was carried out and matched nobody, so it succeeded (DICOM PS3.15 A.5.3 EventOutcomeIndicator
# 0); auditing it as 8 (serious failure) would flag every no-match query as an incident.
_OUTCOMES = {
    "success": OUTCOME_SUCCESS,
    "not_found": OUTCOME_SUCCESS,
    "partial": OUTCOME_MINOR_FAILURE,
    "failure": OUTCOME_SERIOUS_FAILURE,
}
_NS = {"h": HL7, "query": QUERY, "rim": RIM, "xdsb": XDSB}
# Compiled once: `_Element.xpath(str)` compiles its expression on every call, and these run on
# every audited exchange (about 9 of a cached query's ~12 us per call went into compiling).
_REQUEST_SLOT_PATIENTS = etree.XPath(
    "rim:AdhocQuery/rim:Slot[@name='$XDSDocumentEntryPatientId' or "
    "@name='$XDSFolderPatientId' or @name='$XDSSubmissionSetPatientId' or "
    "@name='$patientId']/rim:ValueList/rim:Value/text()",
    namespaces=_NS,
)
_REQUEST_SUBJECT_IDS = etree.XPath(
    "h:controlActProcess/h:queryByParameter/h:parameterList/h:livingSubjectId/h:value",
    namespaces=_NS,
)
_REPLY_ENTRY_PATIENTS = etree.XPath(
    f"//rim:ExternalIdentifier[@identificationScheme='{ID_PATIENT}']/@value", namespaces=_NS
)
_REPLY_SUBJECT_IDS = etree.XPath("//h:registrationEvent/h:subject1/h:patient/h:id", namespaces=_NS)
_STORED_QUERY_ID = etree.XPath("string(rim:AdhocQuery/@id)", namespaces=_NS)


def _cx_text(value: str) -> str | None:
    """A CX as found in a stored-query Slot (`'id^^^&root&ISO'`), normalised; None if not one."""
    cleaned = value.strip().strip("()").strip().strip("'")
    cx = parse_cx(cleaned)
    return cx.render() if cx else None


def _ii_cx(el: etree._Element) -> str | None:
    root, ext = el.get("root"), el.get("extension")
    return f"{ext}^^^&{root}&ISO" if root and ext else None


def request_patients(transaction: str, payload: etree._Element) -> list[str]:
    """Patients the request names (ITI-38 patient id slot; ITI-47/55 livingSubjectId)."""
    out: list[str] = []
    if transaction in ("ITI-38", "ITI-18"):
        for value in _REQUEST_SLOT_PATIENTS(payload):
            cx = _cx_text(str(value))
            if cx:
                out.append(cx)
    elif transaction in ("ITI-47", "ITI-55"):
        for el in _REQUEST_SUBJECT_IDS(payload):
            cx = _ii_cx(el)
            if cx:
                out.append(cx)
    return out


def reply_patients(transaction: str, payload: etree._Element) -> list[str]:
    """Patients the reply discloses (ITI-38 entries; ITI-47/55 returned subjects)."""
    out: list[str] = []
    if transaction in ("ITI-38", "ITI-18"):
        for value in _REPLY_ENTRY_PATIENTS(payload):
            cx = _cx_text(str(value))
            if cx:
                out.append(cx)
    elif transaction in ("ITI-47", "ITI-55"):
        for el in _REPLY_SUBJECT_IDS(payload):
            cx = _ii_cx(el)
            if cx:
                out.append(cx)
    return out


def _query(transaction: str, payload: etree._Element) -> tuple[str, bytes | None]:
    if transaction in ("ITI-38", "ITI-18"):
        query_id = _STORED_QUERY_ID(payload)
        return str(query_id), etree.tostring(payload, encoding="UTF-8")
    if transaction in ("ITI-47", "ITI-55"):
        qbp = payload.find(f"{q(HL7, 'controlActProcess')}/{q(HL7, 'queryByParameter')}")
        if qbp is None:
            # QUQI_IN000003UV01 continuation / cancel: the query is the continuation itself.
            qbp = payload.find(f"{q(HL7, 'controlActProcess')}/{q(HL7, 'queryContinuation')}")
        if qbp is None:
            return "", etree.tostring(payload, encoding="UTF-8")
        qid = qbp.find(q(HL7, "queryId"))
        query_id = ""
        if qid is not None:
            root, ext = qid.get("root", ""), qid.get("extension", "")
            query_id = f"{ext}@{root}" if ext else root
        return query_id, etree.tostring(qbp, encoding="UTF-8")
    return "", None


def _documents(payload: etree._Element, our_hcid: str) -> list[DocumentRef]:
    docs = []
    for req in payload.iterfind(q(XDSB, "DocumentRequest")):
        uid = (req.findtext(q(XDSB, "DocumentUniqueId")) or "").strip()
        if not uid:
            continue
        home = (req.findtext(q(XDSB, "HomeCommunityId")) or "").strip()
        docs.append(
            DocumentRef(
                unique_id=uid,
                repository_unique_id=(req.findtext(q(XDSB, "RepositoryUniqueId")) or "").strip(),
                home_community_id=normalise_hcid(home) if home else our_hcid,
            )
        )
    return docs


def audit_record(
    ex: Exchange,
    *,
    reply: Reply | None,
    outcome: int | None = None,
    outcome_description: str = "",
    source_ip: str,
    destination_url: str,
    our_hcid: str,
) -> AuditRecord:
    """The audit record of one exchange (reply None: it ended in a fault)."""
    transaction = ex.transaction
    patients = request_patients(transaction, ex.payload)
    if reply is not None:
        patients += reply_patients(transaction, reply.payload)
        patients += reply.audit_patients
    query_id, query = _query(transaction, ex.payload)
    if outcome is None:
        outcome = _OUTCOMES.get(reply.outcome if reply else "failure", OUTCOME_SERIOUS_FAILURE)
    return AuditRecord(
        transaction=transaction,
        event_time=dt.datetime.now(dt.UTC),
        outcome=outcome,
        outcome_description=outcome_description,
        source_reply_to=ex.addressing.reply_to,
        source_ip=source_ip,
        partner_id=ex.partner,
        destination_url=destination_url,
        human=ex.xua,
        patients=list(dict.fromkeys(patients)),
        query_id=query_id,
        query=query,
        home_community_id=our_hcid,
        documents=_documents(ex.payload, our_hcid) if transaction in ("ITI-39", "ITI-43") else [],
    )
