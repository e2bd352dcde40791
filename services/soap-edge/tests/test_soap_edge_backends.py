"""The one mapping from backend gRPC statuses (+ ErrorInfo reasons) to IHE error codes."""

from __future__ import annotations

import grpc
import pytest

from soap_edge.backends import CCDA, GPCONNECT, PDS, classify, hl7_outcome, xds_error
from xcagw_common.errors import rich_status


def rpc_error(code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    status = rich_status(code, "message", reason)
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata), details="message"
    )


C = grpc.StatusCode


@pytest.mark.parametrize(
    ("service", "code", "reason", "query_code", "retrieve_code", "hl7"),
    [
        (
            PDS,
            C.NOT_FOUND,
            "PATIENT_NOT_FOUND",
            "XDSUnknownPatientId",
            "XDSUnknownPatientId",
            ("AA", "NF"),
        ),
        (
            PDS,
            C.INVALID_ARGUMENT,
            "INVALID_NHS_NUMBER",
            "XDSUnknownPatientId",
            "XDSUnknownPatientId",
            ("AE", "QE"),
        ),
        (
            PDS,
            C.INVALID_ARGUMENT,
            "INVALID_SEARCH",
            "XDSRegistryError",
            "XDSRegistryError",
            ("AE", "QE"),
        ),
        (
            PDS,
            C.FAILED_PRECONDITION,
            "RESTRICTED_PATIENT",
            "XDSUnknownPatientId",
            "XDSUnknownPatientId",
            ("AA", "NF"),
        ),
        (
            PDS,
            C.FAILED_PRECONDITION,
            "TOO_MANY_MATCHES",
            "XDSUnknownPatientId",
            "XDSUnknownPatientId",
            ("AA", "NF"),
        ),
        (
            PDS,
            C.PERMISSION_DENIED,
            "ACCESS_DENIED",
            "XDSRegistryError",
            "XDSRepositoryError",
            ("AE", "AE"),
        ),
        (
            PDS,
            C.UNAVAILABLE,
            "CIRCUIT_OPEN",
            "XDSRegistryNotAvailable",
            "XDSRepositoryError",
            ("AE", "AE"),
        ),
        (
            PDS,
            C.RESOURCE_EXHAUSTED,
            "RATE_LIMITED",
            "XDSRegistryBusy",
            "XDSRepositoryBusy",
            ("AE", "AE"),
        ),
        (
            GPCONNECT,
            C.NOT_FOUND,
            "SDS_NOT_FOUND",
            "XDSUnavailableCommunity",
            "XDSUnavailableCommunity",
            ("AE", "AE"),
        ),
        (
            GPCONNECT,
            C.NOT_FOUND,
            "NO_RECORD_FOUND",
            "XDSUnknownPatientId",
            "XDSUnknownPatientId",
            ("AA", "NF"),
        ),
        (
            GPCONNECT,
            C.FAILED_PRECONDITION,
            "NO_REGISTERED_GP",
            "XDSUnknownPatientId",
            "XDSUnknownPatientId",
            ("AA", "NF"),
        ),
        (
            GPCONNECT,
            C.FAILED_PRECONDITION,
            "ASID_CHECK_FAILED_MESSAGESENDER",
            "XDSUnavailableCommunity",
            "XDSUnavailableCommunity",
            ("AE", "AE"),
        ),
        (
            GPCONNECT,
            C.PERMISSION_DENIED,
            "NO_RELATIONSHIP",
            "LocalPolicyRestrictionError",
            "LocalPolicyRestrictionError",
            ("AE", "AE"),
        ),
        (
            GPCONNECT,
            C.DEADLINE_EXCEEDED,
            "UPSTREAM_TIMEOUT",
            "XDSUnavailableCommunity",
            "XDSUnavailableCommunity",
            ("AE", "AE"),
        ),
        (
            CCDA,
            C.INVALID_ARGUMENT,
            "INVALID_BUNDLE",
            "XDSRegistryError",
            "XDSRepositoryError",
            ("AE", "AE"),
        ),
        (
            CCDA,
            C.INTERNAL,
            "CONVERSION_FAILED",
            "XDSRegistryError",
            "XDSRepositoryError",
            ("AE", "AE"),
        ),
    ],
)
def test_status_mapping(service, code, reason, query_code, retrieve_code, hl7) -> None:
    failure = classify(service, rpc_error(code, reason))
    assert xds_error(failure)[0] == query_code
    assert xds_error(failure, retrieve=True)[0] == retrieve_code
    outcome = hl7_outcome(failure)
    assert (outcome.ack, outcome.query_response) == hl7
    # codeContext is for humans and never carries backend detail.
    assert "message" not in xds_error(failure)[1]
