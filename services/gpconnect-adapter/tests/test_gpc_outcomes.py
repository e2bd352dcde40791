"""The OperationOutcome -> gRPC mapping, over the real GP Connect and SSP error examples."""

from __future__ import annotations

import json

import grpc
import pytest

from gpconnect_adapter.outcomes import SPINE_CODE_MAP, from_http, scrub
from xcagw_common.testing import shared_dir

ERRORS_DIR = shared_dir() / "nhs" / "gpconnect" / "errors"

# file stem -> (HTTP status the spec gives the example, gRPC code, reason)
EXPECTED = {
    "OperationOutcome_ACCESS_DENIED": (403, grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED"),
    "OperationOutcome_BAD_REQUEST": (400, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST"),
    "OperationOutcome_DUPLICATE_REJECTED": (
        409,
        grpc.StatusCode.ALREADY_EXISTS,
        "DUPLICATE_REJECTED",
    ),
    "OperationOutcome_INTERNAL_SERVER_ERROR": (
        500,
        grpc.StatusCode.UNAVAILABLE,
        "INTERNAL_SERVER_ERROR",
    ),
    "OperationOutcome_INVALID_NHS_NUMBER": (
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_NHS_NUMBER",
    ),
    "OperationOutcome_NO_PATIENT_CONSENT": (
        403,
        grpc.StatusCode.PERMISSION_DENIED,
        "NO_PATIENT_CONSENT",
    ),
    "OperationOutcome_NO_RECORD_FOUND": (404, grpc.StatusCode.NOT_FOUND, "NO_RECORD_FOUND"),
    "OperationOutcome_PATIENT_NOT_FOUND": (404, grpc.StatusCode.NOT_FOUND, "PATIENT_NOT_FOUND"),
    "OperationOutcome_REFERENCE_NOT_FOUND": (
        422,
        grpc.StatusCode.INVALID_ARGUMENT,
        "REFERENCE_NOT_FOUND",
    ),
    "SSP_OperationOutcome_403_ASID_CHECK_FAILED_MESSAGESENDER": (
        403,
        grpc.StatusCode.FAILED_PRECONDITION,
        "ASID_CHECK_FAILED_MESSAGESENDER",
    ),
    "SSP_OperationOutcome_403_FOT_CHECK_FAILED_MESSAGESENDER": (
        403,
        grpc.StatusCode.FAILED_PRECONDITION,
        "FOT_CHECK_FAILED_MESSAGESENDER",
    ),
    "SSP_OperationOutcome_403_PARTYKEY_INTERACTION_CHECK_FAILED_MESSAG": (
        403,
        grpc.StatusCode.FAILED_PRECONDITION,
        "PARTYKEY_INTERACTION_CHECK_FAILED",
    ),
    "SSP_OperationOutcome_405_none": (405, grpc.StatusCode.INTERNAL, "SSP_METHOD_NOT_ALLOWED"),
    "SSP_OperationOutcome_415_Unsupported_Media_Type": (
        415,
        grpc.StatusCode.INTERNAL,
        "SSP_UNSUPPORTED_MEDIA_TYPE",
    ),
    "SSP_OperationOutcome_502_ERROR_COMMUNICATING_TO_ENDPOINT_URL": (
        502,
        grpc.StatusCode.UNAVAILABLE,
        "ERROR_COMMUNICATING_TO_ENDPOINT_URL",
    ),
}


def _require_errors() -> None:
    if not ERRORS_DIR.is_dir():
        pytest.skip(f"reference kit not found at {ERRORS_DIR} (set XCAGW_SHARED_DIR)")


def test_gpc_every_shared_error_example_is_mapped() -> None:
    _require_errors()
    stems = {p.stem for p in ERRORS_DIR.glob("*.json")}
    assert stems == set(EXPECTED), "a new error example needs an expectation here"


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_gpc_error_example_maps_to_documented_status(stem: str) -> None:
    _require_errors()
    status, code, reason = EXPECTED[stem]
    err = from_http(status, (ERRORS_DIR / f"{stem}.json").read_bytes(), upstream="GP Connect")
    assert (err.code, err.reason) == (code, reason)
    assert err.metadata["http_status"] == str(status)
    assert err.retryable == (status >= 500)


def test_gpc_unknown_spine_code_keeps_http_family_and_names_itself() -> None:
    body = json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "forbidden",
                    "details": {
                        "coding": [
                            {
                                "system": "https://fhir.nhs.uk/STU3/CodeSystem/"
                                "Spine-ErrorOrWarningCode-1",
                                "code": "SOMETHING_NEW",
                            }
                        ]
                    },
                }
            ],
        }
    ).encode()
    err = from_http(403, body, upstream="GP Connect")
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SOMETHING_NEW")


@pytest.mark.parametrize(
    ("status", "code", "reason", "retryable"),
    [
        (404, grpc.StatusCode.FAILED_PRECONDITION, "ENDPOINT_NOT_FOUND", False),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", True),
        (503, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", True),
        (504, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", True),
        (418, grpc.StatusCode.UNKNOWN, "UPSTREAM_ERROR", False),
    ],
)
def test_gpc_non_fhir_error_bodies_map_by_http_status(
    status: int, code: grpc.StatusCode, reason: str, retryable: bool
) -> None:
    err = from_http(status, b"<html>gateway says no</html>", upstream="GP Connect")
    assert (err.code, err.reason, err.retryable) == (code, reason, retryable)


def test_gpc_every_spine_reason_is_upper_snake() -> None:
    for mapping in SPINE_CODE_MAP.values():
        assert mapping.reason.replace("_", "").isalnum()
        assert mapping.reason == mapping.reason.upper()


def test_gpc_diagnostics_never_carry_nhs_numbers() -> None:
    assert "9000000009" not in scrub("Patient 9000000009 not found")
    assert "943 476 5919" not in scrub("NHS no 943 476 5919")
    # ASIDs (12 digits) are not patient data and stay readable.
    assert "200000000359" in scrub("ASID_CHECK_FAILED_MESSAGESENDER_200000000359")
