"""ITI-38 Cross Gateway Query (and ITI-18, same body): all 14 stored queries, validated.

Local policy decisions (ihe-xca-rules §4.6), written down once:
- Unknown, invalid, restricted or foreign-domain patient -> XDSUnknownPatientId, Failure.
- Backend down -> XDSRegistryError family or XDSUnavailableCommunity (GP system), Failure;
  never a SOAP fault.
- Each patient has one document: a C-CDA of their GP record, published as a *stable* entry (built on
  the first query, then served from Redis) and, only when the query asks for on-demand entries, as
  an *on-demand* entry. SubmissionSet/Folder/Association queries are validated and answered with an
  empty Success.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from lxml import etree
from redis.exceptions import RedisError

from soap_edge.backends import BackendFailure, xds_error
from soap_edge.config import NHS_NUMBER_OID
from soap_edge.exchange import Exchange, Gateway, Reply
from soap_edge.patient_ids import Cx, nhs_cx, normalise_nhs_number, parse_cx
from soap_edge.soap.ns import QUERY, RIM, q
from soap_edge.soap.xua import normalise_hcid
from soap_edge.xds import (
    DOCUMENT_CODES,
    ON_DEMAND,
    STABLE,
    STATUS_APPROVED,
    EntryView,
    RegistryErrorInfo,
    entry_uuid_for,
    extrinsic_object,
    object_ref,
    on_demand_unique_id,
    registry_error_list,
    status_for,
)

log = logging.getLogger(__name__)

ACTION = "urn:ihe:iti:2007:CrossGatewayQuery"
RESPONSE_ACTION = "urn:ihe:iti:2007:CrossGatewayQueryResponse"
ITI18_ACTION = "urn:ihe:iti:2007:RegistryStoredQuery"
ITI18_RESPONSE_ACTION = "urn:ihe:iti:2007:RegistryStoredQueryResponse"
BODY_ROOT = q(QUERY, "AdhocQueryRequest")
ON_DEMAND_TITLE = "GP Connect summary (CCD), generated on request"


@dataclass(frozen=True)
class Param:
    """A stored-query parameter (ITI TF-2a 3.18.4.1.2.3.7): required? list-valued? AND-able?"""

    required: bool = False
    multi: bool = False
    and_semantics: bool = False


R_SINGLE = Param(required=True)
R_MULTI = Param(required=True, multi=True)
O_SINGLE = Param()
O_MULTI = Param(multi=True)
O_AND = Param(multi=True, and_semantics=True)


@dataclass(frozen=True)
class StoredQuery:
    name: str
    params: dict[str, Param]
    patient_param: str | None = None
    # Groups of which exactly one parameter must be given (e.g. EntryUUID or UniqueId).
    one_of: tuple[tuple[str, str], ...] = ()
    # Whether the one_of parameters may carry several values.
    one_of_multi: bool = True

    @property
    def needs_home(self) -> bool:
        # ITI TF-2b 3.38.4.1.2.1: queries without a patient id must carry AdhocQuery/@home.
        return self.patient_param is None


_COMMON = {"$homeCommunityId": O_SINGLE, "$MetadataLevel": O_SINGLE}
_FIND_DOCS = {
    **_COMMON,
    "$XDSDocumentEntryPatientId": R_SINGLE,
    "$XDSDocumentEntryClassCode": O_MULTI,
    "$XDSDocumentEntryTypeCode": O_MULTI,
    "$XDSDocumentEntryPracticeSettingCode": O_MULTI,
    "$XDSDocumentEntryCreationTimeFrom": O_SINGLE,
    "$XDSDocumentEntryCreationTimeTo": O_SINGLE,
    "$XDSDocumentEntryServiceStartTimeFrom": O_SINGLE,
    "$XDSDocumentEntryServiceStartTimeTo": O_SINGLE,
    "$XDSDocumentEntryServiceStopTimeFrom": O_SINGLE,
    "$XDSDocumentEntryServiceStopTimeTo": O_SINGLE,
    "$XDSDocumentEntryHealthcareFacilityTypeCode": O_MULTI,
    "$XDSDocumentEntryEventCodeList": O_AND,
    "$XDSDocumentEntryConfidentialityCode": O_AND,
    "$XDSDocumentEntryAuthorPerson": O_MULTI,
    "$XDSDocumentEntryFormatCode": O_MULTI,
    "$XDSDocumentEntryStatus": R_MULTI,
    "$XDSDocumentEntryType": O_MULTI,
}
_CONTENT_FILTERS = {
    "$XDSDocumentEntryFormatCode": O_MULTI,
    "$XDSDocumentEntryConfidentialityCode": O_AND,
    "$XDSDocumentEntryType": O_MULTI,
}
_DOC_REF = ("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId")
_FOLDER_REF = ("$XDSFolderEntryUUID", "$XDSFolderUniqueId")
_SS_REF = ("$XDSSubmissionSetEntryUUID", "$XDSSubmissionSetUniqueId")


def _refs(pair: tuple[str, str], multi: bool) -> dict[str, Param]:
    return dict.fromkeys(pair, O_MULTI if multi else O_SINGLE)


# The ITI-18 stored query ids (ITI TF-2a Table 3.18.4.1.2.3.7-1; ids as in IPF's QueryType enum).
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
GET_ALL = "urn:uuid:10b545ea-725c-446d-9b95-8aeb444eddf3"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
GET_DOCUMENTS_AND_ASSOCIATIONS = "urn:uuid:bab9529a-4a10-40b3-a01f-f68a615d247a"
STORED_QUERIES: dict[str, StoredQuery] = {
    FIND_DOCUMENTS: StoredQuery("FindDocuments", _FIND_DOCS, "$XDSDocumentEntryPatientId"),
    "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492": StoredQuery(
        "FindDocumentsByReferenceId",
        {**_FIND_DOCS, "$XDSDocumentEntryReferenceIdList": Param(True, True, True)},
        "$XDSDocumentEntryPatientId",
    ),
    "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9": StoredQuery(
        "FindSubmissionSets",
        {
            **_COMMON,
            "$XDSSubmissionSetPatientId": R_SINGLE,
            "$XDSSubmissionSetSourceId": O_MULTI,
            "$XDSSubmissionSetSubmissionTimeFrom": O_SINGLE,
            "$XDSSubmissionSetSubmissionTimeTo": O_SINGLE,
            "$XDSSubmissionSetAuthorPerson": O_SINGLE,
            "$XDSSubmissionSetContentType": O_MULTI,
            "$XDSSubmissionSetStatus": R_MULTI,
        },
        "$XDSSubmissionSetPatientId",
    ),
    "urn:uuid:958f3006-baad-4929-a4de-ff1114824431": StoredQuery(
        "FindFolders",
        {
            **_COMMON,
            "$XDSFolderPatientId": R_SINGLE,
            "$XDSFolderLastUpdateTimeFrom": O_SINGLE,
            "$XDSFolderLastUpdateTimeTo": O_SINGLE,
            "$XDSFolderCodeList": O_AND,
            "$XDSFolderStatus": R_MULTI,
        },
        "$XDSFolderPatientId",
    ),
    GET_ALL: StoredQuery(
        "GetAll",
        {
            **_COMMON,
            **_CONTENT_FILTERS,
            "$patientId": R_SINGLE,
            "$XDSDocumentEntryStatus": R_MULTI,
            "$XDSSubmissionSetStatus": R_MULTI,
            "$XDSFolderStatus": R_MULTI,
        },
        "$patientId",
    ),
    GET_DOCUMENTS: StoredQuery(
        "GetDocuments", {**_COMMON, **_refs(_DOC_REF, True)}, one_of=(_DOC_REF,)
    ),
    "urn:uuid:5737b14c-8a1a-4539-b659-e03a34a5e1e4": StoredQuery(
        "GetFolders", {**_COMMON, **_refs(_FOLDER_REF, True)}, one_of=(_FOLDER_REF,)
    ),
    "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155": StoredQuery(
        "GetAssociations", {**_COMMON, "$uuid": R_MULTI}
    ),
    GET_DOCUMENTS_AND_ASSOCIATIONS: StoredQuery(
        "GetDocumentsAndAssociations", {**_COMMON, **_refs(_DOC_REF, True)}, one_of=(_DOC_REF,)
    ),
    "urn:uuid:51224314-5390-4169-9b91-b1980040715a": StoredQuery(
        "GetSubmissionSets", {**_COMMON, "$uuid": R_MULTI}
    ),
    "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83": StoredQuery(
        "GetSubmissionSetAndContents",
        {**_COMMON, **_CONTENT_FILTERS, **_refs(_SS_REF, False)},
        one_of=(_SS_REF,),
        one_of_multi=False,
    ),
    "urn:uuid:b909a503-523d-4517-8acf-8e5834dfc4c7": StoredQuery(
        "GetFolderAndContents",
        {**_COMMON, **_CONTENT_FILTERS, **_refs(_FOLDER_REF, False)},
        one_of=(_FOLDER_REF,),
        one_of_multi=False,
    ),
    "urn:uuid:10cae35a-c7f9-4cf5-b61e-fc3278ffb578": StoredQuery(
        "GetFoldersForDocument",
        {**_COMMON, **_refs(_DOC_REF, False)},
        one_of=(_DOC_REF,),
        one_of_multi=False,
    ),
    "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6": StoredQuery(
        "GetRelatedDocuments",
        {
            **_COMMON,
            **_refs(_DOC_REF, False),
            "$AssociationTypes": R_MULTI,
            "$XDSDocumentEntryType": O_MULTI,
        },
        one_of=(_DOC_REF,),
        one_of_multi=False,
    ),
}


class QueryError(Exception):
    """A request problem answered as a RegistryError in a Failure response."""

    def __init__(self, code: str, context: str) -> None:
        super().__init__(context)
        self.code = code
        self.context = context


# ---- Slot value syntax (ITI TF-2a 3.18.4.1.2.3.5) ---------------------------------------------
# One list item: a single-quoted string ('' escapes a quote) or a bare token without commas.
_ITEM = re.compile(r"\s*(?:'((?:[^']|'')*)'|([^,'()\s][^,]*?))\s*(?:,|$)")
# DTM: YYYY[MM[DD[hh[mm[ss]]]]] (ITI TF-3 Table 4.2.3.1.7-2).
_DTM = re.compile(r"^\d{4}(\d{2}){0,5}$")


def parse_value(raw: str) -> list[str]:
    """`'a'` -> [a]; `('a','b')` -> [a, b]; a bare value is accepted as itself."""
    text = raw.strip()
    if text.startswith("(") and text.endswith(")"):
        inner = text[1:-1].strip()
        if not inner:
            return []
        items: list[str] = []
        pos = 0
        while pos < len(inner):
            match = _ITEM.match(inner, pos)
            if match is None or match.end() == pos:
                raise QueryError("XDSRegistryError", "Malformed list value in a query parameter")
            quoted, bare = match.groups()
            items.append(quoted.replace("''", "'") if quoted is not None else bare.strip())
            pos = match.end()
        return items
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        return [text[1:-1].replace("''", "'")]
    return [text] if text else []


@dataclass
class ParsedQuery:
    definition: StoredQuery
    query_id: str
    home: str | None
    return_type: str
    # Parameter name -> one list of values per Slot occurrence.
    slots: dict[str, list[list[str]]] = field(default_factory=dict)

    def values(self, name: str) -> list[str]:
        return [v for group in self.slots.get(name, []) for v in group]

    def single(self, name: str) -> str | None:
        vals = self.values(name)
        return vals[0] if vals else None


def parse_request(payload: etree._Element) -> ParsedQuery:
    """Parse and validate the AdhocQueryRequest against the stored query's parameter table."""
    adhoc = payload.find(q(RIM, "AdhocQuery"))
    if adhoc is None:
        raise QueryError("XDSRegistryError", "AdhocQueryRequest without AdhocQuery")
    query_id = (adhoc.get("id") or "").strip()
    definition = STORED_QUERIES.get(query_id)
    if definition is None:
        raise QueryError("XDSUnknownStoredQuery", "Unknown stored query id")
    option = payload.find(q(QUERY, "ResponseOption"))
    return_type = (option.get("returnType") if option is not None else None) or "LeafClass"
    parsed = ParsedQuery(definition, query_id, adhoc.get("home"), return_type)
    for slot in adhoc.findall(q(RIM, "Slot")):
        name = slot.get("name", "")
        values: list[str] = []
        for value in slot.iterfind(f"{q(RIM, 'ValueList')}/{q(RIM, 'Value')}"):
            values.extend(parse_value(value.text or ""))
        parsed.slots.setdefault(name, []).append(values)
    _validate(parsed)
    return parsed


def _validate(parsed: ParsedQuery) -> None:
    definition = parsed.definition
    for name, groups in parsed.slots.items():
        param = definition.params.get(name)
        if param is None:
            log.info(
                "ignoring unknown stored query parameter", extra={"ecs": {"xcagw.param": name}}
            )
            continue
        count = sum(len(g) for g in groups)
        if not param.multi and (len(groups) > 1 or count > 1):
            raise QueryError("XDSStoredQueryParamNumber", f"{name} takes a single value")
    for name, param in definition.params.items():
        if param.required and not parsed.values(name):
            raise QueryError("XDSStoredQueryMissingParam", f"Missing required parameter {name}")
    for group in definition.one_of:
        given = [p for p in group if parsed.values(p)]
        if not given:
            raise QueryError(
                "XDSStoredQueryMissingParam", f"One of {group[0]} or {group[1]} is required"
            )
        if len(given) > 1:
            raise QueryError(
                "XDSStoredQueryParamNumber", f"Give {group[0]} or {group[1]}, not both"
            )
    for name in parsed.slots:
        if "Time" in name and name in definition.params:
            for value in parsed.values(name):
                if not _DTM.match(value):
                    raise QueryError("XDSRegistryError", f"{name} is not a DTM value")


# ---- Execution -------------------------------------------------------------------------------
def _code_matches(value: str, code_name: str) -> bool:
    """`code^^codingScheme` (scheme optional) against our fixed DocumentEntry codes."""
    parts = value.split("^")
    ours = DOCUMENT_CODES[code_name]
    scheme = parts[2] if len(parts) > 2 else ""
    return parts[0] == ours.code and (not scheme or scheme == ours.scheme)


def _filters_match(parsed: ParsedQuery) -> bool:
    """Coded filters, checked before any backend call: our entry's codes are fixed."""
    for name in DOCUMENT_CODES:
        groups = parsed.slots.get(name)
        if not groups or name not in parsed.definition.params:
            continue
        if parsed.definition.params[name].and_semantics:
            # Repeated Slots AND together; values within one Slot OR together.
            if not all(any(_code_matches(v, name) for v in g) for g in groups):
                return False
        elif not any(_code_matches(v, name) for v in parsed.values(name)):
            return False
    # Our entries carry no event codes, author persons or reference ids.
    for name in (
        "$XDSDocumentEntryEventCodeList",
        "$XDSDocumentEntryAuthorPerson",
        "$XDSDocumentEntryReferenceIdList",
    ):
        if parsed.values(name):
            return False
    return True


_TIME_FILTERS = (
    ("$XDSDocumentEntryCreationTimeFrom", "$XDSDocumentEntryCreationTimeTo", "creation_time"),
    (
        "$XDSDocumentEntryServiceStartTimeFrom",
        "$XDSDocumentEntryServiceStartTimeTo",
        "service_start",
    ),
    ("$XDSDocumentEntryServiceStopTimeFrom", "$XDSDocumentEntryServiceStopTimeTo", "service_stop"),
)


def _times_match(parsed: ParsedQuery, view: EntryView) -> bool:
    """From inclusive, To exclusive, at the parameter's precision (ITI TF-2a 3.18.4.1.2.3.7.1)."""
    for low_name, high_name, attr in _TIME_FILTERS:
        low, high = parsed.single(low_name), parsed.single(high_name)
        if low is None and high is None:
            continue
        value = ""
        if view.record is not None and not (view.on_demand and attr == "creation_time"):
            value = str(getattr(view.record, attr))
        if not value:
            return False
        if low is not None and value[: len(low)] < low:
            return False
        if high is not None and value[: len(high)] >= high:
            return False
    return True


async def _resolve_patient(gw: Gateway, partner: str, raw: str | None) -> tuple[Cx, str]:
    """(CX as queried, NHS number); NHS domain, or a CEID domain with a mapping that this
    partner's own ITI-47/55 recorded (another partner's CEID pairing is never used)."""
    cx = parse_cx(raw or "")
    if cx is None:
        raise QueryError(
            "XDSUnknownPatientId", "Patient id is not a CX with an ISO assigning authority"
        )
    if cx.authority == NHS_NUMBER_OID:
        nhs = normalise_nhs_number(cx.id)
        if nhs is None:
            raise QueryError("XDSUnknownPatientId", "Patient not known to this community")
        return cx, nhs
    if cx.authority in gw.settings.ceid_domains:
        mapped = await gw.store.nhs_for_ceid(partner, cx.authority, cx.id)
        if mapped is None:
            raise QueryError("XDSUnknownPatientId", "Patient not known to this community")
        return cx, mapped
    raise QueryError("XDSUnknownPatientId", "Patient id is not in this community's affinity domain")


async def _find_documents(
    gw: Gateway, ex: Exchange, parsed: ParsedQuery, patient_param: str
) -> list[tuple[EntryView, Cx]]:
    cx, nhs = await _resolve_patient(gw, ex.partner, parsed.single(patient_param))
    if parsed.definition.name in ("FindSubmissionSets", "FindFolders"):
        return []
    if not _filters_match(parsed):
        return []
    statuses = set(parsed.values("$XDSDocumentEntryStatus"))
    # ITI TF-2a 3.18.4.1.2.3.6.2: no DocumentEntryType means stable entries only.
    types = set(parsed.values("$XDSDocumentEntryType")) or {STABLE}
    # Our entries are Approved; a query for other statuses (e.g. DeferredCreation only) finds none.
    if STATUS_APPROVED not in statuses or not types & {STABLE, ON_DEMAND}:
        return []
    views: list[tuple[EntryView, Cx]] = []
    record = None
    if STABLE in types:
        record = await gw.documents.current_or_generate(ex.context, nhs)
        view = EntryView(record.entry_uuid, record.unique_id, False, record.title, record, nhs)
        if _times_match(parsed, view):
            views.append((view, cx))
    if ON_DEMAND in types:
        if record is None:
            # Never advertise an entry for an unknown or restricted patient.
            await gw.documents.check_patient(ex.context, nhs)
        uid = on_demand_unique_id(gw.settings.home_community_id, nhs)
        entry = entry_uuid_for(uid)
        await gw.store.register_on_demand(uid, entry, nhs)
        # No stored record: an on-demand entry shows no snapshot's metadata, whether or not the
        # query also asked for the stable entry (see xds._extrinsic_object), so its service times
        # are unknown and a service-time filter does not match it.
        view = _on_demand_entry(uid, nhs)
        if _times_match(parsed, view):
            views.append((view, cx))
    return views


async def _get_documents(
    gw: Gateway, ex: Exchange, parsed: ParsedQuery
) -> list[tuple[EntryView, Cx]]:
    views: list[tuple[EntryView, Cx]] = []
    for entry in parsed.values("$XDSDocumentEntryEntryUUID"):
        record = await gw.store.document_by_entry(entry)
        if record is not None:
            views.append(
                (
                    EntryView(entry, record.unique_id, False, record.title, record),
                    nhs_cx(record.nhs_number),
                )
            )
            continue
        uid = await gw.store.on_demand_by_entry(entry)
        if uid is not None:
            view = await _on_demand_view(gw, uid)
            if view is not None:
                views.append(view)
    for uid in parsed.values("$XDSDocumentEntryUniqueId"):
        record = await gw.store.document(uid)
        if record is not None:
            views.append(
                (
                    EntryView(record.entry_uuid, uid, False, record.title, record),
                    nhs_cx(record.nhs_number),
                )
            )
            continue
        view = await _on_demand_view(gw, uid)
        if view is not None:
            views.append(view)
    # Entries of patients restricted (R/V/S) or gone since they were stored are left out, so
    # the answer is the one for ids we never issued (issue #9). One PDS check per patient.
    allowed: dict[str, bool] = {}
    for _, cx in views:
        if cx.id not in allowed:
            allowed[cx.id] = await gw.documents.disclosable(ex.context, cx.id)
    return [(view, cx) for view, cx in views if allowed[cx.id]]


def _on_demand_entry(uid: str, nhs: str) -> EntryView:
    """The on-demand entry of a patient, the same for every query that finds it."""
    return EntryView(entry_uuid_for(uid), uid, True, ON_DEMAND_TITLE, nhs_number=nhs)


async def _on_demand_view(gw: Gateway, uid: str) -> tuple[EntryView, Cx] | None:
    nhs = await gw.store.on_demand_patient(uid)
    if nhs is None:
        return None
    return _on_demand_entry(uid, nhs), nhs_cx(nhs)


def _response(
    status: str, errors: list[RegistryErrorInfo], objects: list[etree._Element], location: str
) -> etree._Element:
    """AdhocQueryResponse in query.xsd order: RegistryErrorList? then RegistryObjectList."""
    resp = etree.Element(q(QUERY, "AdhocQueryResponse"), nsmap={"query": QUERY, "rim": RIM})
    resp.set("status", status)
    if errors:
        resp.append(registry_error_list(errors, location))
    rol = etree.SubElement(resp, q(RIM, "RegistryObjectList"))
    for obj in objects:
        rol.append(obj)
    return resp


def _check_home(gw: Gateway, ex: Exchange, parsed: ParsedQuery) -> None:
    home = (parsed.home or "").strip()
    if not home:
        # ITI-18 (a registry query) needs no @home; ITI-38 Get* queries do (toolkit#64).
        if parsed.definition.needs_home and ex.transaction == "ITI-38":
            raise QueryError(
                "XDSMissingHomeCommunityId", "AdhocQuery/@home is required for this query"
            )
        return
    if not gw.settings.is_our_hcid(home):
        raise QueryError("XDSUnknownCommunity", "AdhocQuery/@home is not a community served here")


async def handle(gw: Gateway, ex: Exchange) -> Reply:
    """Answer the query; every problem becomes a RegistryError in the body, never a fault."""
    location = gw.settings.hcid
    try:
        parsed = parse_request(ex.payload)
        _check_home(gw, ex, parsed)
        if parsed.home:
            # Errors name the community that was addressed when we serve several.
            location = normalise_hcid(parsed.home.strip())
        patient_param = parsed.definition.patient_param
        if patient_param is not None:
            views = await _find_documents(gw, ex, parsed, patient_param)
        elif parsed.query_id in (GET_DOCUMENTS, GET_DOCUMENTS_AND_ASSOCIATIONS):
            views = await _get_documents(gw, ex, parsed)
        else:
            views = []
        await gw.store.record_session(
            ex.partner, [v.unique_id for v, _ in views], ex.message_id, ex.transaction
        )
    except QueryError as err:
        return _failure(RegistryErrorInfo(err.code, err.context), location)
    except BackendFailure as failure:
        code, context = xds_error(failure)
        return _failure(RegistryErrorInfo(code, context), location)
    except RedisError:
        log.warning("redis unavailable during ITI-38", exc_info=True)
        return _failure(
            RegistryErrorInfo("XDSRegistryError", "Registry storage temporarily unavailable"),
            location,
        )
    except Exception:
        # The request was understood: answer in the body rather than with a fault.
        log.exception("unexpected error in ITI-38")
        return _failure(
            RegistryErrorInfo("XDSRegistryError", "The gateway could not produce the result"),
            location,
        )
    if parsed.return_type == "ObjectRef":
        objects = [object_ref(v.entry_uuid, gw.settings.hcid) for v, _ in views]
    elif len(views) > gw.settings.max_leaf_class_results:
        # ITI TF-2a 3.18.4.1.3 / ihe-xca-rules §4.3: a LeafClass result too large for one answer
        # is XDSTooManyResults; the initiator re-queries with ObjectRef and then GetDocuments.
        return _failure(
            RegistryErrorInfo(
                "XDSTooManyResults",
                f"{len(views)} results exceed the LeafClass limit of "
                f"{gw.settings.max_leaf_class_results}; query again with returnType ObjectRef",
            ),
            location,
        )
    else:
        objects = [extrinsic_object(v, cx, gw.settings) for v, cx in views]
    return Reply(_response(status_for(bool(views), []), [], objects, location))


def _failure(error: RegistryErrorInfo, location: str) -> Reply:
    return Reply(_response(status_for(False, [error]), [error], [], location), outcome="failure")
