"""GP Connect Access Record Structured 1.6: POST {service root}/Patient/$gpc.getstructuredrecord.

Plays both the Spine Secure Proxy (Ssp-* header, ASID and media type checks, SSP error shapes)
and the provider (unsigned audit JWT, Parameters validation, Spine error codes, STU3 Bundle), per
the GP Connect pages "Retrieve a patient's structured record", "Cross organisation audit and
provenance" and "Error handling guidance" (summarised in nhs-apis.md §4).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import re
import time
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from xcagw_common.nhs_number import is_valid_nhs_number
from xcagw_devstack.sandbox.outcomes import gpc_outcome, ssp_outcome
from xcagw_devstack.sandbox.panel import GpPractice, get_patient, get_practice
from xcagw_devstack.sandbox.sds import GET_STRUCTURED, structured_base
from xcagw_devstack.sandbox.state import get_state
from xcagw_devstack.sandbox.synthetic import RecordRequest, bundle_from_record

router = APIRouter()
PATH = "/gpconnect/{ods}/STU3/1/gpconnect/structured/fhir/Patient/$gpc.getstructuredrecord"
GPC_JSON = "application/fhir+json;charset=utf-8"

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_WHOLE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CLOCK_SKEW = 60
_NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"

# Part parameters per clinical area (GPConnect-GetStructuredRecord-Operation-1, 1.6).
_AREA_PARTS: dict[str, frozenset[str]] = {
    "includeAllergies": frozenset({"includeResolvedAllergies"}),
    "includeMedication": frozenset({"includePrescriptionIssues", "medicationSearchFromDate"}),
    "includeConsultations": frozenset({"consultationSearchPeriod", "includeNumberOfMostRecent"}),
    "includeProblems": frozenset({"filterStatus", "filterSignificance"}),
    "includeImmunisations": frozenset({"includeNotGiven", "includeStatus"}),
    "includeUncategorisedData": frozenset({"uncategorisedDataSearchPeriod"}),
    "includeInvestigations": frozenset({"investigationSearchPeriod"}),
    "includeReferrals": frozenset({"referralSearchPeriod"}),
    "includeDiaryEntries": frozenset({"diaryEntriesSearchDate"}),
}
# nhs-apis.md §4.2: with consultations or problems, other areas' filters are forbidden.
_FORBIDDEN_WITH_LINKED = frozenset(
    {
        "medicationSearchFromDate",
        "uncategorisedDataSearchPeriod",
        "filterStatus",
        "referralSearchPeriod",
        "diaryEntriesSearchDate",
        "includeNotGiven",
        "includeStatus",
    }
)


class GpcError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _fail(status: int, code: str, issue_type: str, diagnostics: str | None = None) -> GpcError:
    return GpcError(status, gpc_outcome(code, issue_type, diagnostics=diagnostics))


def _bad_request(diagnostics: str) -> GpcError:
    return _fail(400, "BAD_REQUEST", "invalid", diagnostics)


def _invalid_parameter(diagnostics: str) -> GpcError:
    return _fail(422, "INVALID_PARAMETER", "invalid", diagnostics)


def _invalid_resource(diagnostics: str) -> GpcError:
    return _fail(422, "INVALID_RESOURCE", "invalid", diagnostics)


def _response(status: int, body: str) -> Response:
    return Response(
        body, status_code=status, media_type=GPC_JSON, headers={"Cache-Control": "no-store"}
    )


# --- SSP and headers ----------------------------------------------------------------------------


def _check_ssp(request: Request, practice: GpPractice) -> str:
    """Spine Secure Proxy checks; returns the trace id."""
    state = get_state(request)
    headers = request.headers
    for name in ("Ssp-TraceID", "Ssp-From", "Ssp-To", "Ssp-InteractionID"):
        if not headers.get(name):
            raise _bad_request(f"{name} header is missing")
    trace_id = headers["Ssp-TraceID"]
    if not _UUID.match(trace_id):
        raise _bad_request(f"Ssp-TraceID header is not a UUID: '{trace_id}'")
    sender = headers["Ssp-From"]
    if sender not in state.settings.consumer_asids():
        raise GpcError(403, ssp_outcome(403, f"ASID_CHECK_FAILED_MESSAGESENDER_{sender}"))
    receiver = headers["Ssp-To"]
    if receiver != practice.asid:
        raise GpcError(
            403, ssp_outcome(403, f"PARTYKEY_INTERACTION_CHECK_FAILED_MESSAGERECEIVER_{receiver}")
        )
    if headers["Ssp-InteractionID"] != GET_STRUCTURED:
        raise _bad_request(
            f"Ssp-InteractionID '{headers['Ssp-InteractionID']}' does not match the operation "
            f"(expected {GET_STRUCTURED})"
        )
    content_type = headers.get("content-type", "").lower()
    if "application/fhir+json" not in content_type and "application/json+fhir" not in content_type:
        raise GpcError(415, ssp_outcome(415, "Unsupported_Media_Type", "not-supported"))
    return trace_id


# --- the audit JWT ------------------------------------------------------------------------------


def _b64json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode((part + "=" * (-len(part) % 4)).encode("ascii")))


def _identifiers(resource: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for ident in resource.get("identifier") or []:
        if (
            isinstance(ident, dict)
            and isinstance(ident.get("system"), str)
            and isinstance(ident.get("value"), str)
        ):
            out[ident["system"]] = ident["value"]
    return out


def _check_claim_resources(claims: dict[str, Any]) -> None:
    """requesting_* claims are FHIR resources: errors in them are 422 INVALID_RESOURCE."""
    device = claims["requesting_device"]
    if (
        not isinstance(device, dict)
        or device.get("resourceType") != "Device"
        or not _identifiers(device)
        or not isinstance(device.get("model"), str)
        or not isinstance(device.get("version"), str)
    ):
        raise _invalid_resource(
            "JWT requesting_device is not a valid Device (identifier, model, version)"
        )
    org = claims["requesting_organization"]
    if (
        not isinstance(org, dict)
        or org.get("resourceType") != "Organization"
        or not _identifiers(org).get("https://fhir.nhs.uk/Id/ods-organization-code")
        or not isinstance(org.get("name"), str)
    ):
        raise _invalid_resource(
            "JWT requesting_organization needs an ODS code identifier and a name"
        )
    practitioner = claims["requesting_practitioner"]
    if not isinstance(practitioner, dict) or practitioner.get("resourceType") != "Practitioner":
        raise _invalid_resource("JWT requesting_practitioner is not a Practitioner")
    ids = _identifiers(practitioner)
    names = practitioner.get("name")
    if (
        not isinstance(practitioner.get("id"), str)
        or not isinstance(names, list)
        or not names
        or not all(isinstance(n, dict) and isinstance(n.get("family"), str) for n in names)
        or "https://fhir.nhs.uk/Id/sds-user-id" not in ids
        or "https://fhir.nhs.uk/Id/sds-role-profile-id" not in ids
    ):
        raise _invalid_resource(
            "JWT requesting_practitioner needs id, name.family and the sds-user-id and "
            "sds-role-profile-id identifiers"
        )


def _check_jwt(request: Request, audience: str) -> None:
    """The unsigned GP Connect JWT ("Cross organisation audit and provenance")."""
    auth = request.headers.get("authorization")
    if not auth:
        raise _bad_request("Authorization header is missing")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _bad_request("Authorization header must be 'Bearer <JWT>'")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise _bad_request("JWT is malformed")
    try:
        header = _b64json(parts[0])
        claims = _b64json(parts[1])
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise _bad_request("JWT is malformed") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise _bad_request("JWT is malformed")
    if header.get("alg") != "none" or parts[2] != "":
        raise _bad_request("JWT must be unsigned: header alg 'none' and an empty signature")
    if header.get("typ") != "JWT":
        raise _bad_request("JWT header typ must be 'JWT'")
    for name in (
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "reason_for_request",
        "requested_scope",
        "requesting_device",
        "requesting_organization",
        "requesting_practitioner",
    ):
        if claims.get(name) in (None, "", [], {}):
            raise _bad_request(f"Empty JWT {name} claim")
    for name in ("iss", "sub", "aud", "reason_for_request", "requested_scope"):
        if not isinstance(claims[name], str):
            raise _bad_request(f"JWT {name} claim must be a string")
    exp, iat = claims["exp"], claims["iat"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (exp, iat)):
        raise _bad_request("JWT exp and iat claims must be integers")
    if exp - iat != 300:
        raise _bad_request("JWT exp must be iat + 300 seconds")
    now = int(time.time())
    if iat > now + _CLOCK_SKEW:
        raise _bad_request("JWT iat claim is in the future")
    if exp <= now:
        raise _bad_request("JWT has expired")
    if claims["aud"].rstrip("/") != audience:
        raise _bad_request(f"JWT aud claim must be the provider service root URL {audience}")
    if claims["reason_for_request"] != "directcare":
        raise _bad_request("JWT reason_for_request must be 'directcare'")
    scope = claims["requested_scope"].split(" ")
    if (
        scope[0] != "patient/*.read"
        or len(scope) > 2
        or (len(scope) == 2 and scope[1] not in ("conf/N", "conf/R"))
    ):
        raise _bad_request(
            "JWT requested_scope must be 'patient/*.read' optionally with 'conf/N' or 'conf/R'"
        )
    _check_claim_resources(claims)
    if claims["sub"] != claims["requesting_practitioner"]["id"]:
        raise _bad_request("JWT sub claim must equal requesting_practitioner.id")


# --- Parameters ---------------------------------------------------------------------------------


def _date_value(name: str, value: Any, *, today: dt.date) -> dt.date:
    if not isinstance(value, str) or not _WHOLE_DATE.match(value):
        raise _invalid_parameter(f"{name} must be a whole date (yyyy-mm-dd), got {value!r}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise _invalid_parameter(f"{name} is not a valid date: {value!r}") from exc


def _period(
    name: str, part: dict[str, Any], *, today: dt.date
) -> tuple[dt.date | None, dt.date | None]:
    period = part.get("valuePeriod")
    if not isinstance(period, dict):
        raise _invalid_parameter(f"{name} must be a valuePeriod")
    start = (
        _date_value(f"{name}.start", period["start"], today=today) if "start" in period else None
    )
    end = _date_value(f"{name}.end", period["end"], today=today) if "end" in period else None
    for d in (start, end):
        if d is not None and d > today:
            raise _invalid_parameter(f"{name} is in the future")
    if start and end and end < start:
        raise _invalid_parameter(f"{name} end is earlier than its start")
    return start, end


def _boolean(name: str, part: dict[str, Any]) -> bool:
    value = part.get("valueBoolean")
    if not isinstance(value, bool):
        raise _invalid_parameter(f"{name} must be a valueBoolean")
    return value


def _code(name: str, part: dict[str, Any], allowed: tuple[str, ...]) -> str:
    value = part.get("valueCode")
    if value not in allowed:
        raise _invalid_parameter(f"{name} must be one of {', '.join(allowed)}")
    return str(value)


def _parse_parameters(body: bytes, today: dt.date) -> tuple[str, RecordRequest, list[str]]:
    """NHS number, record request and warnings (unrecognised parameters) from the Parameters."""
    try:
        params = json.loads(body)
    except (ValueError, UnicodeError) as exc:
        raise _invalid_resource("The Parameters resource could not be parsed") from exc
    if not isinstance(params, dict) or params.get("resourceType") != "Parameters":
        raise _invalid_resource("The request body must be a FHIR Parameters resource")
    parameters = params.get("parameter")
    if not isinstance(parameters, list) or not all(
        isinstance(p, dict) and isinstance(p.get("name"), str) for p in parameters
    ):
        raise _invalid_resource("Parameters.parameter must be a list of named parameters")
    warnings: list[str] = []
    nhs_params = [p for p in parameters if p["name"] == "patientNHSNumber"]
    if not nhs_params:
        raise _invalid_parameter("patientNHSNumber parameter is missing")
    if len(nhs_params) > 1:
        raise _invalid_parameter("patientNHSNumber cannot be set more than once")
    ident = nhs_params[0].get("valueIdentifier")
    if not isinstance(ident, dict):
        raise _invalid_parameter("patientNHSNumber must be a valueIdentifier")
    if ident.get("system") != _NHS_NUMBER_SYSTEM:
        raise _fail(
            400,
            "INVALID_IDENTIFIER_SYSTEM",
            "value",
            f"patientNHSNumber system must be {_NHS_NUMBER_SYSTEM}",
        )
    nhs = ident.get("value")
    if not isinstance(nhs, str) or not is_valid_nhs_number(nhs) or " " in nhs:
        raise _fail(
            400, "INVALID_NHS_NUMBER", "value", "patientNHSNumber fails the NHS number check"
        )

    req = RecordRequest.none()
    seen: set[str] = set()
    used_parts: set[str] = set()
    problem_filters: list[tuple[str | None, str | None]] = []
    for param in parameters:
        name = param["name"]
        if name == "patientNHSNumber":
            continue
        if name not in _AREA_PARTS:
            warnings.append(f"{name} is an unrecognised parameter")
            continue
        if name in seen and name != "includeProblems":
            raise _invalid_parameter(f"{name} cannot be set more than once")
        seen.add(name)
        parts: dict[str, dict[str, Any]] = {}
        for part in param.get("part") or []:
            pname = part.get("name") if isinstance(part, dict) else None
            if not isinstance(pname, str):
                raise _invalid_resource(f"{name} has a part without a name")
            if pname not in _AREA_PARTS[name]:
                warnings.append(f"{pname} is an unrecognised part parameter of {name}")
                continue
            if pname in parts:
                raise _invalid_resource(f"Repeated part parameter {pname}")
            parts[pname] = part
            used_parts.add(pname)
        if name == "includeAllergies":
            if "includeResolvedAllergies" not in parts:
                raise _invalid_parameter("includeAllergies needs its includeResolvedAllergies part")
            req = replace(
                req,
                allergies=True,
                include_resolved_allergies=_boolean(
                    "includeResolvedAllergies", parts["includeResolvedAllergies"]
                ),
            )
        elif name == "includeMedication":
            issues = True
            if "includePrescriptionIssues" in parts:
                issues = _boolean("includePrescriptionIssues", parts["includePrescriptionIssues"])
            since = None
            if "medicationSearchFromDate" in parts:
                since = _date_value(
                    "medicationSearchFromDate",
                    parts["medicationSearchFromDate"].get("valueDate"),
                    today=today,
                )
                if since > today:
                    raise _invalid_parameter("medicationSearchFromDate is in the future")
            req = replace(
                req,
                medication=True,
                include_prescription_issues=issues,
                medication_search_from=since,
            )
        elif name == "includeConsultations":
            if "consultationSearchPeriod" in parts and "includeNumberOfMostRecent" in parts:
                raise _invalid_resource(
                    "consultationSearchPeriod and includeNumberOfMostRecent cannot be used together"
                )
            period = None
            most_recent = None
            if "consultationSearchPeriod" in parts:
                period = _period(
                    "consultationSearchPeriod", parts["consultationSearchPeriod"], today=today
                )
            if "includeNumberOfMostRecent" in parts:
                part = parts["includeNumberOfMostRecent"]
                value = part.get("valuePositiveInt", part.get("valueInteger"))
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise _invalid_parameter("includeNumberOfMostRecent must be a positive integer")
                most_recent = value
            req = replace(
                req,
                consultations=True,
                consultation_period=period,
                most_recent_consultations=most_recent,
            )
        elif name == "includeProblems":
            status = (
                _code("filterStatus", parts["filterStatus"], ("active", "inactive"))
                if "filterStatus" in parts
                else None
            )
            sig = (
                _code("filterSignificance", parts["filterSignificance"], ("major", "minor"))
                if "filterSignificance" in parts
                else None
            )
            problem_filters.append((status, sig))
            req = replace(req, problems=True)
        elif name == "includeImmunisations":
            not_given = (
                _boolean("includeNotGiven", parts["includeNotGiven"])
                if "includeNotGiven" in parts
                else False
            )
            status_obs = (
                _boolean("includeStatus", parts["includeStatus"])
                if "includeStatus" in parts
                else True
            )
            req = replace(
                req,
                immunisations=True,
                include_not_given=not_given,
                include_immunisation_status=status_obs,
            )
        elif name == "includeUncategorisedData":
            period = None
            if "uncategorisedDataSearchPeriod" in parts:
                period = _period(
                    "uncategorisedDataSearchPeriod",
                    parts["uncategorisedDataSearchPeriod"],
                    today=today,
                )
            req = replace(req, uncategorised=True, uncategorised_period=period)
        elif name == "includeInvestigations":
            period = None
            if "investigationSearchPeriod" in parts:
                period = _period(
                    "investigationSearchPeriod", parts["investigationSearchPeriod"], today=today
                )
            req = replace(req, investigations=True, investigation_period=period)
        elif name == "includeReferrals":
            period = None
            if "referralSearchPeriod" in parts:
                period = _period("referralSearchPeriod", parts["referralSearchPeriod"], today=today)
            req = replace(req, referrals=True, referral_period=period)
        elif name == "includeDiaryEntries":
            search_date = None
            if "diaryEntriesSearchDate" in parts:
                search_date = _date_value(
                    "diaryEntriesSearchDate",
                    parts["diaryEntriesSearchDate"].get("valueDate"),
                    today=today,
                )
                if search_date < today:
                    raise _invalid_parameter("diaryEntriesSearchDate must be today or later")
            req = replace(req, diary=True, diary_search_date=search_date)
    if problem_filters and any(f != (None, None) for f in problem_filters):
        req = replace(req, problem_filters=tuple(problem_filters))
    if req.consultations or req.problems:
        own = set()
        if req.problems and not req.consultations:
            own = {"filterStatus"}
        forbidden = sorted((used_parts & _FORBIDDEN_WITH_LINKED) - own)
        if forbidden:
            raise _invalid_parameter(
                f"{', '.join(forbidden)} cannot be used with includeConsultations or "
                "includeProblems"
            )
    return nhs, req, warnings


def _warning_outcome(warnings: list[str]) -> dict[str, Any]:
    outcome = gpc_outcome("NOT_IMPLEMENTED", "not-supported", severity="warning")
    issue = outcome["issue"][0]
    outcome["issue"] = [{**issue, "diagnostics": text} for text in warnings]
    return outcome


# --- the operation ------------------------------------------------------------------------------


@router.post(PATH)
async def get_structured_record(request: Request, ods: str) -> Response:
    """Return the patient's structured record for the clinical areas asked for."""
    state = get_state(request)
    base = state.base_url(request)
    practice = get_practice(ods)
    try:
        if practice is None or not practice.in_sds or practice.ods != ods:
            raise GpcError(
                400,
                ssp_outcome(
                    400,
                    f"The target URL {structured_base(base, ods)} is not registered in SDS",
                    "invalid",
                ),
            )
        trace_id = _check_ssp(request, practice)
        _check_jwt(request, structured_base(base, practice.ods))
        if not practice.structured_enabled:
            # GP Connect "Error handling guidance": a capability switched off at the practice.
            raise _fail(
                403,
                "ACCESS DENIED",
                "forbidden",
                "Access Record Structured is disabled at this practice.",
            )
        nhs, record_request, warnings = _parse_parameters(await request.body(), dt.date.today())
        patient = get_patient(nhs)
        if (
            patient is None
            or patient.superseded_by is not None
            or patient.invalidated
            or patient.restricted
            or patient.deceased
            or patient.gp_ods != practice.ods
        ):
            # Unknown, sensitive, deceased or not registered here are all PATIENT_NOT_FOUND.
            raise _fail(404, "PATIENT_NOT_FOUND", "not-found")
        if patient.gpconnect_outcome == "NO_PATIENT_CONSENT":
            raise _fail(
                403,
                "NO_PATIENT_CONSENT",
                "forbidden",
                "The patient has dissented to sharing their record",
            )
        if patient.gpconnect_outcome == "NO_RELATIONSHIP":
            raise _fail(
                403,
                "NO_RELATIONSHIP",
                "forbidden",
                "No legitimate relationship exists with this patient",
            )
    except GpcError as exc:
        return _response(exc.status, json.dumps(exc.body))

    def build() -> str:
        bundle = bundle_from_record(state.records.get(patient), record_request, bundle_id=trace_id)
        if warnings:
            bundle["entry"].append({"resource": _warning_outcome(warnings)})
        return json.dumps(bundle, separators=(",", ":"))

    # A huge record takes a noticeable time to build and serialise: keep the event loop free.
    return _response(200, await asyncio.to_thread(build))
