"""The whole stack comes up through the launcher: health, readiness, reflection, Redis outage."""

from __future__ import annotations

import time

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from xcagw_devstack.launcher import GRPC_SERVICES, Stack

EXPECTED_SERVICES = {
    "token-service": "xcagw.token.v1.TokenService",
    "pds-adapter": "xcagw.pds.v1.PdsAdapterService",
    "gpconnect-adapter": "xcagw.gpconnect.v1.GpConnectAdapterService",
    "ccda-converter": "xcagw.ccda.v1.CcdaConverterService",
}


def _reflection_list(addr: str) -> set[str]:
    with grpc.insecure_channel(addr) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names: set[str] = set()
        for response in responses:
            names.update(s.name for s in response.list_services_response.service)
        return names


def test_every_grpc_service_is_serving_and_lists_itself_by_reflection(stack: Stack) -> None:
    for name in GRPC_SERVICES:
        addr = stack.addr(name)
        with grpc.insecure_channel(addr) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=EXPECTED_SERVICES[name]), timeout=5
            )
        assert status.status == health_pb2.HealthCheckResponse.SERVING, name
        services = _reflection_list(addr)
        assert EXPECTED_SERVICES[name] in services, (name, services)
        assert "grpc.health.v1.Health" in services


def test_soap_edge_live_ready_and_metrics(stack: Stack) -> None:
    base = stack.management_url
    assert httpx.get(f"{base}/health/live", timeout=5).status_code == 200
    ready = httpx.get(f"{base}/health/ready", timeout=5)
    assert ready.status_code == 200, ready.text
    metrics = httpx.get(f"{base}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert "process_resident_memory_bytes" in metrics.text


def test_grpc_services_expose_prometheus_metrics(stack: Stack) -> None:
    for name in GRPC_SERVICES:
        port = stack.ports[f"{name}-metrics"]
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "process_open_fds" in text, name


def _wait_status(url: str, expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    status = -1
    while time.monotonic() < deadline:
        try:
            status = httpx.get(url, timeout=3).status_code
        except httpx.HTTPError:
            status = -1
        if status == expected:
            return status
        time.sleep(0.3)
    return status


def test_readiness_follows_redis_outage_and_recovery(stack: Stack) -> None:
    ready_url = f"{stack.management_url}/health/ready"
    assert _wait_status(ready_url, 200) == 200
    stack.kill("redis")
    try:
        assert _wait_status(ready_url, 503) == 503
    finally:
        stack.start_component(stack.components["redis"])
    assert _wait_status(ready_url, 200) == 200
