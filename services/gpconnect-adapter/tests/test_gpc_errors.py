"""Every GP Connect and SSP error reaches the caller as the documented gRPC status and reason.

Errors the sandbox produces for real panel patients or real misconfigurations are tested
against it; the rest (errors a correct request can never provoke, e.g. INVALID_RESOURCE) are the
NHS reference OperationOutcomes played back by the fake SSP.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from gpc_testkit import (
    CertSet,
    FakeSsp,
    RunningAdapter,
    Sandbox,
    record_request,
    rpc_error,
    run_adapter,
    shared_errors_dir,
    via_ssp,
)
from redis.asyncio import Redis

C = grpc.StatusCode


@pytest.mark.parametrize(
    ("nhs", "code", "reason", "spine_code"),
    [
        # Deceased at PDS: the provider answers 404 PATIENT_NOT_FOUND.
        ("9000000084", C.NOT_FOUND, "PATIENT_NOT_FOUND", "PATIENT_NOT_FOUND"),
        ("9000000130", C.PERMISSION_DENIED, "NO_PATIENT_CONSENT", "NO_PATIENT_CONSENT"),
        ("9000000165", C.PERMISSION_DENIED, "NO_RELATIONSHIP", "NO_RELATIONSHIP"),
        # Practice with Access Record Structured switched off: the code has a space in it.
        ("9000000149", C.PERMISSION_DENIED, "ACCESS_DENIED", "ACCESS DENIED"),
    ],
)
async def test_gpc_provider_outcomes_from_the_sandbox(
    adapter: RunningAdapter, sandbox: Sandbox, nhs: str, code: C, reason: str, spine_code: str
) -> None:
    failure = await rpc_error(adapter.stub.GetStructuredRecord(record_request(nhs)))
    assert (failure.code, failure.reason) == (code, reason)
    assert failure.metadata["spine_code"] == spine_code
    assert failure.metadata["error_source"] == "provider"
    assert failure.metadata["ssp_trace_id"]
    assert nhs not in failure.details and nhs not in str(failure.metadata)
    assert sandbox.requests("gpconnect") == 1  # business errors are never retried


async def test_gpc_ssp_refuses_an_unknown_consumer_asid(
    adapter_settings: dict[str, Any], sandbox: Sandbox
) -> None:
    async with run_adapter({**adapter_settings, "consumer_asid": "100000000001"}) as running:
        failure = await rpc_error(running.stub.GetStructuredRecord(record_request("9000000009")))
    assert (failure.code, failure.reason) == (
        C.FAILED_PRECONDITION,
        "ASID_CHECK_FAILED_MESSAGESENDER",
    )
    assert failure.metadata["error_source"] == "ssp"


async def test_gpc_bad_jwt_scope_is_bad_request(
    adapter_settings: dict[str, Any], sandbox: Sandbox
) -> None:
    # token-service mints it, the provider refuses it (only "patient/*.read" is allowed).
    async with run_adapter({**adapter_settings, "requested_scope": "patient/*.write"}) as running:
        failure = await rpc_error(running.stub.GetStructuredRecord(record_request("9000000009")))
    assert (failure.code, failure.reason) == (C.INVALID_ARGUMENT, "BAD_REQUEST")
    assert failure.metadata["spine_code"] == "BAD_REQUEST"
    assert sandbox.requests("gpconnect") == 1


async def test_gpc_token_service_refusal_passes_through(
    adapter: RunningAdapter, sandbox: Sandbox
) -> None:
    # GP Connect audits the real user: token-service refuses a context without one.
    failure = await rpc_error(
        adapter.stub.GetStructuredRecord(record_request("9000000009", user_id=""))
    )
    assert failure.code == C.INVALID_ARGUMENT
    assert failure.reason == "MISSING_REQUESTING_USER"
    assert failure.metadata["dependency"] == "token-service"
    assert sandbox.requests("gpconnect") == 0


async def test_gpc_provider_bad_request_is_not_retried(
    adapter: RunningAdapter, sandbox: Sandbox
) -> None:
    sandbox.set_faults({"gpconnect": {"error_rate": 1.0, "error_status": 400}})
    failure = await rpc_error(adapter.stub.GetStructuredRecord(record_request("9000000009")))
    assert (failure.code, failure.reason) == (C.INVALID_ARGUMENT, "BAD_REQUEST")
    assert sandbox.requests("gpconnect") == 1


async def test_gpc_stale_cached_endpoint_is_dropped(
    adapter: RunningAdapter, sandbox: Sandbox
) -> None:
    # A practice that moved supplier: the cached ASID no longer matches, the SSP says so.
    await adapter.stub.GetStructuredRecord(record_request("9000000009"), timeout=30)
    key = "xcagw:gpconnect:sds-endpoint:v1:Y12345"
    async with Redis.from_url(adapter.settings.redis_url.get_secret_value()) as redis:
        cached = await redis.get(key)
        assert cached is not None
        await redis.set(key, cached.replace(b"918999198001", b"918999190000"))
        failure = await rpc_error(adapter.stub.GetStructuredRecord(record_request("9000000009")))
        assert (failure.code, failure.reason) == (
            C.FAILED_PRECONDITION,
            "PARTYKEY_INTERACTION_CHECK_FAILED",
        )
        assert await redis.get(key) is None
    response = await adapter.stub.GetStructuredRecord(record_request("9000000009"), timeout=30)
    assert response.ods_code == "Y12345"
    assert sandbox.requests("sds") == 4  # first lookup, then the fresh one after the drop


# file stem -> HTTP status of the example, gRPC code, reason
REFERENCE_ERRORS: dict[str, tuple[int, C, str]] = {
    "OperationOutcome_ACCESS_DENIED": (403, C.PERMISSION_DENIED, "ACCESS_DENIED"),
    "OperationOutcome_BAD_REQUEST": (400, C.INVALID_ARGUMENT, "BAD_REQUEST"),
    "OperationOutcome_DUPLICATE_REJECTED": (409, C.ALREADY_EXISTS, "DUPLICATE_REJECTED"),
    "OperationOutcome_INTERNAL_SERVER_ERROR": (500, C.UNAVAILABLE, "INTERNAL_SERVER_ERROR"),
    "OperationOutcome_INVALID_NHS_NUMBER": (400, C.INVALID_ARGUMENT, "INVALID_NHS_NUMBER"),
    "OperationOutcome_NO_PATIENT_CONSENT": (403, C.PERMISSION_DENIED, "NO_PATIENT_CONSENT"),
    "OperationOutcome_NO_RECORD_FOUND": (404, C.NOT_FOUND, "NO_RECORD_FOUND"),
    "OperationOutcome_PATIENT_NOT_FOUND": (404, C.NOT_FOUND, "PATIENT_NOT_FOUND"),
    "OperationOutcome_REFERENCE_NOT_FOUND": (422, C.INVALID_ARGUMENT, "REFERENCE_NOT_FOUND"),
    "SSP_OperationOutcome_403_ASID_CHECK_FAILED_MESSAGESENDER": (
        403,
        C.FAILED_PRECONDITION,
        "ASID_CHECK_FAILED_MESSAGESENDER",
    ),
    "SSP_OperationOutcome_403_FOT_CHECK_FAILED_MESSAGESENDER": (
        403,
        C.FAILED_PRECONDITION,
        "FOT_CHECK_FAILED_MESSAGESENDER",
    ),
    "SSP_OperationOutcome_403_PARTYKEY_INTERACTION_CHECK_FAILED_MESSAG": (
        403,
        C.FAILED_PRECONDITION,
        "PARTYKEY_INTERACTION_CHECK_FAILED",
    ),
    "SSP_OperationOutcome_405_none": (405, C.INTERNAL, "SSP_METHOD_NOT_ALLOWED"),
    "SSP_OperationOutcome_415_Unsupported_Media_Type": (
        415,
        C.INTERNAL,
        "SSP_UNSUPPORTED_MEDIA_TYPE",
    ),
    "SSP_OperationOutcome_502_ERROR_COMMUNICATING_TO_ENDPOINT_URL": (
        502,
        C.UNAVAILABLE,
        "ERROR_COMMUNICATING_TO_ENDPOINT_URL",
    ),
}

# Codes only a broken request provokes, in the provider's own shape (GP Connect error guidance).
SYNTHETIC_ERRORS: dict[str, tuple[int, str, C]] = {
    "INVALID_PARAMETER": (422, "invalid", C.INVALID_ARGUMENT),
    "INVALID_RESOURCE": (422, "invalid", C.INVALID_ARGUMENT),
    "INVALID_IDENTIFIER_SYSTEM": (400, "value", C.INVALID_ARGUMENT),
    "INVALID_IDENTIFIER_VALUE": (400, "value", C.INVALID_ARGUMENT),
    "INVALID_PATIENT_DEMOGRAPHICS": (400, "business-rule", C.INVALID_ARGUMENT),
    "CONFLICTING_VALUES": (400, "invalid", C.INVALID_ARGUMENT),
    "NO_ORGANISATION_CONSENT": (403, "forbidden", C.PERMISSION_DENIED),
    "ORGANISATION_NOT_FOUND": (404, "not-found", C.FAILED_PRECONDITION),
    "PRACTITIONER_NOT_FOUND": (404, "not-found", C.FAILED_PRECONDITION),
    "NOT_IMPLEMENTED": (501, "not-supported", C.UNIMPLEMENTED),
}


def _outcome(code: str, issue_type: str) -> bytes:
    return json.dumps(
        {
            "resourceType": "OperationOutcome",
            "meta": {
                "profile": [
                    "https://fhir.nhs.uk/STU3/StructureDefinition/GPConnect-OperationOutcome-1"
                ]
            },
            "issue": [
                {
                    "severity": "error",
                    "code": issue_type,
                    "details": {
                        "coding": [
                            {
                                "system": "https://fhir.nhs.uk/STU3/CodeSystem/"
                                "Spine-ErrorOrWarningCode-1",
                                "code": code,
                            }
                        ]
                    },
                    "diagnostics": "Patient 9000000009 could not be processed",
                }
            ],
        }
    ).encode()


async def test_gpc_every_error_code_maps_to_its_documented_status(
    adapter_settings: dict[str, Any], sandbox: Sandbox, ssp: FakeSsp, ssp_certs: CertSet
) -> None:
    errors_dir = shared_errors_dir()
    assert {p.stem for p in errors_dir.glob("*.json")} == set(REFERENCE_ERRORS)
    cases: list[tuple[str, int, bytes, C, str]] = [
        (stem, status, (errors_dir / f"{stem}.json").read_bytes(), code, reason)
        for stem, (status, code, reason) in REFERENCE_ERRORS.items()
    ]
    cases += [
        (spine, status, _outcome(spine, issue_type), code, spine)
        for spine, (status, issue_type, code) in SYNTHETIC_ERRORS.items()
    ]
    settings = {**adapter_settings, **via_ssp(ssp, ssp_certs), "gpconnect_max_attempts": 2}
    # The breaker would open after a run of 5xx answers: keep it out of this table test.
    settings["breaker_failure_threshold"] = 100
    async with run_adapter(settings) as running:
        for name, status, body, code, reason in cases:
            ssp.canned = (status, body)
            ssp.seen_paths.clear()
            failure = await rpc_error(
                running.stub.GetStructuredRecord(record_request("9000000009"))
            )
            assert (failure.code, failure.reason) == (code, reason), name
            assert failure.metadata["http_status"] == str(status), name
            # Diagnostics are passed on, but never with an NHS number in them.
            assert "9000000009" not in str(failure.metadata), name
            retried = status in (500, 502)
            assert len(ssp.seen_paths) == (2 if retried else 1), name


async def test_gpc_record_of_another_patient_is_never_returned(
    adapter_settings: dict[str, Any], sandbox: Sandbox, ssp: FakeSsp, ssp_certs: CertSet
) -> None:
    # GP Connect: consumers SHALL cross-check the returned Patient against the request.
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "id": "1",
                    "identifier": [
                        {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9000000017"}
                    ],
                }
            }
        ],
    }
    ssp.canned = (200, json.dumps(bundle).encode())
    async with run_adapter({**adapter_settings, **via_ssp(ssp, ssp_certs)}) as running:
        failure = await rpc_error(running.stub.GetStructuredRecord(record_request("9000000009")))
    assert (failure.code, failure.reason) == (C.INTERNAL, "PATIENT_MISMATCH")
    assert "9000000017" not in failure.details + str(failure.metadata)


def _patient(*identifiers: tuple[str, str]) -> dict[str, Any]:
    return {
        "resource": {
            "resourceType": "Patient",
            "id": "1",
            "identifier": [{"system": system, "value": value} for system, value in identifiers],
        }
    }


NHS = "https://fhir.nhs.uk/Id/nhs-number"


@pytest.mark.parametrize(
    ("entries", "passed"),
    [
        # The requested patient alone (the NHS number may be written with spaces).
        ([_patient((NHS, "900 000 0009"))], True),
        # No NHS number identifier: nothing says whose record this is.
        ([_patient()], False),
        ([_patient(("https://fhir.example.org/Id/local", "9000000009"))], False),
        # No Patient at all.
        ([{"resource": {"resourceType": "AllergyIntolerance", "id": "a"}}], False),
        # The requested patient and somebody else, or an unidentified second Patient.
        ([_patient((NHS, "9000000009")), _patient((NHS, "9000000017"))], False),
        ([_patient((NHS, "9000000009")), _patient()], False),
    ],
    ids=["requested", "no-identifier", "other-system", "no-patient", "two-patients", "unknown"],
)
async def test_gpc_patient_check_fails_closed(
    adapter_settings: dict[str, Any],
    sandbox: Sandbox,
    ssp: FakeSsp,
    ssp_certs: CertSet,
    entries: list[dict[str, Any]],
    passed: bool,
) -> None:
    # GP Connect Access Record Structured: the Bundle holds the Patient, with its NHS number.
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    ssp.canned = (200, json.dumps(bundle).encode())
    async with run_adapter({**adapter_settings, **via_ssp(ssp, ssp_certs)}) as running:
        call = running.stub.GetStructuredRecord(record_request("9000000009"), timeout=30)
        if passed:
            response = await call
            assert response.nhs_number == "9000000009"
            assert json.loads(response.bundle_json) == bundle
            return
        failure = await rpc_error(call)
    assert (failure.code, failure.reason) == (C.INTERNAL, "PATIENT_MISMATCH")
    assert "9000000017" not in failure.details + str(failure.metadata)
