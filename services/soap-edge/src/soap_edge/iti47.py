"""ITI-47 Patient Demographics Query HL7 V3 (supplier), with continuation; ITI-55 reuses the query.

Outcome codes (IHE ITI TF-2b 3.47.4.2.3, ihe-xca-rules §7.3):
match -> AA/OK; no match, unknown, restricted or too many matches -> AA/NF (restricted patients are
never shown); bad parameter or invalid NHS number -> AE/QE (SYN113); unknown id domain -> AE/AE
(204, with the parameter's location); backend or storage failure -> AE/AE (INTERR), queryAck
aborted.

ITI-55 differs (ITI TF-2b 3.55.4.2.3): too many matches -> AA/OK with no subject and the
attributes that may single the patient out (Case 3, 3.55.4.2.2.6), or AE/AE AnswerNotAvailable
when the query already has every attribute we search on (Case 5, 3.55.4.2.2.7); a livingSubjectId
in a domain we do not know is the initiating community's own id (3.55.1) and is not an error when
the query has something else to match on; the queryAck carries no quantities and initialQuantity
is ignored (Tables 3.55.4.2.2.3-1 and 3.55.4.1.2.2-1).

A CEID (configured partner domain) without a stored pairing is matched on the query's
demographics; exactly one match pairs it with that NHS number for this partner (store.py).
"""

from __future__ import annotations

import calendar
import copy
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from redis.exceptions import RedisError

from soap_edge.backends import BackendFailure, FailureKind, Hl7Outcome, hl7_outcome
from soap_edge.config import NHS_NUMBER_OID
from soap_edge.exchange import Exchange, Gateway, Reply
from soap_edge.hl7 import (
    ACK_DETAIL_CODES,
    HL7_TABLE_0357,
    AckDetail,
    InstanceId,
    ii,
    message,
    read_device,
    sub,
)
from soap_edge.patient_ids import normalise_nhs_number
from soap_edge.soap.ns import HL7, XSI, q
from soap_edge.soap.parsing import XmlRejected, parse_untrusted
from xcagw.pds.v1 import pds_adapter_pb2

log = logging.getLogger(__name__)

ACTION = "urn:hl7-org:v3:PRPA_IN201305UV02"
RESPONSE_ACTION = "urn:hl7-org:v3:PRPA_IN201306UV02"
CONTINUE_ACTION = "urn:hl7-org:v3:QUQI_IN000003UV01_Continue"
CANCEL_ACTION = "urn:hl7-org:v3:QUQI_IN000003UV01_Cancel"
CANCEL_RESPONSE_ACTION = "urn:hl7-org:v3:MCCI_IN000002UV01"
BODY_ROOT = q(HL7, "PRPA_IN201305UV02")
CONTINUATION_ROOT = q(HL7, "QUQI_IN000003UV01")

# The GP practice id root used in PDQ replies (ihe-xca-rules §7.2, verify).
ODS_ROOT = "2.16.840.1.113883.2.1.4.3"
GENDER_SYSTEM = "2.16.840.1.113883.5.1"
# XCPD custodian code: we do not act as a Health Data Locator (ITI TF-2b 3.55.4.2.2.5).
XCPD_HDL_SYSTEM = "1.3.6.1.4.1.19376.1.2.27.2"
# XCPD "more attributes requested" codes, each in reasonOf/detectedIssueEvent/triggerFor/
# actOrderRequired (ITI TF-2b 3.55.4.2.2.6, Table 3.55.4.2.2.6-1).
XCPD_REQUESTED_SYSTEM = "1.3.6.1.4.1.19376.1.2.27.1"
GENDER_REQUESTED = "LivingSubjectAdministrativeGenderRequested"
ADDRESS_REQUESTED = "PatientAddressRequested"
# XCPD "problem handling the request" codes (AnswerNotAvailable, ResponderBusy, InternalError),
# in reasonOf/detectedIssueEvent/mitigatedBy/detectedIssueManagement (3.55.4.2.2.7).
XCPD_ISSUE_SYSTEM = "1.3.6.1.4.1.19376.1.2.27.3"
ANSWER_NOT_AVAILABLE = "AnswerNotAvailable"
# detectedIssueEvent/code as in both examples of 3.55.4.2.2.6-7 (HL7 ActCode).
ACT_DETECTED_ISSUE_SYSTEM = "2.16.840.1.113883.5.4"
DETECTED_ISSUE_CODE = "_ActAdministrativeDetectedIssueManagementCode"

_GENDER_FROM_HL7 = {"M": "male", "F": "female", "UN": "unknown"}
_GENDER_TO_HL7 = {"male": "M", "female": "F", "other": "UN", "unknown": "UN"}
_TELECOM_SCHEME = {"phone": "tel:", "email": "mailto:", "fax": "fax:"}
_TELECOM_USE = {"home": "HP", "work": "WP", "mobile": "MC", "temp": "TMP"}
_ADDR_USE = {"home": "H", "work": "WP", "temp": "TMP", "old": "OLD"}
_PARAMS = "//controlActProcess/queryByParameter/parameterList"


class QueryProblem(Exception):
    """The query cannot be answered as asked: an AE with the given queryResponseCode and detail."""

    def __init__(self, outcome: Hl7Outcome, detail: AckDetail, *, echo: bool = True) -> None:
        super().__init__(detail.text)
        self.outcome = outcome
        self.detail = detail
        # A malformed queryByParameter is not echoed: the reply would fail its schema too.
        self.echo = echo


def _qe(text: str, location: str = "", *, echo: bool = True) -> QueryProblem:
    return QueryProblem(
        Hl7Outcome("AE", "QE"), AckDetail("SYN113", ACK_DETAIL_CODES, text, location), echo=echo
    )


def _unknown_domain(text: str, location: str) -> QueryProblem:
    return QueryProblem(Hl7Outcome("AE", "AE"), AckDetail("204", HL7_TABLE_0357, text, location))


@dataclass
class PdqQuery:
    """The parameters of a PRPA_IN201305UV02 queryByParameter that we act on."""

    query_id: InstanceId
    qbp: etree._Element
    ids: list[tuple[int, InstanceId]] = field(default_factory=list)
    family: str = ""
    given: list[str] = field(default_factory=list)
    birth_time: str = ""
    gender: str = ""
    postal_code: str = ""
    other_ids: list[tuple[int, str]] = field(default_factory=list)
    initial_quantity: int | None = None
    minimum_degree: int | None = None

    @property
    def has_demographics(self) -> bool:
        return bool(self.family or self.birth_time or self.gender or self.postal_code)

    @property
    def searchable(self) -> bool:
        # PDS needs at least family name and birth date for a non-fuzzy search (nhs-apis §1.4).
        return bool(self.family and self.birth_time)


def _int_value(el: etree._Element | None) -> int | None:
    if el is None:
        return None
    try:
        return int(el.get("value", ""))
    except ValueError:
        return None


def parse_query(payload: etree._Element) -> PdqQuery:
    qbp = payload.find(f"{q(HL7, 'controlActProcess')}/{q(HL7, 'queryByParameter')}")
    if qbp is None:
        raise _qe("controlActProcess/queryByParameter is required")
    query_id = InstanceId.read(qbp.find(q(HL7, "queryId")))
    if query_id is None:
        raise _qe("queryByParameter/queryId is required")
    query = PdqQuery(query_id=query_id, qbp=qbp)
    query.initial_quantity = _int_value(qbp.find(q(HL7, "initialQuantity")))
    if query.initial_quantity is not None and query.initial_quantity < 1:
        raise _qe("initialQuantity must be a positive integer", echo=False)
    degree = qbp.find(
        f"{q(HL7, 'matchCriterionList')}/{q(HL7, 'minimumDegreeMatch')}/{q(HL7, 'value')}"
    )
    query.minimum_degree = _int_value(degree)
    params = qbp.find(q(HL7, "parameterList"))
    if params is None:
        raise _qe("queryByParameter/parameterList is required")
    for index, el in enumerate(params.findall(q(HL7, "livingSubjectId")), start=1):
        for value in el.findall(q(HL7, "value")):
            iid = InstanceId.read(value)
            if iid is None:
                raise _qe(
                    "livingSubjectId/value needs a root",
                    f"{_PARAMS}/livingSubjectId[{index}]",
                    echo=False,
                )
            query.ids.append((index, iid))
    names = params.findall(f"{q(HL7, 'livingSubjectName')}/{q(HL7, 'value')}")
    if names:
        # The first name value drives the PDS search; PDS matches one family name.
        first = names[0]
        query.family = " ".join((first.findtext(q(HL7, "family")) or "").split())
        query.given = [
            " ".join(g.split()) for g in first.xpath("h:given/text()", namespaces={"h": HL7})
        ]
    birth = params.find(f"{q(HL7, 'livingSubjectBirthTime')}/{q(HL7, 'value')}")
    if birth is not None:
        query.birth_time = (birth.get("value") or "").strip()
        if not _is_birth_time(query.birth_time):
            raise _qe(
                "livingSubjectBirthTime must be a date as YYYY, YYYYMM or YYYYMMDD",
                f"{_PARAMS}/livingSubjectBirthTime",
                echo=False,
            )
    gender = params.find(f"{q(HL7, 'livingSubjectAdministrativeGender')}/{q(HL7, 'value')}")
    if gender is not None:
        code = (gender.get("code") or "").strip()
        if code not in _GENDER_FROM_HL7:
            raise _qe(
                "livingSubjectAdministrativeGender must be M, F or UN",
                f"{_PARAMS}/livingSubjectAdministrativeGender",
                echo=False,
            )
        query.gender = _GENDER_FROM_HL7[code]
    postal = params.find(f"{q(HL7, 'patientAddress')}/{q(HL7, 'value')}/{q(HL7, 'postalCode')}")
    if postal is not None:
        query.postal_code = " ".join((postal.text or "").split())
    for index, el in enumerate(params.findall(q(HL7, "otherIDsScopingOrganization")), start=1):
        value = el.find(q(HL7, "value"))
        root = value.get("root", "") if value is not None else ""
        if not root:
            raise _qe(
                "otherIDsScopingOrganization/value needs a root",
                f"{_PARAMS}/otherIDsScopingOrganization[{index}]",
                echo=False,
            )
        query.other_ids.append((index, root))
    if not query.ids and not query.has_demographics:
        raise _qe("The query has no parameter this supplier can match on")
    return query


@dataclass
class Match:
    patient: pds_adapter_pb2.Patient
    score: float
    other_ids: list[tuple[str, str]] = field(default_factory=list)


def _matches_demographics(patient: pds_adapter_pb2.Patient, query: PdqQuery) -> bool:
    """Parameters are ANDed (ITI TF-2b 3.47.4.1.2.1): an id lookup still honours the others."""
    if query.gender and patient.gender and patient.gender != query.gender:
        return False
    born = patient.birth_date.replace("-", "")
    if query.birth_time and born and not born.startswith(query.birth_time[: len(born)]):
        return False
    if query.family:
        families = {n.family.casefold() for n in patient.names if n.family}
        if families and query.family.casefold() not in families:
            return False
    return True


def _is_birth_time(value: str) -> bool:
    """A TS of date precision (YYYY, YYYYMM or YYYYMMDD) naming a real date: "202413" or
    "20240230" is a bad parameter value (AE/QE), not an internal error later on."""
    if not value.isdigit() or len(value) not in (4, 6, 8):
        return False
    try:
        dt.date(int(value[:4]), int(value[4:6] or 1), int(value[6:8] or 1))
    except ValueError:
        return False
    return True


def _birth_range(value: str) -> tuple[str, str]:
    """HL7 TS (YYYY[MM[DD]], checked by _is_birth_time) -> inclusive PDS date range."""
    if len(value) == 8:
        day = f"{value[:4]}-{value[4:6]}-{value[6:]}"
        return day, day
    if len(value) == 6:
        year, month = int(value[:4]), int(value[4:])
        # monthrange, not "first of next month minus a day": no date after 9999-12 exists.
        last = calendar.monthrange(year, month)[1]
        return dt.date(year, month, 1).isoformat(), dt.date(year, month, last).isoformat()
    return f"{value}-01-01", f"{value}-12-31"


@dataclass(frozen=True)
class DetectedIssue:
    """An XCPD controlActProcess/reasonOf: attributes to add (ITI TF-2b 3.55.4.2.2.6) and/or a
    problem handling the request (3.55.4.2.2.7)."""

    requested: tuple[str, ...] = ()
    problem: str = ""


class _Query:
    """Executes one PDQ query for ITI-47 or ITI-55 (xcpd=True)."""

    def __init__(self, gw: Gateway, ex: Exchange, query: PdqQuery, *, xcpd: bool = False) -> None:
        self.gw = gw
        self.ex = ex
        self.query = query
        self.xcpd = xcpd
        # Set when PDS found too many patients to answer (never a guess: no subject).
        self.too_many = False

    def _check_domains(self) -> tuple[list[str], list[tuple[str, str]]]:
        known = {NHS_NUMBER_OID, *self.gw.settings.ceid_domains}
        nhs_numbers: list[str] = []
        ceids: list[tuple[str, str]] = []
        unknown: list[str] = []
        for index, iid in self.query.ids:
            location = f"{_PARAMS}/livingSubjectId[{index}]/value"
            if iid.root not in known:
                if not self.xcpd:
                    # PDQv3: an unrecognised domain is an error (ITI TF-2b 3.47.4.2.3 case 3).
                    raise _unknown_domain(
                        "livingSubjectId is in an unknown identifier domain", location
                    )
                # XCPD "Demographic Query and Feed" (ITI TF-2b 3.55.1, 3.55.4.1.2.1): the
                # initiating community sends its own patient id with the demographics. We keep
                # no pairing for a domain we do not know: the id is left out of the matching.
                unknown.append(location)
                continue
            if iid.root == NHS_NUMBER_OID:
                nhs = normalise_nhs_number(iid.extension)
                if nhs is None:
                    raise _qe("livingSubjectId is not a valid NHS number", location)
                nhs_numbers.append(nhs)
            elif iid.extension:
                ceids.append((iid.root, iid.extension))
        for index, root in self.query.other_ids:
            if root not in known:
                raise _unknown_domain(
                    "otherIDsScopingOrganization is an unknown identifier domain",
                    f"{_PARAMS}/otherIDsScopingOrganization[{index}]/value",
                )
        if unknown and not nhs_numbers and not ceids and not self.query.has_demographics:
            # The ids in unknown domains are the whole query: nothing left to answer it with.
            raise _unknown_domain("livingSubjectId is in an unknown identifier domain", unknown[0])
        if len(set(nhs_numbers)) > 1:
            raise _qe("livingSubjectId holds more than one NHS number")
        return nhs_numbers, ceids

    async def run(self) -> list[Match]:
        nhs_numbers, ceids = self._check_domains()
        given_nhs = nhs_numbers[0] if nhs_numbers else None
        nhs = given_nhs
        store = self.gw.store
        # CEIDs this partner has not paired yet: paired below if the demographics single out one.
        unpaired: list[tuple[str, str]] = []
        if nhs is None and ceids:
            for domain, ceid in ceids:
                # Only this partner's own pairings (store.py): a CEID names a patient for the
                # partner that sent it, never for the gateway as a whole.
                nhs = await store.nhs_for_ceid(self.ex.partner, domain, ceid)
                if nhs is not None:
                    break
            if nhs is None:
                if not self.query.searchable:
                    # An unknown CEID and nothing to search PDS with: no such patient here.
                    return []
                # Demographic matching is the norm for XCPD (ihe-xca-rules §8; ITI TF-2b
                # 3.55.4.1.2: given parameters shall be used in the matching), PDQ alike.
                unpaired = ceids
        if nhs is not None:
            try:
                patient = await self.gw.backends.get_patient(self.ex.context, nhs)
            except BackendFailure as failure:
                if failure.kind in (FailureKind.NOT_FOUND, FailureKind.RESTRICTED):
                    return []
                raise
            if not _matches_demographics(patient, self.query):
                return []
            if given_nhs is not None:
                # Epic sends its CEID next to the NHS number: keep the pair (for the current
                # number, should PDS have superseded it) for later ITI-38 queries by CEID.
                for domain, ceid in ceids:
                    await store.save_ceid_mapping(
                        self.ex.partner, domain, ceid, patient.nhs_number or nhs
                    )
            matches = [Match(patient, 1.0)]
        else:
            matches = await self._search()
            if len(matches) == 1 and matches[0].patient.nhs_number:
                # Exactly one patient fits the partner's demographics: remember its CEID for the
                # partner's later queries (ITI-38 by CEID). Several matches pair nothing.
                for domain, ceid in unpaired:
                    await store.save_ceid_mapping(
                        self.ex.partner, domain, ceid, matches[0].patient.nhs_number
                    )
        for match in matches:
            match.other_ids = await self._other_ids(match.patient.nhs_number)
        return matches

    async def _search(self) -> list[Match]:
        query = self.query
        if not query.searchable:
            raise _qe(
                "Demographic queries need livingSubjectName/family and livingSubjectBirthTime"
            )
        low, high = _birth_range(query.birth_time)
        req = pds_adapter_pb2.SearchPatientsRequest(
            context=self.ex.context,
            family=query.family,
            given=query.given,
            gender=query.gender,
            birth_date_from=low,
            birth_date_to=high,
            postal_code=query.postal_code,
            history=True,
        )
        try:
            found = await self.gw.backends.search_patients(req)
        except BackendFailure as failure:
            if failure.kind is FailureKind.TOO_MANY_MATCHES:
                # Never guess: report no match (XCPD: and what to add, see answer_query).
                self.too_many = True
                return []
            if failure.kind is FailureKind.NOT_FOUND:
                return []
            raise
        minimum = (query.minimum_degree or 0) / 100
        return [Match(p, score) for p, score in found if score >= minimum]

    def requested_attributes(self) -> tuple[str, ...]:
        """Attributes our PDS search would narrow on that the query left out (Table
        3.55.4.2.2.6-1); PDS matches a patient address by its postcode only."""
        wanted = []
        if not self.query.gender:
            wanted.append(GENDER_REQUESTED)
        if not self.query.postal_code:
            wanted.append(ADDRESS_REQUESTED)
        return tuple(wanted)

    async def _other_ids(self, nhs: str) -> list[tuple[str, str]]:
        asked = [root for _, root in self.query.other_ids]
        wanted = [
            r for r in dict.fromkeys(asked or self.gw.settings.ceid_domains) if r != NHS_NUMBER_OID
        ]
        out = []
        try:
            for root in wanted:
                ceid = await self.gw.store.ceid_for_nhs(self.ex.partner, nhs, root)
                if ceid:
                    out.append((root, ceid))
        except RedisError:
            if asked:
                raise
            # Nobody asked for other ids: answer with the NHS number rather than fail the query.
            log.warning("redis unavailable; answering without other patient ids")
            return []
        return out


# ---- Response building ----------------------------------------------------------------------
def _ts(value: str) -> str:
    """FHIR date/dateTime -> HL7 TS."""
    if "T" not in value:
        return value.replace("-", "")
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value[:10].replace("-", "")
    if stamp.tzinfo is None:
        return stamp.strftime("%Y%m%d%H%M%S")
    return stamp.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S+0000")


def subject_element(match: Match, xcpd: bool, hcid_oid: str) -> etree._Element:
    """One registrationEvent subject (PRPA_MT201310UV02), in schema order."""
    p = match.patient
    subject = etree.Element(q(HL7, "subject"), nsmap={None: HL7, "xsi": XSI})
    subject.set("typeCode", "SUBJ")
    reg = sub(subject, "registrationEvent", classCode="REG", moodCode="EVN")
    sub(reg, "id", nullFlavor="NA")
    sub(reg, "statusCode", code="active")
    patient = sub(sub(reg, "subject1", typeCode="SBJ"), "patient", classCode="PAT")
    # Superseded numbers: PDS answers with the current record; we return its number.
    ii(patient, "id", NHS_NUMBER_OID, p.nhs_number)
    sub(patient, "statusCode", code="active")
    person = sub(patient, "patientPerson", classCode="PSN", determinerCode="INSTANCE")
    names = [n for n in p.names if n.family or n.given]
    if not names:
        sub(person, "name", nullFlavor="UNK")
    for n in names:
        name = sub(person, "name")
        if n.use == "official":
            name.set("use", "L")
        for prefix in n.prefix:
            sub(name, "prefix").text = prefix
        for given in n.given:
            sub(name, "given").text = given
        if n.family:
            sub(name, "family").text = n.family
        for suffix in n.suffix:
            sub(name, "suffix").text = suffix
    for t in p.telecoms:
        scheme = _TELECOM_SCHEME.get(t.system)
        if scheme and t.value:
            tel = sub(person, "telecom", value=scheme + t.value.replace(" ", ""))
            if t.use in _TELECOM_USE:
                tel.set("use", _TELECOM_USE[t.use])
    if p.gender in _GENDER_TO_HL7:
        sub(
            person,
            "administrativeGenderCode",
            code=_GENDER_TO_HL7[p.gender],
            codeSystem=GENDER_SYSTEM,
        )
    if p.birth_date:
        sub(person, "birthTime", value=_ts(p.birth_date))
    if p.deceased_date_time:
        sub(person, "deceasedInd", value="true")
        sub(person, "deceasedTime", value=_ts(p.deceased_date_time))
    for a in p.addresses:
        addr = sub(person, "addr")
        if a.use in _ADDR_USE:
            addr.set("use", _ADDR_USE[a.use])
        for line in a.line:
            if line:
                sub(addr, "streetAddressLine").text = line
        if a.city:
            sub(addr, "city").text = a.city
        if a.district:
            sub(addr, "county").text = a.district
        if a.postal_code:
            sub(addr, "postalCode").text = a.postal_code
        if a.country:
            sub(addr, "country").text = a.country
    for root, extension in match.other_ids:
        other = sub(person, "asOtherIDs", classCode="PAT")
        ii(other, "id", root, extension)
        org = sub(other, "scopingOrganization", classCode="ORG", determinerCode="INSTANCE")
        ii(org, "id", root)
    if p.gp_ods_code:
        org = sub(patient, "providerOrganization", classCode="ORG", determinerCode="INSTANCE")
        ii(org, "id", ODS_ROOT, p.gp_ods_code)
        # COCT_MT150003UV03 requires a contactParty; we have no practice contact to give.
        sub(org, "contactParty", classCode="CON", nullFlavor="UNK")
    obs = sub(sub(patient, "subjectOf1"), "queryMatchObservation", classCode="COND", moodCode="EVN")
    sub(obs, "code", code="IHE_PDQ")
    score = sub(obs, "value", value=str(round(match.score * 100)))
    score.set(q(XSI, "type"), "INT")
    custodian = sub(sub(reg, "custodian", typeCode="CST"), "assignedEntity", classCode="ASSIGNED")
    ii(custodian, "id", hcid_oid)
    if xcpd:
        sub(custodian, "code", code="NotHealthDataLocator", codeSystem=XCPD_HDL_SYSTEM)
    return subject


def _reason_of(parent: etree._Element, issue: DetectedIssue) -> None:
    """controlActProcess/reasonOf as in the examples of ITI TF-2b 3.55.4.2.2.6 and 3.55.4.2.2.7."""
    reason = sub(parent, "reasonOf", typeCode="RSON")
    event = sub(reason, "detectedIssueEvent", classCode="ALRT", moodCode="EVN")
    sub(event, "code", code=DETECTED_ISSUE_CODE, codeSystem=ACT_DETECTED_ISSUE_SYSTEM)
    # MCAI_MT900001UV01.DetectedIssueEvent orders mitigatedBy before triggerFor.
    if issue.problem:
        mitigated = sub(event, "mitigatedBy", typeCode="MITGT")
        management = sub(mitigated, "detectedIssueManagement", classCode="ACT", moodCode="EVN")
        sub(management, "code", code=issue.problem, codeSystem=XCPD_ISSUE_SYSTEM)
    # One triggerFor per attribute asked for (3.55.4.2.2.6).
    for code in issue.requested:
        trigger = sub(event, "triggerFor", typeCode="TRIG")
        order = sub(trigger, "actOrderRequired", classCode="ACT", moodCode="RQO")
        sub(order, "code", code=code, codeSystem=XCPD_REQUESTED_SYSTEM)


def build_response(
    gw: Gateway,
    payload: etree._Element,
    outcome: Hl7Outcome,
    *,
    subjects: list[etree._Element],
    query_id: InstanceId | None,
    qbp: etree._Element | None,
    total: int,
    remaining: int,
    details: list[AckDetail] | None = None,
    issue: DetectedIssue | None = None,
    xcpd: bool = False,
) -> etree._Element:
    """PRPA_IN201306UV02: acknowledgement, subjects, queryAck, echoed queryByParameter."""
    request_id = InstanceId.read(payload.find(q(HL7, "id")))
    msg = message(
        "PRPA_IN201306UV02",
        gw.settings,
        request_id,
        read_device(payload, "sender"),
        outcome.ack,
        details,
    )
    cap = sub(msg, "controlActProcess", classCode="CACT", moodCode="EVN")
    sub(cap, "code", code="PRPA_TE201306UV02", codeSystem="2.16.840.1.113883.1.6")
    for s in subjects:
        cap.append(s)
    if issue is not None:
        _reason_of(cap, issue)
    ack = sub(cap, "queryAck")
    if query_id is not None:
        ii(ack, "queryId", query_id.root, query_id.extension)
    sub(ack, "statusCode", code="aborted" if outcome.ack != "AA" else "deliveredResponse")
    sub(ack, "queryResponseCode", code=outcome.query_response)
    # XCPD: the quantities "shall not be populated" (ITI TF-2b Table 3.55.4.2.2.3-1).
    if outcome.ack == "AA" and not xcpd:
        sub(ack, "resultTotalQuantity", value=str(total))
        sub(ack, "resultCurrentQuantity", value=str(len(subjects)))
        sub(ack, "resultRemainingQuantity", value=str(remaining))
    if qbp is not None:
        cap.append(copy.deepcopy(qbp))
    return msg


def _details(outcome: Hl7Outcome) -> list[AckDetail]:
    if not outcome.detail_code:
        return []
    return [AckDetail(outcome.detail_code, ACK_DETAIL_CODES, outcome.detail_text)]


async def answer_query(gw: Gateway, ex: Exchange, *, xcpd: bool) -> Reply:
    """PRPA_IN201305UV02 -> PRPA_IN201306UV02 for ITI-47 (xcpd=False) and ITI-55 (xcpd=True)."""
    payload = ex.payload
    query: PdqQuery | None = None
    try:
        query = parse_query(payload)
        runner = _Query(gw, ex, query, xcpd=xcpd)
        matches = await runner.run()
        issue: DetectedIssue | None = None
        if xcpd and runner.too_many:
            requested = runner.requested_attributes()
            if not requested:
                # Nothing left to ask for: Case 5 with AnswerNotAvailable (ITI TF-2b 3.55.4.2.3,
                # 3.55.4.2.2.7), not NF, which the initiator may cache as "unknown here".
                return _error_reply(
                    gw,
                    payload,
                    query,
                    Hl7Outcome("AE", "AE"),
                    [],
                    issue=DetectedIssue(problem=ANSWER_NOT_AVAILABLE),
                    xcpd=True,
                )
            issue = DetectedIssue(requested=requested)
        subjects = [subject_element(m, xcpd, gw.settings.home_community_id) for m in matches]
        # XCPD does not support initialQuantity; the responder ignores it (Table 3.55.4.1.2.2-1).
        paged = query.initial_quantity if not xcpd else None
        first = subjects[:paged] if paged else subjects
        rest = subjects[len(first) :]
        if rest:
            await gw.store.save_continuation(
                ex.partner,
                query.query_id.key(),
                {
                    "remaining": [etree.tostring(s).decode() for s in rest],
                    "total": len(subjects),
                    "qbp": etree.tostring(query.qbp).decode(),
                },
            )
        # XCPD Case 3 (ITI TF-2b 3.55.4.2.3): more attributes requested is AA/OK, no subject.
        outcome = Hl7Outcome("AA", "OK" if subjects or issue else "NF")
        return Reply(
            build_response(
                gw,
                payload,
                outcome,
                subjects=first,
                query_id=query.query_id,
                qbp=query.qbp,
                total=len(subjects),
                remaining=len(rest),
                issue=issue,
                xcpd=xcpd,
            ),
            outcome="success" if subjects else "not_found",
        )
    except QueryProblem as problem:
        return _error_reply(
            gw, payload, query, problem.outcome, [problem.detail], echo=problem.echo
        )
    except BackendFailure as failure:
        outcome = hl7_outcome(failure)
        if outcome.ack == "AA":
            return Reply(
                build_response(
                    gw,
                    payload,
                    outcome,
                    subjects=[],
                    query_id=query.query_id if query else None,
                    qbp=query.qbp if query else None,
                    total=0,
                    remaining=0,
                    xcpd=xcpd,
                ),
                outcome="not_found",
            )
        return _error_reply(gw, payload, query, outcome, _details(outcome))
    except RedisError:
        log.warning("redis unavailable during PDQ", exc_info=True)
        outcome = Hl7Outcome("AE", "AE", "INTERR", "Gateway storage temporarily unavailable")
        return _error_reply(gw, payload, query, outcome, _details(outcome))
    except Exception:
        log.exception("unexpected error in PDQ")
        outcome = Hl7Outcome("AE", "AE", "INTERR", "The gateway could not process the query")
        return _error_reply(gw, payload, query, outcome, _details(outcome))


def _error_reply(
    gw: Gateway,
    payload: etree._Element,
    query: PdqQuery | None,
    outcome: Hl7Outcome,
    details: list[AckDetail],
    *,
    echo: bool = True,
    issue: DetectedIssue | None = None,
    xcpd: bool = False,
) -> Reply:
    qbp = payload.find(f"{q(HL7, 'controlActProcess')}/{q(HL7, 'queryByParameter')}")
    query_id = (
        query.query_id
        if query
        else InstanceId.read(qbp.find(q(HL7, "queryId")) if qbp is not None else None)
    )
    return Reply(
        build_response(
            gw,
            payload,
            outcome,
            subjects=[],
            query_id=query_id,
            qbp=qbp if echo else None,
            total=0,
            remaining=0,
            details=details,
            issue=issue,
            xcpd=xcpd,
        ),
        outcome="failure",
    )


async def handle(gw: Gateway, ex: Exchange) -> Reply:
    return await answer_query(gw, ex, xcpd=False)


# ---- Continuation (QUQI_IN000003UV01) ----------------------------------------------------------
def _continuation_request(payload: etree._Element) -> tuple[InstanceId | None, int | None]:
    cont = payload.find(f"{q(HL7, 'controlActProcess')}/{q(HL7, 'queryContinuation')}")
    if cont is None:
        return None, None
    return InstanceId.read(cont.find(q(HL7, "queryId"))), _int_value(
        cont.find(q(HL7, "continuationQuantity"))
    )


def _restore(
    state: dict[str, Any], max_depth: int
) -> tuple[list[etree._Element], etree._Element | None]:
    """Parse back our own stored XML (still with the hardened parser)."""
    subjects = []
    for raw in state.get("remaining", []):
        subjects.append(
            parse_untrusted(raw.encode(), max_bytes=len(raw) * 4 + 64, max_depth=max_depth)
        )
    qbp_raw = state.get("qbp", "")
    qbp = (
        parse_untrusted(qbp_raw.encode(), max_bytes=len(qbp_raw) * 4 + 64, max_depth=max_depth)
        if qbp_raw
        else None
    )
    return subjects, qbp


async def handle_continue(gw: Gateway, ex: Exchange) -> Reply:
    """Next page of a query answered earlier (PDQ Continuation option, ITI TF-2b 3.47.4.3)."""
    payload = ex.payload
    query_id, quantity = _continuation_request(payload)
    try:
        if query_id is None:
            raise _qe("queryContinuation/queryId is required")
        state = await gw.store.continuation(ex.partner, query_id.key())
        if state is None:
            raise QueryProblem(
                Hl7Outcome("AE", "QE"),
                AckDetail("SYN113", ACK_DETAIL_CODES, "Unknown or expired queryId"),
            )
        subjects, qbp = _restore(state, 64)
        count = quantity if quantity and quantity > 0 else len(subjects)
        page, rest = subjects[:count], subjects[count:]
        if rest:
            state["remaining"] = state["remaining"][count:]
            await gw.store.save_continuation(ex.partner, query_id.key(), state)
        else:
            await gw.store.drop_continuation(ex.partner, query_id.key())
        return Reply(
            build_response(
                gw,
                payload,
                Hl7Outcome("AA", "OK"),
                subjects=page,
                query_id=query_id,
                qbp=qbp,
                total=int(state.get("total", len(subjects))),
                remaining=len(rest),
            )
        )
    except QueryProblem as problem:
        return _continuation_error(gw, payload, query_id, problem.outcome, [problem.detail])
    except (RedisError, XmlRejected):
        log.warning("continuation state unavailable", exc_info=True)
        outcome = Hl7Outcome("AE", "AE", "INTERR", "Gateway storage temporarily unavailable")
        return _continuation_error(gw, payload, query_id, outcome, _details(outcome))


def _continuation_error(
    gw: Gateway,
    payload: etree._Element,
    query_id: InstanceId | None,
    outcome: Hl7Outcome,
    details: list[AckDetail],
) -> Reply:
    return Reply(
        build_response(
            gw,
            payload,
            outcome,
            subjects=[],
            query_id=query_id,
            qbp=None,
            total=0,
            remaining=0,
            details=details,
        ),
        outcome="failure",
    )


async def handle_cancel(gw: Gateway, ex: Exchange) -> Reply:
    """Drop the continuation state; answer MCCI_IN000002UV01 (AA), also for unknown ids."""
    payload = ex.payload
    query_id, _ = _continuation_request(payload)
    request_id = InstanceId.read(payload.find(q(HL7, "id")))
    sender = read_device(payload, "sender")
    try:
        if query_id is not None:
            await gw.store.drop_continuation(ex.partner, query_id.key())
        ack = message("MCCI_IN000002UV01", gw.settings, request_id, sender, "AA")
        return Reply(ack, action=CANCEL_RESPONSE_ACTION)
    except RedisError:
        detail = AckDetail("INTERR", ACK_DETAIL_CODES, "Gateway storage temporarily unavailable")
        ack = message("MCCI_IN000002UV01", gw.settings, request_id, sender, "AE", [detail])
        return Reply(ack, outcome="failure", action=CANCEL_RESPONSE_ACTION)
