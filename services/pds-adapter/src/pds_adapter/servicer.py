"""PdsAdapterService: GetPatient and SearchPatients over PDS FHIR R4 (application-restricted).

Every failure is a gRPC status with a google.rpc.ErrorInfo (domain "xcagw") whose `reason` is
below; PDS outcomes also carry metadata `http_status` and `pds_code` (the Spine code). When the
final PDS answer was a 429 or 503 with a Retry-After header, metadata `retry_after_seconds` holds
the wait PDS asked for, in seconds (e.g. "5.0"); CIRCUIT_OPEN and RATE_LIMITED carry
`retry_after_seconds` too (until the breaker lets a probe through, until a rate-limit slot is
free). Messages never contain NHS numbers (PDS diagnostics are scrubbed).

Status mapping (PDS Spine-ErrorOrWarningCode, nhs-apis.md §1.5, and local failures):

| PDS outcome / local condition | HTTP | gRPC status | ErrorInfo reason |
|---|---|---|---|
| NHS number fails format or Modulus 11 (checked before any call) | - | INVALID_ARGUMENT | INVALID_NHS_NUMBER |
| search request PDS would reject (checked before any call) | - | INVALID_ARGUMENT | INVALID_SEARCH |
| RESOURCE_NOT_FOUND | 404 | NOT_FOUND | PATIENT_NOT_FOUND |
| INVALIDATED_RESOURCE | 404 | NOT_FOUND | INVALIDATED_RESOURCE |
| INVALID_RESOURCE_ID | 400 | INVALID_ARGUMENT | INVALID_NHS_NUMBER |
| INVALID_SEARCH_DATA | 400 | INVALID_ARGUMENT | INVALID_SEARCH_DATA |
| MISSING_VALUE | 400 | INVALID_ARGUMENT | MISSING_VALUE |
| INVALID_VALUE | 400, 403 | INVALID_ARGUMENT | INVALID_VALUE |
| ADDITIONAL_PROPERTIES | 400 | INVALID_ARGUMENT | ADDITIONAL_PROPERTIES |
| UNSUPPORTED_SERVICE | 400 | INVALID_ARGUMENT | UNSUPPORTED_SERVICE |
| TOO_FEW_VALUES_SUBMITTED | 400 | INVALID_ARGUMENT | TOO_FEW_VALUES_SUBMITTED |
| TOO_MANY_VALUES_SUBMITTED | 400 | INVALID_ARGUMENT | TOO_MANY_VALUES_SUBMITTED |
| ACCESS_DENIED (still 401 after one token refresh) | 401 | UNAUTHENTICATED | ACCESS_DENIED |
| ACCESS_DENIED | 403 | PERMISSION_DENIED | ACCESS_DENIED |
| TOO_MANY_MATCHES (an OperationOutcome on HTTP 200) | 200 | FAILED_PRECONDITION | TOO_MANY_MATCHES |
| TOO_MANY_REQUESTS (after the retries) | 429 | RESOURCE_EXHAUSTED | TOO_MANY_REQUESTS |
| UNABLE_TO_CALL_SERVICE (after the retries) | 408 | UNAVAILABLE | UPSTREAM_UNAVAILABLE |
| any 5xx, timeout or connection failure (after the retries) | 5xx | UNAVAILABLE | UPSTREAM_UNAVAILABLE |
| INVALID_METHOD | 403, 405 | UNIMPLEMENTED | INVALID_METHOD |
| FORBIDDEN_UPDATE | 403 | PERMISSION_DENIED | FORBIDDEN_UPDATE |
| INVALID_UPDATE | 400 | INVALID_ARGUMENT | INVALID_UPDATE |
| INVALID_CREATE | 400 | INVALID_ARGUMENT | INVALID_CREATE |
| INSERT_BIRTH_DEATH_STATUS_INCONSISTENT | 400 | INVALID_ARGUMENT | INSERT_BIRTH_DEATH_STATUS_INCONSISTENT |
| PRECONDITION_FAILED | 412 | FAILED_PRECONDITION | PRECONDITION_FAILED |
| RESOURCE_VERSION_MISMATCH | 409 | FAILED_PRECONDITION | RESOURCE_VERSION_MISMATCH |
| no known Spine code, HTTP 400 | 400 | INVALID_ARGUMENT | PDS_BAD_REQUEST |
| no known Spine code, HTTP 404 | 404 | NOT_FOUND | PATIENT_NOT_FOUND |
| no known Spine code, other HTTP status | other | INTERNAL | UPSTREAM_ERROR |
| HTTP 200 that is not the expected resource (or not JSON) | 200 | INTERNAL | UPSTREAM_BAD_RESPONSE |
| circuit breaker open (PDS failing): fail fast | - | UNAVAILABLE | CIRCUIT_OPEN |
| no rate-limit slot within the allowed wait | - | RESOURCE_EXHAUSTED | RATE_LIMITED |
| overall deadline (settings or caller's gRPC deadline) passed | - | DEADLINE_EXCEEDED | DEADLINE_EXCEEDED |
| token-service failed to give a token | - | UNAVAILABLE | TOKEN_UNAVAILABLE |
| unexpected adapter bug | - | INTERNAL | INTERNAL |

Successful outcomes: GetPatient returns restricted (R, V, S) patients with `restricted=true` and no
location fields; a superseded number returns the current record with `superseded_from` set;
SearchPatients returns zero or one patient (an empty result is OK, not NOT_FOUND).
"""  # noqa: E501 - the table is easier to read unwrapped

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from pds_adapter import mapping
from pds_adapter.cache import PatientCache
from pds_adapter.errors import AdapterError, error_from_response
from pds_adapter.fhir_client import PdsClient, PdsResponse
from xcagw.common.v1 import common_pb2
from xcagw.pds.v1 import pds_adapter_pb2, pds_adapter_pb2_grpc
from xcagw_common.errors import abort
from xcagw_common.logging import correlation_id_var, partner_id_var, pseudonymise
from xcagw_common.nhs_number import normalise_nhs_number
from xcagw_common.resilience import Deadline
from xcagw_common.singleflight import SingleFlight

log = logging.getLogger(__name__)

_Context = grpc.aio.ServicerContext[Any, Any]


@contextmanager
def _request_scope(context: common_pb2.RequestContext) -> Iterator[None]:
    cid = correlation_id_var.set(context.correlation_id)
    pid = partner_id_var.set(context.partner_id)
    try:
        yield
    finally:
        correlation_id_var.reset(cid)
        partner_id_var.reset(pid)


@dataclass(frozen=True)
class _Read:
    """The outcome of one PDS patient read, shared by every caller that waited for it."""

    response: pds_adapter_pb2.GetPatientResponse
    request_id: str


def _bad_response(what: str) -> AdapterError:
    return AdapterError(
        grpc.StatusCode.INTERNAL, "UPSTREAM_BAD_RESPONSE", f"PDS returned an unexpected {what}"
    )


class PdsAdapterServicer(pds_adapter_pb2_grpc.PdsAdapterServiceServicer):
    """gRPC servicer; one per process, sharing the PDS client and the cache."""

    def __init__(
        self,
        client: PdsClient,
        cache: PatientCache,
        *,
        deadline_seconds: float = 10.0,
        search_max_results: int = 1,
    ) -> None:
        self._client = client
        self._cache = cache
        self._deadline_seconds = deadline_seconds
        self._search_max_results = search_max_results
        # Single-flight for reads that miss the cache: concurrent GetPatient calls for the same
        # NHS number share one PDS request. PDS application-restricted access has a small
        # per-application rate limit (nhs-apis.md: 5 requests/s by default), and a partner's
        # ITI-55 + ITI-38 burst for one patient otherwise spends several slots on one record.
        self._inflight: SingleFlight[str, _Read] = SingleFlight()

    def _deadline(self, context: _Context) -> Deadline:
        return Deadline.after(self._deadline_seconds).earliest(context.time_remaining())

    async def GetPatient(
        self, request: pds_adapter_pb2.GetPatientRequest, context: _Context
    ) -> pds_adapter_pb2.GetPatientResponse:
        with _request_scope(request.context):
            try:
                return await self._get_patient(request, context)
            except AdapterError as err:
                await self._fail(context, err, "GetPatient")
            except Exception:
                log.exception("GetPatient failed unexpectedly")
                await abort(context, grpc.StatusCode.INTERNAL, "internal error", "INTERNAL")

    async def SearchPatients(
        self, request: pds_adapter_pb2.SearchPatientsRequest, context: _Context
    ) -> pds_adapter_pb2.SearchPatientsResponse:
        with _request_scope(request.context):
            try:
                return await self._search(request, context)
            except AdapterError as err:
                await self._fail(context, err, "SearchPatients")
            except Exception:
                log.exception("SearchPatients failed unexpectedly")
                await abort(context, grpc.StatusCode.INTERNAL, "internal error", "INTERNAL")

    async def _fail(self, context: _Context, err: AdapterError, method: str) -> NoReturn:
        log.info(
            "%s failed: %s %s",
            method,
            err.code.name,
            err.reason,
            extra={
                "ecs": {
                    "error.code": err.reason,
                    "labels.grpc_code": err.code.name,
                    # ErrorInfo metadata (HTTP status, Spine code, token-service's code): never
                    # patient data (errors.py), and it tells which hop failed.
                    **{f"labels.{key}": value for key, value in err.metadata.items()},
                }
            },
        )
        await abort(context, err.code, err.message, err.reason, err.metadata)

    # ------------------------------------------------------------------------------ GetPatient

    async def _get_patient(
        self, request: pds_adapter_pb2.GetPatientRequest, context: _Context
    ) -> pds_adapter_pb2.GetPatientResponse:
        deadline = self._deadline(context)
        nhs_number = normalise_nhs_number(request.nhs_number)
        if nhs_number is None:
            raise AdapterError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID_NHS_NUMBER",
                "nhs_number must be 10 digits (spaces allowed) with a valid Modulus 11 check digit",
            )
        patient_ref = pseudonymise(nhs_number)

        cached = await self._cache.get(nhs_number)
        if cached is not None:
            try:
                patient = mapping.patient_from_fhir(
                    mapping.parse_json_object(cached), requested_nhs_number=nhs_number
                )
            except mapping.FhirShapeError:
                log.warning("ignoring unreadable cached PDS record for %s", patient_ref)
            else:
                if not patient.restricted:
                    return pds_adapter_pb2.GetPatientResponse(patient=patient, fhir_json=cached)

        # The shared read (xcagw_common.singleflight) runs under the service's own deadline and
        # carries the first caller's RequestContext (one PDS request has one X-Correlation-ID and
        # one NHSD-End-User-Organisation-ODS; the answer depends on neither, see cache.py); each
        # caller waits within its own deadline and logs its own access below.
        shared_deadline = Deadline.after(self._deadline_seconds)
        try:
            read, shared = await self._inflight.join(
                nhs_number,
                lambda: self._read_patient(nhs_number, request.context, shared_deadline),
                deadline.remaining(),
            )
        except TimeoutError:
            raise AdapterError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "DEADLINE_EXCEEDED",
                "PDS did not answer within the deadline",
            ) from None
        patient = read.response.patient
        # The access log line of this caller (its correlation and partner ids are in the log
        # context), also when it joined a read another caller started.
        log.info(
            "PDS patient read for %s",
            patient_ref,
            extra={
                "ecs": {
                    "labels.patient": patient_ref,
                    "labels.pds_request_id": read.request_id,
                    "labels.restricted": patient.restricted,
                    "labels.superseded": bool(patient.superseded_from),
                    "labels.shared_read": shared,
                }
            },
        )
        return read.response

    async def _read_patient(
        self, nhs_number: str, request_context: common_pb2.RequestContext, deadline: Deadline
    ) -> _Read:
        response = await self._client.read(
            f"Patient/{nhs_number}",
            (),
            context=request_context,
            deadline=deadline,
            url_template="/Patient/{id}",
        )
        body = self._success_body(response)
        if body.get("resourceType") == "OperationOutcome":
            raise error_from_response(response.status_code, body)
        if body.get("resourceType") != "Patient":
            raise _bad_response("resource for a patient read")
        try:
            patient = mapping.patient_from_fhir(body, requested_nhs_number=nhs_number)
        except mapping.FhirShapeError as exc:
            raise _bad_response("Patient resource") from exc
        if not patient.restricted:
            await self._cache.put(nhs_number, response.text)
        return _Read(
            pds_adapter_pb2.GetPatientResponse(patient=patient, fhir_json=response.text),
            response.request_id,
        )

    # ------------------------------------------------------------------------------ SearchPatients

    async def _search(
        self, request: pds_adapter_pb2.SearchPatientsRequest, context: _Context
    ) -> pds_adapter_pb2.SearchPatientsResponse:
        try:
            params = mapping.search_params(request, max_results=self._search_max_results)
        except mapping.SearchValidationError as exc:
            raise AdapterError(
                grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SEARCH", str(exc)
            ) from exc
        response = await self._client.read(
            "Patient",
            params,
            context=request.context,
            deadline=self._deadline(context),
            url_template="/Patient",
        )
        body = self._success_body(response)
        if body.get("resourceType") == "OperationOutcome":
            # nhs-apis.md §0.3: several matches are HTTP 200 with an OperationOutcome.
            raise error_from_response(response.status_code, body)
        try:
            results = mapping.patients_from_bundle(body)
        except mapping.FhirShapeError as exc:
            raise _bad_response("search result") from exc
        log.info(
            "PDS search returned %d match(es)",
            len(results),
            extra={
                "ecs": {
                    "labels.pds_request_id": response.request_id,
                    "labels.patients": [pseudonymise(p.nhs_number) for p, _ in results],
                }
            },
        )
        return pds_adapter_pb2.SearchPatientsResponse(
            patients=[p for p, _ in results],
            scores=[s for _, s in results],
            fhir_json=response.text,
        )

    @staticmethod
    def _success_body(response: PdsResponse) -> dict[str, Any]:
        if response.status_code != 200:
            raise error_from_response(response.status_code, response.body, response.retry_after)
        if response.body is None:
            raise _bad_response("body (not a JSON object)")
        return response.body
