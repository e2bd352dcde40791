"""mTLS on the adapter's gRPC port and towards the SSP, readiness, metrics and log hygiene."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import grpc
import pytest
from gpc_testkit import (
    CertSet,
    FakeSsp,
    RunningAdapter,
    Sandbox,
    record_request,
    request_context,
    rpc_error,
    run_adapter,
    via_ssp,
)
from prometheus_client import REGISTRY

from gpconnect_adapter.healthcheck import probe
from xcagw.gpconnect.v1 import gpconnect_adapter_pb2, gpconnect_adapter_pb2_grpc
from xcagw_common.grpc_client import check_health
from xcagw_common.testing import free_port

C = grpc.StatusCode
NHS_NUMBER = re.compile(r"(?<!\d)9000000\d{3}(?!\d)")


def _lookup() -> gpconnect_adapter_pb2.LookupEndpointRequest:
    return gpconnect_adapter_pb2.LookupEndpointRequest(context=request_context(), ods_code="Y12345")


def _tls(certs: CertSet) -> dict[str, Any]:
    return {
        "tls_cert_file": str(certs.server_cert),
        "tls_key_file": str(certs.server_key),
        "tls_client_ca_file": str(certs.ca),
    }


async def test_gpc_grpc_port_requires_a_client_certificate(
    adapter_settings: dict[str, Any], sandbox: Sandbox, certs: CertSet
) -> None:
    with_cert = grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),
        private_key=certs.client_key.read_bytes(),
        certificate_chain=certs.client_cert.read_bytes(),
    )
    async with run_adapter(
        {**adapter_settings, **_tls(certs)}, channel_credentials=with_cert
    ) as running:
        response = await running.stub.LookupEndpoint(_lookup(), timeout=10)
        assert response.asid == "918999198001"

        target = f"127.0.0.1:{running.port}"
        no_cert = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
        async with grpc.aio.secure_channel(target, no_cert) as channel:
            stub = gpconnect_adapter_pb2_grpc.GpConnectAdapterServiceStub(channel)
            failure = await rpc_error(stub.LookupEndpoint(_lookup(), timeout=5))
            assert failure.code == C.UNAVAILABLE
        async with grpc.aio.insecure_channel(target) as channel:
            stub = gpconnect_adapter_pb2_grpc.GpConnectAdapterServiceStub(channel)
            failure = await rpc_error(stub.LookupEndpoint(_lookup(), timeout=5))
            assert failure.code == C.UNAVAILABLE
    assert sandbox.requests("sds") == 2  # only the authenticated client's lookup reached SDS


async def test_gpc_ssp_client_certificate_is_presented(
    adapter_settings: dict[str, Any], sandbox: Sandbox, ssp: FakeSsp, ssp_certs: CertSet
) -> None:
    async with run_adapter({**adapter_settings, **via_ssp(ssp, ssp_certs)}) as running:
        response = await running.stub.GetStructuredRecord(record_request("9000000009"), timeout=30)
    assert json.loads(response.bundle_json)["resourceType"] == "Bundle"
    assert len(ssp.seen_paths) == 1  # the proxy requires a client certificate

    # Without our certificate the proxy refuses the TLS handshake.
    no_cert = via_ssp(ssp, ssp_certs, ssp_client_cert_file="", ssp_client_key_file="")
    async with run_adapter({**adapter_settings, **no_cert, "gpconnect_max_attempts": 1}) as running:
        failure = await rpc_error(running.stub.GetStructuredRecord(record_request("9000000009")))
    assert (failure.code, failure.reason) == (C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert len(ssp.seen_paths) == 1


async def _health(running: RunningAdapter, want: bool) -> bool:
    for _ in range(50):
        if await check_health(running.channel) == want:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_gpc_readiness_follows_dependencies(
    adapter_settings: dict[str, Any], sandbox: Sandbox
) -> None:
    async with run_adapter(adapter_settings) as running:
        assert await _health(running, True)
        # The container HEALTHCHECK probe agrees.
        fixed = running.settings.model_copy(update={"port": running.port})
        assert await asyncio.to_thread(probe, fixed)
    dead = f"127.0.0.1:{free_port()}"
    async with run_adapter(
        {**adapter_settings, "pds_adapter_addr": dead}, wait_ready=False
    ) as running:
        assert await _health(running, False)
        assert not await check_health(running.channel)
        fixed = running.settings.model_copy(update={"port": running.port})
        assert not await asyncio.to_thread(probe, fixed)


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_gpc_metrics_and_logs_never_carry_nhs_numbers(
    adapter: RunningAdapter, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    hits = {"cache": "sds_endpoint", "result": "hit"}
    misses = {"cache": "sds_endpoint", "result": "miss"}
    before = (
        _sample("xcagw_cache_requests_total", hits),
        _sample("xcagw_cache_requests_total", misses),
        _sample("xcagw_upstream_request_seconds_count", {"upstream": "gpconnect", "status": "200"}),
        _sample("xcagw_upstream_request_seconds_count", {"upstream": "sds", "status": "200"}),
        _sample("xcagw_gpconnect_record_bytes_count", {}),
    )
    caplog.set_level(logging.DEBUG)
    for _ in range(2):
        await adapter.stub.GetStructuredRecord(record_request("9000000009"), timeout=30)
    await rpc_error(adapter.stub.GetStructuredRecord(record_request("9000000165")))
    await rpc_error(adapter.stub.GetStructuredRecord(record_request("9000000025")))
    after = (
        _sample("xcagw_cache_requests_total", hits),
        _sample("xcagw_cache_requests_total", misses),
        _sample("xcagw_upstream_request_seconds_count", {"upstream": "gpconnect", "status": "200"}),
        _sample("xcagw_upstream_request_seconds_count", {"upstream": "sds", "status": "200"}),
        _sample("xcagw_gpconnect_record_bytes_count", {}),
    )
    deltas = [a - b for a, b in zip(after, before, strict=True)]
    # Y12345 is looked up once (a miss) then served from the cache (9000000165 is there too);
    # the restricted patient never gets as far as SDS.
    assert deltas == [2.0, 1.0, 2.0, 2.0, 2.0]

    for metric in REGISTRY.collect():
        for sample in metric.samples:
            for value in sample.labels.values():
                assert not NHS_NUMBER.search(value), (sample.name, sample.labels)
    assert caplog.records, "the adapter logs each request (pseudonymised)"
    for record in caplog.records:
        text = record.getMessage() + json.dumps(getattr(record, "ecs", {}), default=str)
        assert not NHS_NUMBER.search(text), text
    audit = [r.ecs for r in caplog.records if getattr(r, "ecs", {}).get("event.action")]
    # Two records and the NO_RELATIONSHIP refusal are audited, the patient pseudonymised.
    assert [a["labels.outcome_reason"] for a in audit] == ["OK", "OK", "NO_RELATIONSHIP"]
    assert all(a["labels.patient"].startswith("pt_") for a in audit)
    assert len({a["labels.ssp_trace_id"] for a in audit}) == 3
