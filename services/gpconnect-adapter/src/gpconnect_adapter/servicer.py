"""GpConnectAdapterService: SDS endpoint lookup and GP Connect Access Record Structured.

GetStructuredRecord runs: NHS number check -> pds-adapter GetPatient (GP ODS code, restriction,
superseded number) -> LookupEndpoint (SDS, cached) -> token-service MintGpConnectJwt (aud = the
provider's service root) -> `POST {ssp_prefix}/{address}/Patient/$gpc.getstructuredrecord`.
The Bundle is returned byte for byte, with resource counts (entries plus contained resources)
and the List warnings.

Every failure is a gRPC status with google.rpc.ErrorInfo (domain "xcagw"); ErrorInfo.reason is the
Spine code where there is one. Metadata may carry `http_status`, `spine_code` (verbatim, e.g.
"ACCESS DENIED"), `error_source` (provider | ssp), `diagnostics` (NHS-number-shaped text redacted),
`ods_code`, `ssp_trace_id`, `attempts`, `upstream`, `dependency`, and `retry_after_seconds`: when
the final SDS or GP Connect answer was a 429 or 503 with a Retry-After header, the wait it asked
for in seconds (e.g. "5.0"); on CIRCUIT_OPEN, the time until the breaker lets a trial call through.

Status mapping
==============

Before any upstream call (validation):

| Condition                                       | gRPC status         | reason              |
|-------------------------------------------------|---------------------|---------------------|
| NHS number not 10 digits / fails Modulus 11     | INVALID_ARGUMENT    | INVALID_NHS_NUMBER  |
| ODS code not 3-10 letters/digits                | INVALID_ARGUMENT    | INVALID_ODS_CODE    |
| Part option without its area, bad/future date,  | INVALID_ARGUMENT    | INVALID_PARAMETER   |
| medication_search_from with consultations or    |                     |                     |
| problems (GP Connect not-permitted combination) |                     |                     |
| RecordOptions present but selecting nothing     | INVALID_ARGUMENT    | NO_CLINICAL_AREAS   |

pds-adapter and token-service: their status and reason are passed through unchanged (metadata
`dependency`); without a reason, UNAVAILABLE/DEADLINE_EXCEEDED keep their code with reason
DEPENDENCY_UNAVAILABLE and anything else becomes UNAVAILABLE DEPENDENCY_FAILED. Then:

| Condition (from PDS)                            | gRPC status         | reason              |
|-------------------------------------------------|---------------------|---------------------|
| Restricted (R, V or S): GP Connect never called | FAILED_PRECONDITION | RESTRICTED_PATIENT  |
| No registered GP practice                       | FAILED_PRECONDITION | NO_REGISTERED_GP    |
| Superseded NHS number: not an error, the new number is used and returned            |

SDS:

| Condition                                       | gRPC status         | reason               |
|-------------------------------------------------|---------------------|----------------------|
| No Device or no Endpoint for the ODS code       | NOT_FOUND           | SDS_NOT_FOUND        |
| Several distinct Devices / Endpoint addresses   | FAILED_PRECONDITION | SDS_AMBIGUOUS        |
| 5xx (after retries)                             | UNAVAILABLE         | UPSTREAM_UNAVAILABLE |
| 200 that is not a JSON Bundle                   | UNAVAILABLE         | SDS_INVALID_RESPONSE |
| 429 (after retries)                             | RESOURCE_EXHAUSTED  | RATE_LIMITED         |
| Every attempt timed out / deadline passed       | DEADLINE_EXCEEDED   | UPSTREAM_TIMEOUT /   |
|                                                 |                     | DEADLINE_EXCEEDED    |
| Other 4xx (bad query, bad API key)              | INTERNAL            | SDS_REQUEST_REJECTED |
| Breaker open                                    | UNAVAILABLE         | CIRCUIT_OPEN         |

GP Connect provider (GPConnect-OperationOutcome-1, Spine-ErrorOrWarningCode-1); the reason is
the Spine code:

| HTTP | Spine code                        | gRPC status         | reason                 |
|------|-----------------------------------|---------------------|------------------------|
| 404  | PATIENT_NOT_FOUND                 | NOT_FOUND           | PATIENT_NOT_FOUND      |
| 404  | NO_RECORD_FOUND                   | NOT_FOUND           | NO_RECORD_FOUND        |
| 404  | ORGANISATION_NOT_FOUND            | FAILED_PRECONDITION | ORGANISATION_NOT_FOUND |
| 404  | PRACTITIONER_NOT_FOUND            | FAILED_PRECONDITION | PRACTITIONER_NOT_FOUND |
| 403  | NO_PATIENT_CONSENT                | PERMISSION_DENIED   | NO_PATIENT_CONSENT     |
| 403  | NO_ORGANISATION_CONSENT           | PERMISSION_DENIED   | (the code)             |
| 403  | NO_RELATIONSHIP                   | PERMISSION_DENIED   | NO_RELATIONSHIP        |
| 403  | ACCESS DENIED (with a space)      | PERMISSION_DENIED   | ACCESS_DENIED          |
| 400  | INVALID_NHS_NUMBER                | INVALID_ARGUMENT    | INVALID_NHS_NUMBER     |
| 400  | INVALID_IDENTIFIER_SYSTEM / _VALUE| INVALID_ARGUMENT    | (the code)             |
| 400  | INVALID_PATIENT_DEMOGRAPHICS      | INVALID_ARGUMENT    | (the code)             |
| 400  | BAD_REQUEST (e.g. malformed JWT)  | INVALID_ARGUMENT    | BAD_REQUEST            |
| 400  | CONFLICTING_VALUES                | INVALID_ARGUMENT    | CONFLICTING_VALUES     |
| 422  | INVALID_PARAMETER                 | INVALID_ARGUMENT    | INVALID_PARAMETER      |
| 422  | INVALID_RESOURCE                  | INVALID_ARGUMENT    | INVALID_RESOURCE       |
| 422  | REFERENCE_NOT_FOUND               | INVALID_ARGUMENT    | REFERENCE_NOT_FOUND    |
| 409  | DUPLICATE_REJECTED                | ALREADY_EXISTS      | DUPLICATE_REJECTED     |
| 501  | NOT_IMPLEMENTED                   | UNIMPLEMENTED       | NOT_IMPLEMENTED        |
| 500  | INTERNAL_SERVER_ERROR (retried)   | UNAVAILABLE         | INTERNAL_SERVER_ERROR  |
| any  | unknown code                      | by HTTP (below)     | the code, UPPER_SNAKE  |

Spine Secure Proxy (its own OperationOutcome: coding.code = HTTP status, display = a text with
ASIDs or the URL appended; the reason is the text's stable prefix):

| HTTP | SSP text prefix                     | gRPC status         |
|------|-------------------------------------|---------------------|
| 403  | ASID_CHECK_FAILED_MESSAGESENDER     | FAILED_PRECONDITION |
| 403  | FOT_CHECK_FAILED_MESSAGESENDER      | FAILED_PRECONDITION |
| 403  | PARTYKEY_INTERACTION_CHECK_FAILED   | FAILED_PRECONDITION |
| 502  | ERROR_COMMUNICATING_TO_ENDPOINT_URL | UNAVAILABLE (retried) |
| 405  | reason SSP_METHOD_NOT_ALLOWED       | INTERNAL            |
| 415  | reason SSP_UNSUPPORTED_MEDIA_TYPE   | INTERNAL            |

No recognised code, by HTTP status: 400 INVALID_ARGUMENT UPSTREAM_BAD_REQUEST; 401
PERMISSION_DENIED UPSTREAM_UNAUTHORISED; 403 PERMISSION_DENIED UPSTREAM_FORBIDDEN; 404
FAILED_PRECONDITION ENDPOINT_NOT_FOUND (a 404 without a Spine code is a wrong URL, not a missing
patient); 409 ABORTED UPSTREAM_CONFLICT; 422 INVALID_ARGUMENT UPSTREAM_UNPROCESSABLE; 429
RESOURCE_EXHAUSTED RATE_LIMITED; other 5xx UNAVAILABLE UPSTREAM_UNAVAILABLE; else UNKNOWN
UPSTREAM_ERROR.

Transport and resilience:

| Condition                                      | gRPC status        | reason                    |
|------------------------------------------------|--------------------|---------------------------|
| Overall deadline passed (ours or the caller's) | DEADLINE_EXCEEDED  | DEADLINE_EXCEEDED         |
| Every attempt timed out                        | DEADLINE_EXCEEDED  | UPSTREAM_TIMEOUT          |
| Connection refused / reset / TLS failure       | UNAVAILABLE        | UPSTREAM_UNAVAILABLE      |
| Provider breaker open                          | UNAVAILABLE        | CIRCUIT_OPEN              |
| Bundle larger than max_record_bytes            | RESOURCE_EXHAUSTED | RECORD_TOO_LARGE          |
| 200 whose body is not a Bundle                 | INTERNAL           | INVALID_PROVIDER_RESPONSE |
| Bundle Patient NHS number differs from the     | INTERNAL           | PATIENT_MISMATCH          |
| request or is missing, or a second Patient     |                    |                           |
| is in the Bundle                               |                    |                           |
| Unexpected bug                                 | INTERNAL           | INTERNAL                  |

Retries: 408/429/500/502/503/504, timeouts and transport errors are retried (full-jitter backoff,
Retry-After honoured up to a cap) within the overall deadline, for SDS (GET) and for the
structured record POST (a read: see `gpconnect_adapter.gpconnect` for why every attempt reuses the
Ssp-TraceID). The breaker per provider endpoint (`gpconnect:<ODS>`) counts 5xx-after-retries,
timeouts and transport errors; 4xx answers are the endpoint working and count as successes. A
routing-type failure (ENDPOINT_NOT_FOUND, PARTYKEY_INTERACTION_CHECK_FAILED) drops the cached SDS
entry so the next call asks SDS again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from gpconnect_adapter import metrics
from gpconnect_adapter.config import Settings
from gpconnect_adapter.gpconnect import GpConnectClient
from gpconnect_adapter.outcomes import AdapterError
from gpconnect_adapter.record import (
    RecordSummary,
    build_parameters,
    parse_bundle,
    resolve_areas,
    summarise,
)
from gpconnect_adapter.sds import ProviderEndpoint, SdsClient, normalise_ods
from xcagw.common.v1 import common_pb2
from xcagw.gpconnect.v1 import gpconnect_adapter_pb2, gpconnect_adapter_pb2_grpc
from xcagw.pds.v1 import pds_adapter_pb2
from xcagw.token.v1 import token_service_pb2
from xcagw_common.errors import abort, error_reason
from xcagw_common.logging import correlation_id_var, partner_id_var, pseudonymise
from xcagw_common.nhs_number import is_valid_nhs_number
from xcagw_common.resilience import Deadline
from xcagw_common.telemetry import tracer

if TYPE_CHECKING:
    from xcagw.pds.v1.pds_adapter_pb2_grpc import PdsAdapterServiceAsyncStub
    from xcagw.token.v1.token_service_pb2_grpc import TokenServiceAsyncStub

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

# Reasons that say the cached SDS answer may be stale (practice moved supplier or endpoint).
_ROUTING_REASONS = frozenset({"ENDPOINT_NOT_FOUND", "PARTYKEY_INTERACTION_CHECK_FAILED"})
_THREAD_THRESHOLD_BYTES = 1_000_000


def _analyse(body: bytes) -> RecordSummary:
    return summarise(parse_bundle(body))


def _dependency_error(exc: grpc.aio.AioRpcError, dependency: str) -> AdapterError:
    code = exc.code()
    reason = error_reason(exc)
    meta = {"dependency": dependency}
    if reason:
        return AdapterError(code, reason, f"{dependency}: {exc.details() or code.name}", meta)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return AdapterError(code, "DEPENDENCY_UNAVAILABLE", f"{dependency} unavailable", meta)
    return AdapterError(
        grpc.StatusCode.UNAVAILABLE,
        "DEPENDENCY_FAILED",
        f"{dependency} failed with {code.name}",
        meta,
    )


class GpConnectAdapterServicer(gpconnect_adapter_pb2_grpc.GpConnectAdapterServiceServicer):
    """The gRPC face of the adapter; all state lives in the injected clients."""

    def __init__(
        self,
        settings: Settings,
        sds: SdsClient,
        gpconnect: GpConnectClient,
        pds: PdsAdapterServiceAsyncStub,
        token: TokenServiceAsyncStub,
    ) -> None:
        self._settings = settings
        self._sds = sds
        self._gpconnect = gpconnect
        self._pds = pds
        self._token = token

    # ---- RPCs ----------------------------------------------------------------------------

    async def LookupEndpoint(  # noqa: N802 - gRPC method name
        self,
        request: gpconnect_adapter_pb2.LookupEndpointRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gpconnect_adapter_pb2.LookupEndpointResponse:
        self._bind_log_context(request.context)
        deadline = self._deadline(context)
        try:
            ods = normalise_ods(request.ods_code)
            with _tracer.start_as_current_span(
                "gpconnect.lookup_endpoint", attributes={"xcagw.ods_code": ods}
            ):
                endpoint, from_cache = await self._sds.lookup(
                    ods, deadline, request.context.correlation_id
                )
        except AdapterError as err:
            await self._fail(context, "LookupEndpoint", err)
        except Exception:  # noqa: BLE001 - never a stack trace to the caller
            await self._crash(context, "LookupEndpoint")
        return gpconnect_adapter_pb2.LookupEndpointResponse(
            ods_code=endpoint.ods_code,
            asid=endpoint.asid,
            party_key=endpoint.party_key,
            address=endpoint.address,
            from_cache=from_cache,
        )

    async def GetStructuredRecord(  # noqa: N802 - gRPC method name
        self,
        request: gpconnect_adapter_pb2.GetStructuredRecordRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gpconnect_adapter_pb2.GetStructuredRecordResponse:
        self._bind_log_context(request.context)
        deadline = self._deadline(context)
        try:
            with _tracer.start_as_current_span("gpconnect.get_structured_record"):
                return await self._get_structured_record(request, deadline)
        except AdapterError as err:
            await self._fail(context, "GetStructuredRecord", err)
        except Exception:  # noqa: BLE001 - never a stack trace to the caller
            await self._crash(context, "GetStructuredRecord")

    # ---- the pipeline --------------------------------------------------------------------

    async def _get_structured_record(
        self, request: gpconnect_adapter_pb2.GetStructuredRecordRequest, deadline: Deadline
    ) -> gpconnect_adapter_pb2.GetStructuredRecordResponse:
        requested = request.nhs_number.replace(" ", "").strip()
        if not is_valid_nhs_number(requested):
            raise AdapterError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID_NHS_NUMBER",
                "nhs_number must be 10 digits with a valid Modulus 11 check digit",
            )
        areas = resolve_areas(request.options if request.HasField("options") else None)

        patient = await self._patient(request.context, requested, deadline)
        # nhs-apis.md section 0.4: restricted patients (R, treat V and S the same) must not be
        # located, so their GP practice is never asked for a record.
        if patient.restricted:
            raise AdapterError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "RESTRICTED_PATIENT",
                "the patient's record is restricted; GP Connect is not called",
            )
        nhs_number = patient.nhs_number or requested
        if nhs_number != requested:
            log.info(
                "superseded NHS number resolved",
                extra={
                    "ecs": {
                        "labels.patient": pseudonymise(requested),
                        "labels.patient_current": pseudonymise(nhs_number),
                    }
                },
            )
        ods = patient.gp_ods_code.strip().upper()
        if not ods:
            raise AdapterError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "NO_REGISTERED_GP",
                "PDS records no registered GP practice for the patient",
            )
        ods = normalise_ods(ods)
        # Span attributes: practice and trace ids only, never the patient.
        span = trace.get_current_span()
        span.set_attribute("xcagw.ods_code", ods)
        endpoint, _ = await self._sds.lookup(ods, deadline, request.context.correlation_id)
        jwt = await self._mint_jwt(request.context, endpoint, nhs_number, deadline)

        trace_id = str(uuid.uuid4())
        span.set_attribute("xcagw.ssp_trace_id", trace_id)
        parameters = build_parameters(nhs_number, areas)
        try:
            result = await self._gpconnect.get_structured_record(
                endpoint, jwt, parameters, deadline, trace_id
            )
            # Parsing a very large record takes a while: keep the event loop free meanwhile.
            if len(result.body) > _THREAD_THRESHOLD_BYTES:
                summary = await asyncio.to_thread(_analyse, result.body)
            else:
                summary = _analyse(result.body)
        except AdapterError as err:
            err.metadata.setdefault("ods_code", ods)
            err.metadata.setdefault("ssp_trace_id", trace_id)
            if err.reason in _ROUTING_REASONS:
                await self._sds.cache.invalidate(ods)
            self._audit(request.context, nhs_number, endpoint, trace_id, err.reason)
            raise
        # GP Connect 1.6 "Consent and sensitive data": consumers SHALL cross-check the returned
        # Patient against the request. A record for someone else must never be passed on, so
        # the check fails closed: the structured record Bundle must hold the Patient with its
        # NHS number identifier (CareConnect-GPC-Patient-1, nhsNumber 1..1), and every Patient
        # in it must be the requested one. No Patient, a Patient without an NHS number, or a
        # second patient beside the right one are all a mismatch.
        if set(summary.patient_nhs_numbers) != {nhs_number}:
            self._audit(request.context, nhs_number, endpoint, trace_id, "PATIENT_MISMATCH")
            raise AdapterError(
                grpc.StatusCode.INTERNAL,
                "PATIENT_MISMATCH",
                "the provider's record does not identify the requested patient alone "
                f"({len(summary.patient_nhs_numbers)} Patient resource(s) checked)",
                {"ods_code": ods, "ssp_trace_id": trace_id},
            )
        span.set_attribute("xcagw.record_bytes", len(result.body))
        span.set_attribute("xcagw.gpconnect_attempts", result.attempts)
        metrics.RECORD_BYTES.observe(len(result.body))
        metrics.RECORD_RESOURCES.observe(sum(summary.resource_counts.values()))
        for _, code in summary.warnings:
            metrics.LIST_WARNINGS.labels(code if code in metrics.KNOWN_WARNINGS else "other").inc()
        self._audit(request.context, nhs_number, endpoint, trace_id, "OK", len(result.body))
        return gpconnect_adapter_pb2.GetStructuredRecordResponse(
            bundle_json=result.body,
            resource_counts=summary.resource_counts,
            warnings=[
                gpconnect_adapter_pb2.ListWarning(list_code=list_code, code=code)
                for list_code, code in summary.warnings
            ],
            ods_code=ods,
            nhs_number=nhs_number,
        )

    async def _patient(
        self, ctx: common_pb2.RequestContext, nhs_number: str, deadline: Deadline
    ) -> pds_adapter_pb2.Patient:
        try:
            response = await self._pds.GetPatient(
                pds_adapter_pb2.GetPatientRequest(context=ctx, nhs_number=nhs_number),
                timeout=self._dependency_timeout(deadline),
            )
        except grpc.aio.AioRpcError as exc:
            raise _dependency_error(exc, "pds-adapter") from exc
        return response.patient

    async def _mint_jwt(
        self,
        ctx: common_pb2.RequestContext,
        endpoint: ProviderEndpoint,
        nhs_number: str,
        deadline: Deadline,
    ) -> str:
        try:
            response = await self._token.MintGpConnectJwt(
                token_service_pb2.MintGpConnectJwtRequest(
                    context=ctx,
                    # GP Connect JWT: aud is the provider's service root URL from SDS, not the
                    # SSP-prefixed URL the request is sent to.
                    audience=endpoint.address,
                    nhs_number=nhs_number,
                    requested_scope=self._settings.requested_scope,
                ),
                timeout=self._dependency_timeout(deadline),
                # A briefly unreachable token-service (restart, DNS in a fresh network) is
                # waited for within the deadline (gRPC doc/wait-for-ready.md); minting is
                # idempotent.
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            raise _dependency_error(exc, "token-service") from exc
        return response.jwt

    # ---- helpers -------------------------------------------------------------------------

    def _deadline(self, context: grpc.aio.ServicerContext[Any, Any]) -> Deadline:
        remaining = context.time_remaining()
        return Deadline.after(self._settings.request_deadline_seconds).earliest(remaining)

    def _dependency_timeout(self, deadline: Deadline) -> float:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise AdapterError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", "deadline passed"
            )
        return min(self._settings.dependency_deadline_seconds, remaining)

    @staticmethod
    def _bind_log_context(ctx: common_pb2.RequestContext) -> None:
        correlation_id_var.set(ctx.correlation_id)
        partner_id_var.set(ctx.partner_id)

    def _audit(
        self,
        ctx: common_pb2.RequestContext,
        nhs_number: str,
        endpoint: ProviderEndpoint,
        trace_id: str,
        outcome: str,
        size: int = 0,
    ) -> None:
        # GP Connect 1.6: audit every call (user, organisation, time, patient, trace id).
        # The patient is pseudonymised: logs never hold NHS numbers.
        log.info(
            "GP Connect structured record request",
            extra={
                "ecs": {
                    "event.action": "gpconnect-get-structured-record",
                    "event.outcome": "success" if outcome == "OK" else "failure",
                    "labels.outcome_reason": outcome,
                    "labels.patient": pseudonymise(nhs_number),
                    "labels.ods_code": endpoint.ods_code,
                    "labels.provider_asid": endpoint.asid,
                    "labels.ssp_trace_id": trace_id,
                    "user.id": ctx.user_id,
                    "organization.id": ctx.organization_id,
                    "http.response.body.bytes": size,
                }
            },
        )

    async def _fail(
        self, context: grpc.aio.ServicerContext[Any, Any], rpc: str, err: AdapterError
    ) -> NoReturn:
        metrics.ERRORS.labels(rpc, metrics.reason_label(err.reason)).inc()
        span = trace.get_current_span()
        span.set_attribute("xcagw.error_reason", err.reason)
        span.set_status(StatusCode.ERROR, err.code.name)
        log.info(
            "%s failed: %s %s",
            rpc,
            err.code.name,
            err.reason,
            extra={"ecs": {"labels.reason": err.reason, "error.code": err.code.name}},
        )
        await abort(context, err.code, err.message, err.reason, err.metadata)

    async def _crash(self, context: grpc.aio.ServicerContext[Any, Any], rpc: str) -> NoReturn:
        metrics.ERRORS.labels(rpc, "INTERNAL").inc()
        log.exception("%s failed unexpectedly", rpc)
        await abort(context, grpc.StatusCode.INTERNAL, "internal error", "INTERNAL")
