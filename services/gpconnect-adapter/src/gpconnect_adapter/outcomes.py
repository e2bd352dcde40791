"""Errors of this adapter and the mapping of GP Connect / SSP failures to gRPC statuses.

The table of record is in the `gpconnect_adapter.servicer` module docstring; this module
implements it. Every failure becomes an `AdapterError(code, reason, message, metadata)` and the
servicer turns it into a rich gRPC status (`xcagw_common.errors.abort`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import grpc

# GP Connect error handling guidance (GPConnect-OperationOutcome-1): provider errors carry a code
# from this system in issue[0].details.coding.
SPINE_ERROR_SYSTEM = "https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1"
# The Spine Secure Proxy answers in its own OperationOutcome shape: details.coding.code is the HTTP
# status and display/diagnostics hold an UPPER_SNAKE text with ASIDs or URLs appended.
SSP_ERROR_SYSTEMS = (
    "http://fhir.nhs.net/ValueSet/gpconnect-schedule-response-code-1-0",
    "https://fhir.nhs.uk/StructureDefinition/spine-operationoutcome-1",
)


@dataclass
class AdapterError(Exception):
    """A failure with the gRPC status and ErrorInfo reason the caller will see."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    # Whether a retry of the same upstream call may succeed (5xx, 429, timeouts, resets).
    retryable: bool = False
    # Whether the failure says the upstream endpoint is unhealthy (counts for the breaker).
    upstream_failure: bool = False
    retry_after_seconds: float | None = None

    def __str__(self) -> str:
        return f"{self.code.name}/{self.reason}: {self.message}"


@dataclass(frozen=True)
class _Mapping:
    code: grpc.StatusCode
    reason: str
    retryable: bool = False


_C = grpc.StatusCode

# Provider (GP Connect) Spine error codes, GP Connect 1.6 "Error handling guidance" and the
# "Retrieve a patient's structured record" error table.
SPINE_CODE_MAP: dict[str, _Mapping] = {
    # 404 not-found
    "PATIENT_NOT_FOUND": _Mapping(_C.NOT_FOUND, "PATIENT_NOT_FOUND"),
    "NO_RECORD_FOUND": _Mapping(_C.NOT_FOUND, "NO_RECORD_FOUND"),
    "ORGANISATION_NOT_FOUND": _Mapping(_C.FAILED_PRECONDITION, "ORGANISATION_NOT_FOUND"),
    "PRACTITIONER_NOT_FOUND": _Mapping(_C.FAILED_PRECONDITION, "PRACTITIONER_NOT_FOUND"),
    # 403 forbidden: patient or practice policy
    "NO_PATIENT_CONSENT": _Mapping(_C.PERMISSION_DENIED, "NO_PATIENT_CONSENT"),
    "NO_ORGANISATION_CONSENT": _Mapping(_C.PERMISSION_DENIED, "NO_ORGANISATION_CONSENT"),
    "NO_RELATIONSHIP": _Mapping(_C.PERMISSION_DENIED, "NO_RELATIONSHIP"),
    # The spec spells this one with a space; ErrorInfo reasons are UPPER_SNAKE.
    "ACCESS DENIED": _Mapping(_C.PERMISSION_DENIED, "ACCESS_DENIED"),
    "ACCESS_DENIED": _Mapping(_C.PERMISSION_DENIED, "ACCESS_DENIED"),
    # 400 / 422: the request we built was rejected
    "INVALID_NHS_NUMBER": _Mapping(_C.INVALID_ARGUMENT, "INVALID_NHS_NUMBER"),
    "INVALID_IDENTIFIER_SYSTEM": _Mapping(_C.INVALID_ARGUMENT, "INVALID_IDENTIFIER_SYSTEM"),
    "INVALID_IDENTIFIER_VALUE": _Mapping(_C.INVALID_ARGUMENT, "INVALID_IDENTIFIER_VALUE"),
    "INVALID_PATIENT_DEMOGRAPHICS": _Mapping(_C.INVALID_ARGUMENT, "INVALID_PATIENT_DEMOGRAPHICS"),
    "INVALID_PARAMETER": _Mapping(_C.INVALID_ARGUMENT, "INVALID_PARAMETER"),
    "INVALID_RESOURCE": _Mapping(_C.INVALID_ARGUMENT, "INVALID_RESOURCE"),
    "REFERENCE_NOT_FOUND": _Mapping(_C.INVALID_ARGUMENT, "REFERENCE_NOT_FOUND"),
    "CONFLICTING_VALUES": _Mapping(_C.INVALID_ARGUMENT, "CONFLICTING_VALUES"),
    "BAD_REQUEST": _Mapping(_C.INVALID_ARGUMENT, "BAD_REQUEST"),
    "DUPLICATE_REJECTED": _Mapping(_C.ALREADY_EXISTS, "DUPLICATE_REJECTED"),
    # 5xx
    "NOT_IMPLEMENTED": _Mapping(_C.UNIMPLEMENTED, "NOT_IMPLEMENTED"),
    "INTERNAL_SERVER_ERROR": _Mapping(_C.UNAVAILABLE, "INTERNAL_SERVER_ERROR", retryable=True),
}

# Spine Secure Proxy errors: the UPPER_SNAKE text before the appended ASIDs / URL.
SSP_CODE_MAP: dict[str, _Mapping] = {
    "ASID_CHECK_FAILED_MESSAGESENDER": _Mapping(
        _C.FAILED_PRECONDITION, "ASID_CHECK_FAILED_MESSAGESENDER"
    ),
    "FOT_CHECK_FAILED_MESSAGESENDER": _Mapping(
        _C.FAILED_PRECONDITION, "FOT_CHECK_FAILED_MESSAGESENDER"
    ),
    "PARTYKEY_INTERACTION_CHECK_FAILED": _Mapping(
        _C.FAILED_PRECONDITION, "PARTYKEY_INTERACTION_CHECK_FAILED"
    ),
    "ERROR_COMMUNICATING_TO_ENDPOINT_URL": _Mapping(
        _C.UNAVAILABLE, "ERROR_COMMUNICATING_TO_ENDPOINT_URL", retryable=True
    ),
}
_SSP_PREFIXES = tuple(sorted(SSP_CODE_MAP, key=len, reverse=True))

# Fallback by HTTP status when the body names no code we know.
_HTTP_FALLBACK: dict[int, _Mapping] = {
    400: _Mapping(_C.INVALID_ARGUMENT, "UPSTREAM_BAD_REQUEST"),
    401: _Mapping(_C.PERMISSION_DENIED, "UPSTREAM_UNAUTHORISED"),
    403: _Mapping(_C.PERMISSION_DENIED, "UPSTREAM_FORBIDDEN"),
    # A 404 without a Spine code means the URL itself is unknown, not that the patient is.
    404: _Mapping(_C.FAILED_PRECONDITION, "ENDPOINT_NOT_FOUND"),
    405: _Mapping(_C.INTERNAL, "SSP_METHOD_NOT_ALLOWED"),
    409: _Mapping(_C.ABORTED, "UPSTREAM_CONFLICT"),
    415: _Mapping(_C.INTERNAL, "SSP_UNSUPPORTED_MEDIA_TYPE"),
    422: _Mapping(_C.INVALID_ARGUMENT, "UPSTREAM_UNPROCESSABLE"),
    429: _Mapping(_C.RESOURCE_EXHAUSTED, "RATE_LIMITED", retryable=True),
    501: _Mapping(_C.UNIMPLEMENTED, "NOT_IMPLEMENTED"),
}

# RFC 9110 §10.2.3 / RFC 6585 §4: statuses whose Retry-After is passed on to the caller (ErrorInfo
# metadata `retry_after_seconds`).
RETRY_AFTER_STATUSES = frozenset({429, 503})

_NHS_NUMBER_LIKE = re.compile(r"(?<!\d)\d{3}[ -]?\d{3}[ -]?\d{4}(?!\d)")


def scrub(text: str, limit: int = 300) -> str:
    """Upstream diagnostics with anything shaped like an NHS number removed, truncated."""
    return _NHS_NUMBER_LIKE.sub("[redacted]", text)[:limit]


def _first_issue(outcome: dict[str, Any]) -> dict[str, Any]:
    issues = outcome.get("issue")
    if isinstance(issues, list):
        for issue in issues:
            if isinstance(issue, dict):
                return issue
    return {}


def _codings(issue: dict[str, Any]) -> list[dict[str, Any]]:
    details = issue.get("details")
    if not isinstance(details, dict):
        return []
    codings = details.get("coding")
    return [c for c in codings if isinstance(c, dict)] if isinstance(codings, list) else []


def spine_code(outcome: dict[str, Any]) -> tuple[str, str]:
    """(code, source) of an OperationOutcome: source is "provider", "ssp" or ""."""
    issue = _first_issue(outcome)
    for coding in _codings(issue):
        code = coding.get("code")
        if coding.get("system") == SPINE_ERROR_SYSTEM and isinstance(code, str):
            return code.strip(), "provider"
    for coding in _codings(issue):
        display = coding.get("display")
        text = display if isinstance(display, str) else ""
        if coding.get("system") in SSP_ERROR_SYSTEMS or text.upper().startswith(_SSP_PREFIXES):
            for prefix in _SSP_PREFIXES:
                if text.upper().startswith(prefix):
                    return prefix, "ssp"
            return text.strip(), "ssp"
    diagnostics = issue.get("diagnostics")
    if isinstance(diagnostics, str):
        for prefix in _SSP_PREFIXES:
            if diagnostics.upper().startswith(prefix):
                return prefix, "ssp"
    # Any other coding: keep its code so that unknown Spine codes still reach the caller.
    for coding in _codings(issue):
        code = coding.get("code")
        if isinstance(code, str) and code.strip() and not code.strip().isdigit():
            return code.strip(), "provider"
    return "", ""


def _reason_token(text: str) -> str:
    token = re.sub(r"[^A-Z0-9]+", "_", text.upper()).strip("_")
    return token[:64] or "UPSTREAM_ERROR"


def parse_outcome(body: bytes) -> dict[str, Any] | None:
    """The OperationOutcome in `body`, or None when it is not one."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome":
        return doc
    return None


def from_http(
    status: int,
    body: bytes,
    *,
    upstream: str,
    retry_after_seconds: float | None = None,
    metadata: dict[str, str] | None = None,
) -> AdapterError:
    """Map a non-2xx GP Connect / SSP response (or a 200 OperationOutcome) to an AdapterError."""
    meta = dict(metadata or {})
    meta["http_status"] = str(status)
    if retry_after_seconds is not None and status in RETRY_AFTER_STATUSES:
        meta["retry_after_seconds"] = f"{retry_after_seconds:.1f}"
    outcome = parse_outcome(body)
    code_text, source = spine_code(outcome) if outcome is not None else ("", "")
    mapping: _Mapping | None = None
    if code_text:
        meta["spine_code"] = code_text
        meta["error_source"] = source
        mapping = (SSP_CODE_MAP if source == "ssp" else SPINE_CODE_MAP).get(code_text)
        if mapping is None:
            mapping = SPINE_CODE_MAP.get(code_text) or SSP_CODE_MAP.get(code_text)
    if outcome is not None:
        diagnostics = _first_issue(outcome).get("diagnostics")
        if isinstance(diagnostics, str) and diagnostics.strip():
            meta["diagnostics"] = scrub(diagnostics)
    if mapping is None:
        fallback = _HTTP_FALLBACK.get(status)
        if fallback is None:
            fallback = (
                _Mapping(_C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", retryable=True)
                if status >= 500
                else _Mapping(_C.UNKNOWN, "UPSTREAM_ERROR")
            )
        if code_text and source != "ssp":
            # An unknown Spine code keeps the gRPC status of its HTTP family and names itself.
            # (SSP texts are free-form, e.g. "405: Method Not Allowed": the HTTP reason is used.)
            fallback = _Mapping(fallback.code, _reason_token(code_text), fallback.retryable)
        mapping = fallback
    retryable = mapping.retryable or status in (429, 500, 502, 503, 504)
    if status == 501:
        retryable = False
    message = f"{upstream} answered HTTP {status}"
    if code_text:
        message += f" {code_text}"
    return AdapterError(
        mapping.code,
        mapping.reason,
        message,
        meta,
        retryable=retryable,
        # Rate limiting is the endpoint protecting itself, not failing: no breaker trip.
        upstream_failure=status >= 500 and status != 501,
        retry_after_seconds=retry_after_seconds,
    )
