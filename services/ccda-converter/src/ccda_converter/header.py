"""The CCD header: US Realm Header (V3) 1.1 + CCD (V3) 1.2, ccda-requirements section 1.

UK specifics: realmCode US is still required; NHS number id root 2.16.840.1.113883.2.1.4.1;
race/ethnicity nullFlavor (no OMB categories); addresses with country GB; author is the gateway
(device) on behalf of the GP practice (CONF:1198-8457: assignedAuthor/id nullFlavor NA); the
custodian is the GP practice with its ODS code.
"""

from __future__ import annotations

import re
from typing import Any, Final

from lxml import etree

from ccda_converter import cda
from ccda_converter.bundle import Resource, as_list, ext_value, extensions, sub_extension, text_of
from ccda_converter.codes import (
    ADMIN_GENDER,
    CONFIDENTIALITY,
    LOINC,
    NHS_NUMBER_OID,
    is_oid,
)
from ccda_converter.context import Context, first_name
from ccda_converter.dates import sort_key, to_ts
from ccda_converter.ns import NSMAP, v3

GENDER = {"male": ("M", "Male"), "female": ("F", "Female"), "other": ("UN", "Undifferentiated")}

# CareConnect-HumanLanguage-1 (GP Connect), its UK Core successor and BCP 47 itself. The NHS codes
# are ISO 639-1 two-letter codes (a few NHS-only codes such as "q1" are not language tags and
# are left out): usable as is in languageCode, which wants an RFC 5646 tag (Language value set
# 2.16.840.1.113883.1.11.11526, CONF:1198-5407).
_LANGUAGE_SYSTEMS: Final = ("HumanLanguage-1", "UKCore-HumanLanguage", "urn:ietf:bcp:47")
_LANGUAGE_TAG: Final = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
_COMMUNICATION_EXTENSIONS: Final = (
    "Extension-CareConnect-GPC-NHSCommunication-1",
    "Extension-CareConnect-NHSCommunication-1",
    "Extension-UKCore-NHSCommunication",
)
# CareConnect-LanguageAbilityMode-1 / -Proficiency-1 use the HL7 v3 LanguageAbilityMode and
# LanguageAbilityProficiency codes (the value sets of modeCode and proficiencyLevelCode).
LANGUAGE_MODE: Final = "2.16.840.1.113883.5.60"
LANGUAGE_PROFICIENCY: Final = "2.16.840.1.113883.5.61"
_MODES: Final = {
    "ESGN": "Expressed signed",
    "ESP": "Expressed spoken",
    "EWR": "Expressed written",
    "RSGN": "Received signed",
    "RSP": "Received spoken",
    "RWR": "Received written",
}
_PROFICIENCIES: Final = {"E": "Excellent", "F": "Fair", "G": "Good", "P": "Poor"}

# Patient.contact relationship -> header participant (US Realm Header CONF:1198-10003: typeCode
# IND, associatedEntity/@classCode from INDRoleclassCodes 2.16.840.1.113883.11.20.9.33; an entity
# playing several roles is recorded in several participants, as in HL7's C-CDA R2.1 CCD example).
# GP Connect sends the role as text ("Next of kin", "Emergency contact") or HL7 v2 table 0131.
ROLE_CODE: Final = "2.16.840.1.113883.5.111"
_V2_CONTACT_ROLE: Final = {"N": "NOK", "C": "ECON"}
_TEXT_CONTACT_ROLE: Final = {"next of kin": "NOK", "nok": "NOK", "emergency contact": "ECON"}
# Personal relationship text -> HL7 RoleCode (value set Personal And Legal Relationship Role
# Type 2.16.840.1.113883.11.20.12.1) for associatedEntity/code.
_PERSONAL_ROLE: Final = {
    "daughter": ("DAUC", "daughter"),
    "son": ("SONC", "son"),
    "child": ("CHILD", "child"),
    "mother": ("MTH", "mother"),
    "father": ("FTH", "father"),
    "parent": ("PRN", "parent"),
    "wife": ("WIFE", "wife"),
    "husband": ("HUSB", "husband"),
    "spouse": ("SPS", "spouse"),
    "partner": ("DOMPART", "domestic partner"),
    "sister": ("SIS", "sister"),
    "brother": ("BRO", "brother"),
    "sibling": ("SIB", "sibling"),
    "grandmother": ("GRMTH", "grandmother"),
    "grandfather": ("GRFTH", "grandfather"),
    "granddaughter": ("GRNDDAU", "granddaughter"),
    "grandson": ("GRNDSON", "grandson"),
    "grandchild": ("GRNDCHILD", "grandchild"),
    "aunt": ("AUNT", "aunt"),
    "uncle": ("UNCLE", "uncle"),
    "niece": ("NIECE", "niece"),
    "nephew": ("NEPHEW", "nephew"),
    "cousin": ("COUSN", "cousin"),
    "friend": ("FRND", "unrelated friend"),
    "neighbour": ("NBOR", "neighbor"),
    "neighbor": ("NBOR", "neighbor"),
    "guardian": ("GUARD", "guardian"),
}


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
    if patient is not None:
        _contacts(ctx, root, patient)
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
    _languages(pat, data)
    if practice is not None:
        _organization(ctx, role, "providerOrganization", practice)


def _languages(pat: cda.Element, data: dict[str, Any]) -> None:
    """languageCommunication (languageCode, modeCode, proficiencyLevelCode, preferenceInd) from
    the NHSCommunication extension (GP Connect) and Patient.communication. interpreterRequired
    has no place in CDA R2 languageCommunication."""
    found: list[tuple[Any, Any, Any, Any]] = []
    for url in _COMMUNICATION_EXTENSIONS:
        for ext in extensions(data, url):
            found.append(
                (
                    ext_value(sub_extension(ext, "language")),
                    ext_value(sub_extension(ext, "modeOfCommunication")),
                    ext_value(sub_extension(ext, "communicationProficiency")),
                    ext_value(sub_extension(ext, "preferred")),
                )
            )
    for comm in as_list(data.get("communication")):
        if isinstance(comm, dict):
            found.append((comm.get("language"), None, None, comm.get("preferred")))
    seen: set[str] = set()
    for language, mode, proficiency, preferred in found:
        tag = _language_tag(language)
        if not tag or tag in seen:
            continue
        seen.add(tag)
        comm_el = cda.sub(pat, "languageCommunication")
        cda.sub(comm_el, "languageCode", {"code": tag})
        mode_code = _coding_in(mode, _MODES)
        if mode_code:
            cda.code(
                comm_el,
                mode_code,
                LANGUAGE_MODE,
                _MODES[mode_code],
                "LanguageAbilityMode",
                local="modeCode",
            )
        level = _coding_in(proficiency, _PROFICIENCIES)
        if level:
            cda.code(
                comm_el,
                level,
                LANGUAGE_PROFICIENCY,
                _PROFICIENCIES[level],
                "LanguageAbilityProficiency",
                local="proficiencyLevelCode",
            )
        if isinstance(preferred, bool):
            cda.sub(comm_el, "preferenceInd", {"value": "true" if preferred else "false"})


def _codings(cc: Any) -> list[tuple[str, str, str]]:
    """(system, code, display) of each coding of a CodeableConcept."""
    out: list[tuple[str, str, str]] = []
    if isinstance(cc, dict):
        for coding in as_list(cc.get("coding")):
            if isinstance(coding, dict):
                out.append(
                    (
                        text_of(coding.get("system")),
                        text_of(coding.get("code")),
                        text_of(coding.get("display")),
                    )
                )
    return out


def _language_tag(cc: Any) -> str:
    """An RFC 5646 language tag from a language CodeableConcept, or ''."""
    for system, code, _display in _codings(cc):
        if system.endswith(_LANGUAGE_SYSTEMS) and _LANGUAGE_TAG.match(code):
            primary, _, rest = code.partition("-")
            return primary.lower() + ("-" + rest if rest else "")
    return ""


def _coding_in(cc: Any, allowed: dict[str, str]) -> str:
    """The first code of a CodeableConcept that is a key of ``allowed``, or ''."""
    for _system, code, _display in _codings(cc):
        if code in allowed:
            return code
    return ""


def _contacts(ctx: Context, root: cda.Element, patient: Resource) -> None:
    """Patient.contact (next of kin, emergency contact, other personal relationships) as header
    participants: one per role (NOK, ECON; PRS for a contact with neither), with the
    relationship as associatedEntity/code, address, telecom and the person (or organisation)."""
    for contact in as_list(patient.data.get("contact")):
        if not isinstance(contact, dict):
            continue
        roles: list[str] = []
        personal: tuple[str, str] | None = None
        texts: list[str] = []
        for rel in as_list(contact.get("relationship")):
            if not isinstance(rel, dict):
                continue
            words = [text_of(rel.get("text"))]
            for system, code, display in _codings(rel):
                words.append(display)
                if system.endswith(("v2-0131", "v2/0131")) and code in _V2_CONTACT_ROLE:
                    roles.append(_V2_CONTACT_ROLE[code])
            for word in words:
                key = word.lower()
                if key in _TEXT_CONTACT_ROLE:
                    roles.append(_TEXT_CONTACT_ROLE[key])
                elif key in _PERSONAL_ROLE and personal is None:
                    personal = _PERSONAL_ROLE[key]
                elif word:
                    texts.append(word)
        name = contact.get("name")
        org = ctx.idx.resolve(contact.get("organization"), patient)
        if org is not None and org.rtype != "Organization":
            org = None
        if not isinstance(name, dict) and org is None and not contact.get("telecom"):
            continue
        for role in list(dict.fromkeys(roles)) or ["PRS"]:
            participant = cda.fixed(root, "participant", {"typeCode": "IND"})
            entity = cda.sub(participant, "associatedEntity", {"classCode": role})
            if personal is not None:
                cda.code(entity, personal[0], ROLE_CODE, personal[1], "HL7 RoleCode")
            elif texts:
                code_el = cda.fixed(entity, "code", {"nullFlavor": "OTH"})
                cda.text_el(code_el, "originalText", ", ".join(dict.fromkeys(texts)))
            address = contact.get("address")
            if isinstance(address, dict):
                ctx.address(entity, address)
            ctx.telecoms(entity, contact, required=False)
            # CONF:1198-10006: associatedPerson and/or scopingOrganization.
            if isinstance(name, dict) or org is None:
                person = cda.sub(entity, "associatedPerson")
                ctx.person_name(person, name if isinstance(name, dict) else None)
            if org is not None:
                scoping = cda.sub(entity, "scopingOrganization")
                ctx.identifiers(scoping, org.data, org.key)
                org_name = text_of(org.data.get("name"))
                if org_name:
                    cda.text_el(scoping, "name", org_name)


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
