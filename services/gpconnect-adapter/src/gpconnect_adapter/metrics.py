"""Metrics of the adapter beyond the shared ones (UPSTREAM_LATENCY upstream="sds"/"gpconnect",
CACHE_REQUESTS cache="sds_endpoint"). Labels never carry patient data."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECORD_BYTES = Histogram(
    "xcagw_gpconnect_record_bytes",
    "Size of GP Connect structured record Bundles received.",
    buckets=(1e3, 1e4, 5e4, 1e5, 5e5, 1e6, 5e6, 1e7, 5e7),
)
RECORD_RESOURCES = Histogram(
    "xcagw_gpconnect_record_resources",
    "Resources (entries plus contained) per GP Connect structured record.",
    buckets=(1, 10, 50, 100, 500, 1000, 5000, 10000, 50000),
)
LIST_WARNINGS = Counter(
    "xcagw_gpconnect_list_warnings_total",
    "List warnings seen in GP Connect records, by warning code.",
    ["code"],
)
ERRORS = Counter(
    "xcagw_gpconnect_errors_total",
    "Failed gpconnect-adapter RPCs, by RPC and ErrorInfo reason.",
    ["rpc", "reason"],
)

KNOWN_WARNINGS = frozenset({"confidential-items", "data-in-transit", "data-awaiting-filing"})

_KNOWN_REASONS = frozenset(
    {
        "INVALID_NHS_NUMBER", "INVALID_ODS_CODE", "INVALID_PARAMETER", "NO_CLINICAL_AREAS",
        "RESTRICTED_PATIENT", "NO_REGISTERED_GP", "SDS_NOT_FOUND", "SDS_AMBIGUOUS",
        "SDS_INVALID_RESPONSE", "SDS_REQUEST_REJECTED", "UPSTREAM_UNAVAILABLE", "UPSTREAM_TIMEOUT",
        "DEADLINE_EXCEEDED", "RATE_LIMITED", "CIRCUIT_OPEN", "RECORD_TOO_LARGE",
        "INVALID_PROVIDER_RESPONSE", "PATIENT_MISMATCH", "INTERNAL", "DEPENDENCY_UNAVAILABLE",
        "DEPENDENCY_FAILED", "PATIENT_NOT_FOUND", "NO_RECORD_FOUND", "ORGANISATION_NOT_FOUND",
        "PRACTITIONER_NOT_FOUND", "NO_PATIENT_CONSENT", "NO_ORGANISATION_CONSENT",
        "NO_RELATIONSHIP", "ACCESS_DENIED", "INVALID_IDENTIFIER_SYSTEM",
        "INVALID_IDENTIFIER_VALUE", "INVALID_PATIENT_DEMOGRAPHICS", "INVALID_RESOURCE",
        "REFERENCE_NOT_FOUND", "CONFLICTING_VALUES", "BAD_REQUEST", "DUPLICATE_REJECTED",
        "NOT_IMPLEMENTED", "INTERNAL_SERVER_ERROR", "ASID_CHECK_FAILED_MESSAGESENDER",
        "FOT_CHECK_FAILED_MESSAGESENDER", "PARTYKEY_INTERACTION_CHECK_FAILED",
        "ERROR_COMMUNICATING_TO_ENDPOINT_URL", "SSP_METHOD_NOT_ALLOWED",
        "SSP_UNSUPPORTED_MEDIA_TYPE", "UPSTREAM_BAD_REQUEST", "UPSTREAM_UNAUTHORISED",
        "UPSTREAM_FORBIDDEN", "ENDPOINT_NOT_FOUND", "UPSTREAM_CONFLICT", "UPSTREAM_UNPROCESSABLE",
        "UPSTREAM_ERROR",
    }
)  # fmt: skip


def reason_label(reason: str) -> str:
    """The reason as a metric label; reasons passed through from elsewhere become "OTHER"."""
    return reason if reason in _KNOWN_REASONS else "OTHER"
