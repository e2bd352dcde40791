"""Error bodies and JSON responses in the shapes the real NHS services use."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.responses import Response

FHIR_JSON = "application/fhir+json"
SPINE_R4 = "https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode"
SPINE_STU3 = "https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1"
SSP_SYSTEM = "http://fhir.nhs.net/ValueSet/gpconnect-schedule-response-code-1-0"

# PDS display texts (../shared/nhs/pds/errors/karate-stubs/*.json).
PDS_DISPLAY = {
    "ACCESS_DENIED": "Access Denied - Unauthorised",
    "ADDITIONAL_PROPERTIES": "Additional properties should not be included",
    "INVALIDATED_RESOURCE": (
        "Resource that has been marked as invalid was requested - "
        "invalid resources cannot be retrieved"
    ),
    "INVALID_RESOURCE_ID": "Resource Id is invalid",
    "INVALID_SEARCH_DATA": "Search data is invalid",
    "INVALID_VALUE": "Provided value is invalid",
    "MISSING_VALUE": "Required value is missing",
    "RESOURCE_NOT_FOUND": "Resource not found",
    "TOO_MANY_MATCHES": "Too Many Matches",
    "TOO_MANY_REQUESTS": "Too Many Requests",
    "UNSUPPORTED_SERVICE": "Unsupported Service",
    "UNABLE_TO_CALL_SERVICE": "Unable to call service",
    "SERVICE_UNAVAILABLE": "Service unavailable",
}

# GP Connect display texts (GP Connect "Error handling guidance" page).
GPC_DISPLAY = {
    "ACCESS DENIED": "Access denied",
    "BAD_REQUEST": "Bad request",
    "INTERNAL_SERVER_ERROR": "Internal server error",
    "INVALID_IDENTIFIER_SYSTEM": "Invalid identifier system",
    "INVALID_IDENTIFIER_VALUE": "Invalid identifier value",
    "INVALID_NHS_NUMBER": "Invalid NHS number",
    "INVALID_PARAMETER": "Submitted parameter is not valid.",
    "INVALID_RESOURCE": "Submitted resource is not valid.",
    "NOT_IMPLEMENTED": "Not implemented",
    "NO_PATIENT_CONSENT": "Patient has not provided consent to share data",
    "NO_RELATIONSHIP": "No legitimate relationship exists with this patient",
    "PATIENT_NOT_FOUND": "Patient not found",
}


def json_response(
    body: Any,
    status: int = 200,
    *,
    media_type: str = FHIR_JSON,
    headers: dict[str, str] | None = None,
) -> Response:
    """Serialise once, compactly (large Bundles), with the given media type."""
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status_code=status,
        media_type=media_type,
        headers=headers,
    )


def pds_outcome(
    code: str, issue_type: str, *, diagnostics: str | None = None, severity: str = "error"
) -> dict[str, Any]:
    """A PDS FHIR R4 OperationOutcome (PDS API spec, "Response codes")."""
    issue: dict[str, Any] = {
        "severity": severity,
        "code": issue_type,
        "details": {
            "coding": [
                {
                    "system": SPINE_R4,
                    "version": "1",
                    "code": code,
                    "display": PDS_DISPLAY.get(code, code),
                }
            ]
        },
    }
    if diagnostics:
        issue["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def gpc_outcome(
    code: str, issue_type: str, *, diagnostics: str | None = None, severity: str = "error"
) -> dict[str, Any]:
    """A GPConnect-OperationOutcome-1 (GP Connect "Error handling guidance")."""
    issue: dict[str, Any] = {
        "severity": severity,
        "code": issue_type,
        "details": {
            "coding": [{"system": SPINE_STU3, "code": code, "display": GPC_DISPLAY.get(code, code)}]
        },
    }
    if diagnostics:
        issue["diagnostics"] = diagnostics
    return {
        "resourceType": "OperationOutcome",
        "meta": {
            "profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/GPConnect-OperationOutcome-1"]
        },
        "issue": [issue],
    }


def ssp_outcome(http: int, display: str, issue_type: str = "forbidden") -> dict[str, Any]:
    """An error raised by the Spine Secure Proxy itself, not the provider (SSP error examples)."""
    return {
        "resourceType": "OperationOutcome",
        "id": str(uuid.uuid4()).upper(),
        "issue": [
            {
                "code": issue_type,
                "severity": "error",
                "details": {
                    "coding": [{"code": str(http), "display": display, "system": SSP_SYSTEM}]
                },
                "diagnostics": display,
            }
        ],
    }


def oauth_error(error: str, description: str) -> dict[str, str]:
    """An NHS identity-service error body (always carries a random message_id)."""
    return {
        "error": error,
        "error_description": description,
        "message_id": f"rrt-{uuid.uuid4().int % 10**19}-sandbox",
    }
