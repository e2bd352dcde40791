"""The CCD header: US Realm Header (V3) 1.1 + CCD (V3) 1.2, ccda-requirements section 1.

UK specifics: realmCode US is still required; NHS number id root 2.16.840.1.113883.2.1.4.1;
race/ethnicity nullFlavor (no OMB categories); addresses with country GB; author is the gateway
(device) on behalf of the GP practice (CONF:1198-8457: assignedAuthor/id nullFlavor NA); the
custodian is the GP practice with its ODS code.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from ccda_converter import cda
from ccda_converter.bundle import Resource, as_list, ext_value, extensions, sub_extension, text_of
from ccda_converter.codes import (
    ADMIN_GENDER,
    CONFIDENTIALITY,
    LOINC,
    NHS_NUMBER_OID,
    concept,
    is_oid,
)
from ccda_converter.context import Context, first_name
from ccda_converter.dates import sort_key, to_ts
from ccda_converter.ns import NSMAP, v3

GENDER = {"male": ("M", "Male"), "female": ("F", "Female"), "other": ("UN", "Undifferentiated")}


def practice_of(ctx: Context, patient: Resource | None) -> Resource | None:
    """The GP practice: Patient.managingOrganization, else the first Organization."""
    if patient is not None:
        org = ctx.idx.resolve(patient.data.get("managingOrganization"), patient)
        if org is not None and org.rtype == "Organization":
            return org
    orgs = ctx.idx.of_type("Organization")
    for org in orgs:
        for ident in as_list(org.data.get("identifier")):
            if isinstance(ident, dict) and text_of(ident.get("system")).endswith(
                "ods-organization-code"
            ):
                return org
    return orgs[0] if orgs else None


def nhs_number(patient: Resource | None) -> str:
    if patient is None:
        return ""
    for ident in as_list(patient.data.get("identifier")):
        if (
            isinstance(ident, dict)
            and text_of(ident.get("system")) == "https://fhir.nhs.uk/Id/nhs-number"
        ):
            return text_of(ident.get("value"))
    return ""


def ods_code(org: Resource | None) -> str:
    if org is None:
        return ""
    for ident in as_list(org.data.get("identifier")):
        if isinstance(ident, dict) and text_of(ident.get("system")).endswith(
            "ods-organization-code"
        ):
            return text_of(ident.get("value"))
    return ""


def build(
    ctx: Context,
    patient: Resource | None,
    practice: Resource | None,
    doc_id: tuple[str, str | None],
) -> cda.Element:
    root = etree.Element(v3("ClinicalDocument"), nsmap=NSMAP)
    cda.fixed(root, "realmCode", {"code": "US"})
    cda.fixed(root, "typeId", {"root": "2.16.840.1.113883.1.3", "extension": "POCD_HD000040"})
    cda.templates(root, "2.16.840.1.113883.10.20.22.1.1", "2015-08-01")
    cda.templates(root, "2.16.840.1.113883.10.20.22.1.2", "2015-08-01")
    cda.ii(root, doc_id[0], doc_id[1])
    cda.code(root, "34133-9", LOINC, "Summarization of Episode Note", "LOINC")
    title = ctx.options.title
    practice_name = text_of(practice.data.get("name")) if practice is not None else ""
    cda.text_el(root, "title", f"{title}: {practice_name}" if practice_name else title)
    cda.sub(root, "effectiveTime", {"value": ctx.doc_ts})
    cda.code(
        root, "N", CONFIDENTIALITY, "Normal", "HL7Confidentiality", local="confidentialityCode"
    )
    cda.fixed(root, "languageCode", {"code": "en-GB"})
    # Each conversion is a new on-demand document, not a revision: setId = id, version 1.
    cda.ii(root, doc_id[0], doc_id[1], "setId")
    cda.fixed(root, "versionNumber", {"value": "1"})
    _record_target(ctx, root, patient, practice)
    _author(ctx, root, practice)
    _custodian(ctx, root, practice)
    _recipient(ctx, root)
    _service_event(ctx, root, patient)
    return root


def _organization(ctx: Context, parent: cda.Element, local: str, org: Resource | None) -> None:
    el = cda.sub(parent, local)
    if org is None:
        cda.null_ii(el)
        cda.text_el(el, "name", "GP practice not identified in the record")
        cda.fixed(el, "telecom", {"nullFlavor": "UNK"})
        cda.fixed(el, "addr", {"nullFlavor": "UNK"})
        return
    ctx.identifiers(el, org.data, org.key)
    cda.text_el(el, "name", text_of(org.data.get("name")) or "GP practice")
    ctx.telecoms(el, org.data, required=True, single=local == "representedCustodianOrganization")
    addrs = [a for a in as_list(org.data.get("address")) if isinstance(a, dict)]
    ctx.address(el, addrs[0] if addrs else None)


def _record_target(
    ctx: Context, root: cda.Element, patient: Resource | None, practice: Resource | None
) -> None:
    role = cda.sub(cda.sub(root, "recordTarget"), "patientRole")
    data = patient.data if patient is not None else {}
    ids = 0
    for ident in as_list(data.get("identifier")):
        if (
            isinstance(ident, dict)
            and text_of(ident.get("system")) == "https://fhir.nhs.uk/Id/nhs-number"
        ):
            value = text_of(ident.get("value"))
            if value:
                cda.ii(role, NHS_NUMBER_OID, value)
                ids += 1
    if ids == 0:
        if patient is None:
            cda.null_ii(role)
            ctx.warn("bundle has no Patient resource: recordTarget is unidentified")
        else:
            ctx.identifiers(role, data, patient.key)
            ctx.warn(f"{patient.key}: no NHS number")
    addrs: list[dict[str, Any] | None] = [
        a for a in as_list(data.get("address")) if isinstance(a, dict)
    ]
    for addr in addrs or [None]:
        ctx.address(role, addr)
    ctx.telecoms(role, data, required=True)
    pat = cda.sub(role, "patient")
    ctx.person_name(pat, first_name(data) if patient is not None else None)
    gender = GENDER.get(text_of(data.get("gender")))
    if gender:
        cda.code(
            pat,
            gender[0],
            ADMIN_GENDER,
            gender[1],
            "AdministrativeGender",
            local="administrativeGenderCode",
        )
    else:
        cda.fixed(pat, "administrativeGenderCode", {"nullFlavor": "UNK"})
    cda.ts(pat, "birthTime", to_ts(data.get("birthDate")))
    deceased = data.get("deceasedDateTime")
    if deceased is not None or data.get("deceasedBoolean") is True:
        etree.SubElement(pat, "{urn:hl7-org:sdtc}deceasedInd", {"value": "true"})
        if to_ts(deceased):
            etree.SubElement(
                pat, "{urn:hl7-org:sdtc}deceasedTime", {"value": to_ts(deceased) or ""}
            )
    # UK records have no OMB race/ethnicity categories; CONF:1198-5322/5323 still require them.
    cda.fixed(pat, "raceCode", {"nullFlavor": "UNK"})
    cda.fixed(pat, "ethnicGroupCode", {"nullFlavor": "UNK"})
    for ext in extensions(data, "Extension-CareConnect-GPC-NHSCommunication-1"):
        language = concept(ext_value(sub_extension(ext, "language")))
        codes = [c.code for c in language.codes]
        if codes and codes[0].replace("-", "").isalpha():
            comm = cda.sub(pat, "languageCommunication")
            cda.sub(comm, "languageCode", {"code": codes[0]})
            preferred = ext_value(sub_extension(ext, "preferred"))
            if isinstance(preferred, bool):
                cda.sub(comm, "preferenceInd", {"value": "true" if preferred else "false"})
    if practice is not None:
        _organization(ctx, role, "providerOrganization", practice)


def _author(ctx: Context, root: cda.Element, practice: Resource | None) -> None:
    author = cda.sub(root, "author")
    cda.sub(author, "time", {"value": ctx.doc_ts})
    assigned = cda.sub(author, "assignedAuthor")
    # CONF:1198-8457: device/organisation author without a person -> id nullFlavor NA.
    cda.null_ii(assigned, "NA")
    pdata: dict[str, Any] = practice.data if practice is not None else {}
    addrs = [a for a in as_list(pdata.get("address")) if isinstance(a, dict)]
    ctx.address(assigned, addrs[0] if addrs else None)
    ctx.telecoms(assigned, pdata, required=True, single=True)
    device = cda.sub(assigned, "assignedAuthoringDevice")
    cda.text_el(device, "manufacturerModelName", "GP Connect Access Record Structured (FHIR STU3)")
    cda.text_el(
        device, "softwareName", f"{ctx.options.software_name} {ctx.options.software_version}"
    )
    _organization(ctx, assigned, "representedOrganization", practice)


def _custodian(ctx: Context, root: cda.Element, practice: Resource | None) -> None:
    assigned = cda.sub(cda.sub(root, "custodian"), "assignedCustodian")
    _organization(ctx, assigned, "representedCustodianOrganization", practice)


def _recipient(ctx: Context, root: cda.Element) -> None:
    name = ctx.options.recipient_organization_name.strip()
    if not name:
        return
    intended = cda.sub(cda.sub(root, "informationRecipient"), "intendedRecipient")
    org = cda.sub(intended, "receivedOrganization")
    org_id = ctx.options.recipient_organization_id.strip().removeprefix("urn:oid:")
    if is_oid(org_id):
        cda.ii(org, org_id)
    cda.text_el(org, "name", name)


def _service_event(ctx: Context, root: cda.Element, patient: Resource | None) -> None:
    """documentationOf/serviceEvent PCPR; its effectiveTime is added by ``service_event_time``
    once the sections have seen every clinical date."""
    event = cda.sub(cda.sub(root, "documentationOf"), "serviceEvent", {"classCode": "PCPR"})
    gp = None
    if patient is not None:
        for ref in as_list(patient.data.get("generalPractitioner")):
            gp = ctx.idx.resolve(ref, patient)
            if gp is not None:
                break
    if gp is not None and gp.rtype == "PractitionerRole":
        gp = ctx.idx.resolve(gp.data.get("practitioner"), gp)
    if gp is None or gp.rtype != "Practitioner":
        return
    performer = cda.fixed(event, "performer", {"typeCode": "PRF"})
    entity = cda.sub(performer, "assignedEntity")
    ctx.identifiers(entity, gp.data, gp.key)
    person = cda.sub(entity, "assignedPerson")
    ctx.person_name(person, first_name(gp.data))
    ctx.mapped(gp)


def service_event_time(ctx: Context, root: cda.Element) -> None:
    """serviceEvent effectiveTime: low = the earliest clinical date (not after the document
    time), high = the document time."""
    event = root.find(f"{v3('documentationOf')}/{v3('serviceEvent')}")
    if event is None:  # header.build always writes one
        return
    low = ctx.earliest
    if low is None or sort_key(low) > sort_key(ctx.doc_ts):
        low = ctx.doc_ts
    event.insert(0, cda.ivl_ts(event, low, ctx.doc_ts))
