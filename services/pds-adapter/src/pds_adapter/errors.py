"""PDS failures as gRPC statuses: the table the servicer documents, as data.

`servicer.py`'s module docstring carries the same table for readers; a unit test keeps both in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from pds_adapter import mapping


@dataclass
class AdapterError(Exception):
    """A failure the servicer turns into a gRPC status with ErrorInfo(reason, metadata).

    `message` must never contain an NHS number, a token or other patient data.
    """

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"


@dataclass(frozen=True)
class Rule:
    """The gRPC status code and ErrorInfo reason for one PDS outcome."""

    code: grpc.StatusCode
    reason: str


# Spine-ErrorOrWarningCode (nhs-apis.md §1.5) -> gRPC. HTTP 401, 408, 429 and 5xx are decided by the
# HTTP status first (see `error_from_response`), whatever the code in the body.
SPINE_CODE_RULES: dict[str, Rule] = {
    "RESOURCE_NOT_FOUND": Rule(grpc.StatusCode.NOT_FOUND, "PATIENT_NOT_FOUND"),
    "INVALIDATED_RESOURCE": Rule(grpc.StatusCode.NOT_FOUND, "INVALIDATED_RESOURCE"),
    "INVALID_RESOURCE_ID": Rule(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NHS_NUMBER"),
    "INVALID_SEARCH_DATA": Rule(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SEARCH_DATA"),
    "MISSING_VALUE": Rule(grpc.StatusCode.INVALID_ARGUMENT, "MISSING_VALUE"),
    "INVALID_VALUE": Rule(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VALUE"),
    "ADDITIONAL_PROPERTIES": Rule(grpc.StatusCode.INVALID_ARGUMENT, "ADDITIONAL_PROPERTIES"),
    "UNSUPPORTED_SERVICE": Rule(grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_SERVICE"),
    "TOO_FEW_VALUES_SUBMITTED": Rule(grpc.StatusCode.INVALID_ARGUMENT, "TOO_FEW_VALUES_SUBMITTED"),
    "TOO_MANY_VALUES_SUBMITTED": Rule(
        grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_VALUES_SUBMITTED"
    ),
    "ACCESS_DENIED": Rule(grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED"),
    "TOO_MANY_MATCHES": Rule(grpc.StatusCode.FAILED_PRECONDITION, "TOO_MANY_MATCHES"),
    "TOO_MANY_REQUESTS": Rule(grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_REQUESTS"),
    "UNABLE_TO_CALL_SERVICE": Rule(grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    # Update and create codes: never expected from the reads this adapter makes.
    "INVALID_METHOD": Rule(grpc.StatusCode.UNIMPLEMENTED, "INVALID_METHOD"),
    "FORBIDDEN_UPDATE": Rule(grpc.StatusCode.PERMISSION_DENIED, "FORBIDDEN_UPDATE"),
    "INVALID_UPDATE": Rule(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_UPDATE"),
    "INVALID_CREATE": Rule(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CREATE"),
    "INSERT_BIRTH_DEATH_STATUS_INCONSISTENT": Rule(
        grpc.StatusCode.INVALID_ARGUMENT, "INSERT_BIRTH_DEATH_STATUS_INCONSISTENT"
    ),
    "PRECONDITION_FAILED": Rule(grpc.StatusCode.FAILED_PRECONDITION, "PRECONDITION_FAILED"),
    "RESOURCE_VERSION_MISMATCH": Rule(
        grpc.StatusCode.FAILED_PRECONDITION, "RESOURCE_VERSION_MISMATCH"
    ),
}

# Outcomes without a (known) Spine code, by HTTP status.
HTTP_STATUS_RULES: dict[int, Rule] = {
    400: Rule(grpc.StatusCode.INVALID_ARGUMENT, "PDS_BAD_REQUEST"),
    401: Rule(grpc.StatusCode.UNAUTHENTICATED, "ACCESS_DENIED"),
    403: Rule(grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED"),
    404: Rule(grpc.StatusCode.NOT_FOUND, "PATIENT_NOT_FOUND"),
    405: Rule(grpc.StatusCode.UNIMPLEMENTED, "INVALID_METHOD"),
    408: Rule(grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    409: Rule(grpc.StatusCode.FAILED_PRECONDITION, "RESOURCE_VERSION_MISMATCH"),
    412: Rule(grpc.StatusCode.FAILED_PRECONDITION, "PRECONDITION_FAILED"),
    429: Rule(grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_REQUESTS"),
}
UPSTREAM_UNAVAILABLE = Rule(grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
UNEXPECTED_STATUS = Rule(grpc.StatusCode.INTERNAL, "UPSTREAM_ERROR")

# Statuses whose meaning does not depend on the body: the transport or gateway decided.
_STATUS_FIRST = {401, 408, 429}


def rule_for(http_status: int, spine_code: str) -> Rule:
    """The gRPC rule for a non-success PDS answer."""
    if http_status >= 500:
        return UPSTREAM_UNAVAILABLE
    if http_status in _STATUS_FIRST:
        return HTTP_STATUS_RULES[http_status]
    if spine_code in SPINE_CODE_RULES:
        return SPINE_CODE_RULES[spine_code]
    return HTTP_STATUS_RULES.get(http_status, UNEXPECTED_STATUS)


def error_from_response(
    http_status: int, body: Mapping[str, Any] | None, retry_after: float | None = None
) -> AdapterError:
    """An AdapterError for a PDS answer that is not a usable result.

    The message holds the Spine code and the PDS display/diagnostics with NHS-number-like digits
    scrubbed; metadata holds `pds_code` and `http_status`, and `retry_after_seconds` when the
    answer was a 429 or 503 with a usable Retry-After (`retry_after`, in seconds): the caller can
    then wait as long as PDS asked instead of guessing.
    """
    is_outcome = body is not None and body.get("resourceType") == "OperationOutcome"
    codes = mapping.outcome_codes(body) if is_outcome and body is not None else []
    spine_code = codes[0] if codes else ""
    if is_outcome and body is not None and mapping.is_too_many_matches(body):
        spine_code = "TOO_MANY_MATCHES"
    rule = rule_for(http_status, spine_code)
    summary = mapping.outcome_summary(body) if is_outcome and body is not None else ""
    label = spine_code or f"HTTP {http_status}"
    message = f"PDS answered {label}" + (f": {summary}" if summary else "")
    metadata = {"http_status": str(http_status)}
    if spine_code:
        metadata["pds_code"] = spine_code
    if retry_after is not None and http_status in (429, 503):
        metadata["retry_after_seconds"] = f"{retry_after:.1f}"
    return AdapterError(rule.code, rule.reason, message, metadata)
