"""ebXML RegRep 3.0 / XDS.b building blocks shared by ITI-38 and ITI-39 (ITI TF-3 §4.2, §4.3)."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, fields

from lxml import etree

from soap_edge.cache import TtlCache
from soap_edge.config import NHS_NUMBER_OID, Settings
from soap_edge.patient_ids import Cx, nhs_cx
from soap_edge.soap.ns import RIM, RS, q
from soap_edge.store import DocumentRecord

SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
# IHE namespace, not urn:oasis (CONNECT and dcm4chee-arc-light#1061 got this wrong).
PARTIAL_SUCCESS = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
SEVERITY_WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"

STATUS_APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
STATUS_DEFERRED = "urn:ihe:iti:2010:StatusType:DeferredCreation"
STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
ON_DEMAND = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"

# ITI TF-3 Table 4.2.5-1 classification schemes / identification schemes (ihe-xca-rules §5.2).
SCHEME_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
SCHEME_CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
SCHEME_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
SCHEME_FORMAT = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
SCHEME_FACILITY = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
SCHEME_PRACTICE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
SCHEME_TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
ID_PATIENT = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
ID_UNIQUE = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
OBJECT_TYPE_CLASSIFICATION = (
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
)
OBJECT_TYPE_EXTERNAL_ID = (
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"
)

LOINC = "2.16.840.1.113883.6.1"
SNOMED = "2.16.840.1.113883.6.96"
ODS_ORG_OID = "2.16.840.1.113883.2.1.3.2.4.19.1"


@dataclass(frozen=True)
class Code:
    """A coded DocumentEntry attribute: code, coding scheme and display name."""

    code: str
    scheme: str
    display: str


# The one document type this gateway publishes: a C-CDA R2.1 CCD of the GP record.
CLASS_CODE = Code("34133-9", LOINC, "Summarization of Episode Note")
TYPE_CODE = Code("34133-9", LOINC, "Summarization of Episode Note")
# ihe-xca-rules §5.2: nodeRepresentation = the format URN, codingScheme = the IHE format OID.
FORMAT_CODE = Code(
    "urn:hl7-org:sdwg:ccda-structuredBody:2.1", "1.3.6.1.4.1.19376.1.2.3", "C-CDA R2.1 CCD"
)
CONFIDENTIALITY_CODE = Code("N", "2.16.840.1.113883.5.25", "Normal")
FACILITY_CODE = Code("264358009", SNOMED, "General practice premises")
PRACTICE_CODE = Code("394814009", SNOMED, "General practice")
DOCUMENT_CODES: dict[str, Code] = {
    "$XDSDocumentEntryClassCode": CLASS_CODE,
    "$XDSDocumentEntryTypeCode": TYPE_CODE,
    "$XDSDocumentEntryFormatCode": FORMAT_CODE,
    "$XDSDocumentEntryConfidentialityCode": CONFIDENTIALITY_CODE,
    "$XDSDocumentEntryHealthcareFacilityTypeCode": FACILITY_CODE,
    "$XDSDocumentEntryPracticeSettingCode": PRACTICE_CODE,
}
MIME_TYPE = "text/xml"
LANGUAGE = "en-GB"

# Namespace for name-based (v5) UUIDs: entryUUIDs and object ids derived from stable inputs so that
# repeated queries return identical metadata.
_NS = uuid.UUID("7a1d5c3e-9b0f-5e8a-b4c2-6d1f0e2a9c47")


def stable_uuid(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, '|'.join(parts))}"


def entry_uuid_for(unique_id: str) -> str:
    return stable_uuid("entry", unique_id)


def on_demand_unique_id(home_community_id: str, nhs_number: str) -> str:
    """A UUID-derived OID (ITU-T X.667, root 2.25) fixed per community and patient."""
    return "2.25." + str(uuid.uuid5(_NS, f"on-demand|{home_community_id}|{nhs_number}").int)


@dataclass
class RegistryErrorInfo:
    """One rs:RegistryError. `context` is for humans: never PHI, never exception text."""

    code: str
    context: str
    severity: str = SEVERITY_ERROR


def registry_error_list(errors: list[RegistryErrorInfo], location: str) -> etree._Element:
    """ITI TF-2b 3.38.4.1.3: every RegistryError/@location is one of our homeCommunityIds."""
    highest = (
        SEVERITY_ERROR if any(e.severity == SEVERITY_ERROR for e in errors) else SEVERITY_WARNING
    )
    el = etree.Element(q(RS, "RegistryErrorList"), nsmap={"rs": RS})
    el.set("highestSeverity", highest)
    for err in errors:
        item = etree.SubElement(el, q(RS, "RegistryError"))
        item.set("errorCode", err.code)
        item.set("codeContext", err.context)
        item.set("location", location)
        item.set("severity", err.severity)
    return el


def status_for(has_results: bool, errors: list[RegistryErrorInfo]) -> str:
    """Success / PartialSuccess / Failure (ITI TF-2b 3.39.4.1.3, ihe-xca-rules §6.3)."""
    hard = [e for e in errors if e.severity == SEVERITY_ERROR]
    if not hard:
        return SUCCESS
    return PARTIAL_SUCCESS if has_results else FAILURE


def _slot(parent: etree._Element, name: str, *values: str) -> None:
    slot = etree.SubElement(parent, q(RIM, "Slot"))
    slot.set("name", name)
    vl = etree.SubElement(slot, q(RIM, "ValueList"))
    for value in values:
        etree.SubElement(vl, q(RIM, "Value")).text = value


def _name(parent: etree._Element, text: str) -> None:
    name = etree.SubElement(parent, q(RIM, "Name"))
    etree.SubElement(name, q(RIM, "LocalizedString")).set("value", text)


def _classification(
    parent: etree._Element, scheme: str, entry_id: str, code: Code | None
) -> etree._Element:
    cl = etree.SubElement(parent, q(RIM, "Classification"))
    cl.set("classificationScheme", scheme)
    cl.set("classifiedObject", entry_id)
    cl.set("id", stable_uuid("classification", entry_id, scheme))
    cl.set("objectType", OBJECT_TYPE_CLASSIFICATION)
    cl.set("nodeRepresentation", code.code if code else "")
    if code is not None:
        _slot(cl, "codingScheme", code.scheme)
        _name(cl, code.display)
    return cl


def _external_id(
    parent: etree._Element, scheme: str, entry_id: str, value: str, label: str
) -> None:
    ei = etree.SubElement(parent, q(RIM, "ExternalIdentifier"))
    ei.set("id", stable_uuid("external-id", entry_id, scheme))
    ei.set("registryObject", entry_id)
    ei.set("identificationScheme", scheme)
    ei.set("objectType", OBJECT_TYPE_EXTERNAL_ID)
    ei.set("value", value)
    _name(ei, label)


@dataclass
class EntryView:
    """What an ExtrinsicObject shows: a stored document, or an on-demand placeholder.

    `record` is the stored snapshot a stable entry describes; an on-demand entry never shows one
    (see `_extrinsic_object`). `nhs_number` is the patient in the GP record's own domain, for
    sourcePatientId when there is no record (on-demand entries).
    """

    entry_uuid: str
    unique_id: str
    on_demand: bool
    title: str
    record: DocumentRecord | None = None
    nhs_number: str = ""


def source_patient_info(record: DocumentRecord) -> list[str]:
    """sourcePatientInfo PID fields; never an address (restricted patients never get here)."""
    values = [f"PID-3|{record.nhs_number}^^^&{NHS_NUMBER_OID}&ISO"]
    if record.family or record.given:
        values.append(f"PID-5|{record.family}^{record.given}^^^")
    if record.birth_date:
        values.append(f"PID-7|{record.birth_date}")
    if record.gender:
        values.append(f"PID-8|{record.gender}")
    return values


# Built DocumentEntries by everything they are made of (every metadata field of the record), so
# each answer for the same stored document gets a copy of the same subtree: lxml's C deepcopy
# instead of ~60 elements built in Python (benchmarks/PROFILE.md).
_ENTRIES: TtlCache[tuple[str, ...], etree._Element] = TtlCache(3600.0, max_entries=1024)
_RECORD_FIELDS = tuple(f.name for f in fields(DocumentRecord) if f.name != "content")


def source_patient_cx(view: EntryView, patient: Cx) -> Cx:
    """sourcePatientId: the patient in the local domain of the creating entity (ITI TF-3
    4.2.3.2, DocumentEntry.sourcePatientId), which for a GP record is always the NHS number,
    whatever id the query used (a partner's CEID is a patientId, never a sourcePatientId)."""
    if view.nhs_number:
        return nhs_cx(view.nhs_number)
    if view.record is not None:
        return nhs_cx(view.record.nhs_number)
    if patient.authority == NHS_NUMBER_OID:
        return patient
    raise ValueError("DocumentEntry without an NHS number for sourcePatientId")


def extrinsic_object(view: EntryView, patient: Cx, settings: Settings) -> etree._Element:
    """A LeafClass DocumentEntry with the full metadata of ihe-xca-rules §5, in rim.xsd order.

    `patient` is the patientId: the id the query used (XCA, ITI TF-2b 3.38: the initiator asks
    with the id it holds for this community, and the entries answer with it), e.g. a partner's
    CEID; sourcePatientId is always the NHS number (`source_patient_cx`).
    """
    rec = None if view.on_demand else view.record
    source_patient = source_patient_cx(view, patient)
    cache_key = (
        view.entry_uuid,
        view.unique_id,
        "on-demand" if view.on_demand else "stable",
        view.title,
        patient.render(),
        source_patient.render(),
        settings.hcid,
        settings.repository_unique_id,
        *(str(getattr(rec, name)) for name in _RECORD_FIELDS if rec is not None),
    )
    built = _ENTRIES.get(cache_key)
    if built is None:
        built = _extrinsic_object(view, rec, patient, source_patient, settings)
        _ENTRIES.put(cache_key, built)
    return copy.deepcopy(built)


def _extrinsic_object(
    view: EntryView,
    rec: DocumentRecord | None,
    patient: Cx,
    source_patient: Cx,
    settings: Settings,
) -> etree._Element:
    eo = etree.Element(q(RIM, "ExtrinsicObject"), nsmap={"rim": RIM})
    eid = view.entry_uuid
    eo.set("id", eid)
    eo.set("lid", eid)
    eo.set("objectType", ON_DEMAND if view.on_demand else STABLE)
    eo.set("status", STATUS_APPROVED)
    eo.set("mimeType", MIME_TYPE)
    eo.set("home", settings.hcid)
    # On-demand entries (ITI TF-3 4.1, On-Demand DocumentEntry; Table 4.3.1-3, XDS OD column)
    # describe the document a retrieve will generate from the record as it is then (ITI TF-2
    # 3.61.4.1: "the latest, most recent available information"), not any stored snapshot. So an
    # on-demand entry carries nothing taken from one: no creationTime/hash/size, no service
    # times, no author (the registered practice may change before the retrieve), no PID-5/7/8
    # demographics; only what its entryUUID is derived from and cannot change: the patient
    # (sourcePatientId and sourcePatientInfo PID-3, the NHS number). One entryUUID is one
    # DocumentEntry (ITI TF-3 4.2.3.2), so FindDocuments (with or without stable entries) and
    # GetDocuments show it identically. `extrinsic_object` passes rec None for on-demand views.
    # Slots: creationTime/hash/size only for stable entries, whose bytes are fixed (§5.3).
    if rec is not None:
        _slot(eo, "creationTime", rec.creation_time)
        _slot(eo, "hash", rec.hash)
    _slot(eo, "languageCode", LANGUAGE)
    _slot(eo, "repositoryUniqueId", settings.repository_unique_id)
    if rec is not None and rec.service_start:
        _slot(eo, "serviceStartTime", rec.service_start)
    if rec is not None and rec.service_stop:
        _slot(eo, "serviceStopTime", rec.service_stop)
    if rec is not None:
        _slot(eo, "size", str(rec.size))
    _slot(eo, "sourcePatientId", source_patient.render())
    if rec is not None:
        _slot(eo, "sourcePatientInfo", *source_patient_info(rec))
    else:
        _slot(eo, "sourcePatientInfo", f"PID-3|{source_patient.render()}")
    _name(eo, view.title)
    etree.SubElement(eo, q(RIM, "VersionInfo")).set("versionName", "1")
    if rec is not None and rec.gp_ods_code:
        author = _classification(eo, SCHEME_AUTHOR, eid, None)
        # XON: organisation name ^^^^^ &assigning authority&ISO ^^^^ organisation id (ODS code).
        xon = f"{rec.gp_ods_code}^^^^^&{ODS_ORG_OID}&ISO^^^^{rec.gp_ods_code}"
        author.insert(0, _slot_element("authorInstitution", xon))
    _classification(eo, SCHEME_CLASS, eid, CLASS_CODE)
    _classification(eo, SCHEME_CONFIDENTIALITY, eid, CONFIDENTIALITY_CODE)
    _classification(eo, SCHEME_FORMAT, eid, FORMAT_CODE)
    _classification(eo, SCHEME_FACILITY, eid, FACILITY_CODE)
    _classification(eo, SCHEME_PRACTICE, eid, PRACTICE_CODE)
    _classification(eo, SCHEME_TYPE, eid, TYPE_CODE)
    _external_id(eo, ID_PATIENT, eid, patient.render(), "XDSDocumentEntry.patientId")
    _external_id(eo, ID_UNIQUE, eid, view.unique_id, "XDSDocumentEntry.uniqueId")
    return eo


def _slot_element(name: str, *values: str) -> etree._Element:
    holder = etree.Element(q(RIM, "Holder"))
    _slot(holder, name, *values)
    return holder[0]


def object_ref(object_id: str, home: str) -> etree._Element:
    ref = etree.Element(q(RIM, "ObjectRef"), nsmap={"rim": RIM})
    ref.set("id", object_id)
    ref.set("home", home)
    return ref
