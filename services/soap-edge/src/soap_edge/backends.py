"""gRPC clients for the four backends, and the one place that maps their failures to IHE codes.

One channel per downstream, created in the app lifespan and reused. Every call carries the
RequestContext built from the SOAP message.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

import grpc

from soap_edge.config import Settings
from soap_edge.metrics import BACKEND_FAILURES
from xcagw.ccda.v1 import ccda_converter_pb2, ccda_converter_pb2_grpc
from xcagw.common.v1 import common_pb2
from xcagw.gpconnect.v1 import gpconnect_adapter_pb2, gpconnect_adapter_pb2_grpc
from xcagw.pds.v1 import pds_adapter_pb2, pds_adapter_pb2_grpc
from xcagw_common.errors import error_reason
from xcagw_common.grpc_client import check_health, create_channel

PDS = "pds-adapter"
GPCONNECT = "gpconnect-adapter"
CCDA = "ccda-converter"
TOKEN = "token-service"  # nosec B105 # noqa: S105 - a service name, not a secret


class FailureKind(StrEnum):
    """What went wrong downstream, independent of the transaction that asked."""

    NOT_FOUND = "not_found"
    INVALID_ID = "invalid_id"
    INVALID_QUERY = "invalid_query"
    RESTRICTED = "restricted"
    TOO_MANY_MATCHES = "too_many_matches"
    POLICY = "policy"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    BUSY = "busy"
    INTERNAL = "internal"


@dataclass
class BackendFailure(Exception):
    """A downstream call failed; `service` and `kind` decide the IHE error."""

    service: str
    kind: FailureKind

    def __post_init__(self) -> None:
        super().__init__(f"{self.service}: {self.kind.value}")


# GP Connect refusals that are the GP practice's access policy (GP Connect error handling guidance).
_GPC_POLICY = {"NO_PATIENT_CONSENT", "NO_ORGANISATION_CONSENT", "NO_RELATIONSHIP", "ACCESS_DENIED"}


def classify(service: str, err: grpc.aio.AioRpcError) -> BackendFailure:
    """gRPC status + ErrorInfo reason -> FailureKind, per the adapters' contracts (#5, #6, #7).

    pds-adapter and gpconnect-adapter document their (status, reason) tables in their servicer
    modules; this is the only place soap-edge interprets them.
    """
    code = err.code()
    reason = error_reason(err)
    kind = FailureKind.INTERNAL
    if code == grpc.StatusCode.NOT_FOUND:
        # SDS_NOT_FOUND: the GP practice has no GP Connect endpoint, not an unknown patient.
        kind = FailureKind.UNAVAILABLE if reason == "SDS_NOT_FOUND" else FailureKind.NOT_FOUND
    elif code == grpc.StatusCode.INVALID_ARGUMENT:
        if reason == "INVALID_NHS_NUMBER":
            kind = FailureKind.INVALID_ID
        elif service == PDS:
            kind = FailureKind.INVALID_QUERY
    elif code == grpc.StatusCode.FAILED_PRECONDITION:
        if reason == "RESTRICTED_PATIENT":
            kind = FailureKind.RESTRICTED
        elif reason == "TOO_MANY_MATCHES":
            kind = FailureKind.TOO_MANY_MATCHES
        elif reason == "NO_REGISTERED_GP":
            kind = FailureKind.NOT_FOUND
        elif service == GPCONNECT:
            # SSP/ASID checks, SDS ambiguity, unknown organisation: the GP system is unreachable.
            kind = FailureKind.UNAVAILABLE
    elif code == grpc.StatusCode.PERMISSION_DENIED:
        # Only GP Connect refusals are the partner-facing policy; PDS refusing *us* is our fault.
        if service == GPCONNECT and (reason in _GPC_POLICY or not reason):
            kind = FailureKind.POLICY
    elif code == grpc.StatusCode.UNAVAILABLE:
        kind = FailureKind.UNAVAILABLE
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        kind = FailureKind.TIMEOUT
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        kind = FailureKind.BUSY
    BACKEND_FAILURES.labels(service, kind.value).inc()
    return BackendFailure(service, kind)


# ---- IHE mappings (ihe-xca-rules §4.6, §6.3, §7.3, §9) --------------------------------------
# Unknown, invalid and restricted patients all read as "unknown patient": never disclose that a
# restricted record exists (ihe-xca-rules §4.6 "Restricted / sensitive patient").
_XDS_QUERY: dict[FailureKind, str] = {
    FailureKind.NOT_FOUND: "XDSUnknownPatientId",
    FailureKind.INVALID_ID: "XDSUnknownPatientId",
    FailureKind.INVALID_QUERY: "XDSRegistryError",
    FailureKind.RESTRICTED: "XDSUnknownPatientId",
    FailureKind.TOO_MANY_MATCHES: "XDSUnknownPatientId",
    FailureKind.POLICY: "LocalPolicyRestrictionError",
    FailureKind.UNAVAILABLE: "XDSRegistryNotAvailable",
    FailureKind.TIMEOUT: "XDSRegistryBusy",
    FailureKind.BUSY: "XDSRegistryBusy",
    FailureKind.INTERNAL: "XDSRegistryError",
}
_XDS_RETRIEVE: dict[FailureKind, str] = {
    **_XDS_QUERY,
    FailureKind.UNAVAILABLE: "XDSRepositoryError",
    FailureKind.TIMEOUT: "XDSRepositoryBusy",
    FailureKind.BUSY: "XDSRepositoryBusy",
    FailureKind.INTERNAL: "XDSRepositoryError",
}
_CODE_CONTEXT: dict[FailureKind, str] = {
    FailureKind.NOT_FOUND: "Patient not known to this community",
    FailureKind.INVALID_ID: "Patient not known to this community",
    FailureKind.INVALID_QUERY: "The patient lookup was rejected",
    FailureKind.RESTRICTED: "Patient not known to this community",
    FailureKind.TOO_MANY_MATCHES: "Patient not known to this community",
    FailureKind.POLICY: "Access to this record is not permitted by local policy",
    FailureKind.UNAVAILABLE: "A service behind the gateway is unavailable; try again later",
    FailureKind.TIMEOUT: "A service behind the gateway did not answer in time; try again later",
    FailureKind.BUSY: "The gateway is busy; try again later",
    FailureKind.INTERNAL: "The gateway could not produce the result",
}


def xds_error(failure: BackendFailure, *, retrieve: bool = False) -> tuple[str, str]:
    """(errorCode, codeContext) for an ITI-38 (or, with retrieve, ITI-39) RegistryError."""
    if failure.service == GPCONNECT and failure.kind in (
        FailureKind.UNAVAILABLE,
        FailureKind.TIMEOUT,
    ):
        # The patient's GP system (the community behind us) is unreachable.
        return "XDSUnavailableCommunity", "The GP system holding the record is unreachable"
    table = _XDS_RETRIEVE if retrieve else _XDS_QUERY
    return table[failure.kind], _CODE_CONTEXT[failure.kind]


@dataclass(frozen=True)
class Hl7Outcome:
    """acknowledgement/typeCode, queryAck/queryResponseCode and an optional detail code."""

    ack: str
    query_response: str
    detail_code: str = ""
    detail_text: str = ""


# IHE ITI TF-2b 3.47.4.2.3 and IPF's NAK mapping (ihe-xca-rules §7.3).
def hl7_outcome(failure: BackendFailure) -> Hl7Outcome:
    kind = failure.kind
    if kind in (FailureKind.NOT_FOUND, FailureKind.RESTRICTED, FailureKind.TOO_MANY_MATCHES):
        return Hl7Outcome("AA", "NF")
    if kind is FailureKind.INVALID_ID:
        return Hl7Outcome("AE", "QE", "SYN113", "Invalid NHS number")
    if kind is FailureKind.INVALID_QUERY:
        return Hl7Outcome("AE", "QE", "SYN113", "PDS rejected the query parameters")
    return Hl7Outcome("AE", "AE", "INTERR", _CODE_CONTEXT[kind])


@dataclass
class StructuredRecord:
    bundle_json: bytes
    nhs_number: str
    ods_code: str


@dataclass
class Converted:
    ccd_xml: bytes
    document_id: str


class Backends:
    """Async stubs for pds-adapter, gpconnect-adapter, ccda-converter (+ token-service health)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # create_channel allows 64 MB messages: C-CDAs and GP Connect bundles can be several MB.
        # TLS (mTLS with our client certificate) when backend_tls_ca_file is set; the health
        # checks use these channels too, so readiness proves the TLS handshake.
        tls = {
            "ca_file": settings.backend_tls_ca_file,
            "cert_file": settings.backend_tls_cert_file,
            "key_file": settings.backend_tls_key_file,
        }
        self.channels: dict[str, grpc.aio.Channel] = {
            PDS: create_channel(settings.pds_adapter_addr, **tls),
            GPCONNECT: create_channel(settings.gpconnect_adapter_addr, **tls),
            CCDA: create_channel(settings.ccda_converter_addr, **tls),
            TOKEN: create_channel(settings.token_service_addr, **tls),
        }
        self.pds = pds_adapter_pb2_grpc.PdsAdapterServiceStub(self.channels[PDS])
        self.gpconnect = gpconnect_adapter_pb2_grpc.GpConnectAdapterServiceStub(
            self.channels[GPCONNECT]
        )
        self.ccda = ccda_converter_pb2_grpc.CcdaConverterServiceStub(self.channels[CCDA])

    async def close(self) -> None:
        await asyncio.gather(*(ch.close(None) for ch in self.channels.values()))

    async def health(self, name: str, deadline: float) -> bool:
        """grpc.health.v1 Check of the backend's overall status ("")."""
        return await check_health(self.channels[name], "", deadline)

    async def get_patient(
        self, ctx: common_pb2.RequestContext, nhs_number: str
    ) -> pds_adapter_pb2.Patient:
        """The PDS patient; restricted records raise RESTRICTED however the adapter signals it."""
        try:
            resp = await self.pds.GetPatient(
                pds_adapter_pb2.GetPatientRequest(context=ctx, nhs_number=nhs_number),
                timeout=self.settings.pds_timeout_seconds,
            )
        except grpc.aio.AioRpcError as err:
            raise classify(PDS, err) from None
        if is_restricted(resp.patient):
            raise BackendFailure(PDS, FailureKind.RESTRICTED)
        return resp.patient

    async def search_patients(
        self, req: pds_adapter_pb2.SearchPatientsRequest
    ) -> list[tuple[pds_adapter_pb2.Patient, float]]:
        """Matches with their scores; restricted records are dropped here, never shown."""
        try:
            resp = await self.pds.SearchPatients(req, timeout=self.settings.pds_timeout_seconds)
        except grpc.aio.AioRpcError as err:
            raise classify(PDS, err) from None
        scores = list(resp.scores)
        out = []
        for i, patient in enumerate(resp.patients):
            if is_restricted(patient):
                continue
            out.append((patient, scores[i] if i < len(scores) else 1.0))
        return out

    async def structured_record(
        self, ctx: common_pb2.RequestContext, nhs_number: str
    ) -> StructuredRecord:
        try:
            resp = await self.gpconnect.GetStructuredRecord(
                gpconnect_adapter_pb2.GetStructuredRecordRequest(
                    context=ctx,
                    nhs_number=nhs_number,
                    options=gpconnect_adapter_pb2.RecordOptions(all=True),
                ),
                timeout=self.settings.gpconnect_timeout_seconds,
            )
        except grpc.aio.AioRpcError as err:
            raise classify(GPCONNECT, err) from None
        return StructuredRecord(resp.bundle_json, resp.nhs_number or nhs_number, resp.ods_code)

    async def convert(self, ctx: common_pb2.RequestContext, bundle_json: bytes) -> Converted:
        try:
            resp = await self.ccda.ConvertBundle(
                ccda_converter_pb2.ConvertBundleRequest(
                    context=ctx,
                    bundle_json=bundle_json,
                    enrich_dmd=self.settings.ccda_enrich_dmd,
                ),
                timeout=self.settings.ccda_timeout_seconds,
            )
        except grpc.aio.AioRpcError as err:
            raise classify(CCDA, err) from None
        if not resp.ccd_xml:
            raise BackendFailure(CCDA, FailureKind.INTERNAL)
        return Converted(resp.ccd_xml, resp.document_id)


def is_restricted(patient: pds_adapter_pb2.Patient) -> bool:
    """PDS R/V/S (and anything not plainly U) is treated as restricted (Xhuma keeps only U)."""
    return patient.restricted or patient.security_label not in ("", "U")
