"""xcagw_common: settings, logging, gRPC bootstrap (health, reflection, metrics, errors)."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from pydantic_settings import SettingsConfigDict

from xcagw_common import errors
from xcagw_common.grpc_server import GrpcApp, ServicerBinding, serve
from xcagw_common.logging import EcsJsonFormatter, correlation_id_var, pseudonymise
from xcagw_common.settings import BaseServiceSettings, dependency_addr


class DemoSettings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_SVC_", extra="ignore", populate_by_name=True)
    token_service_addr: str = dependency_addr("TOKEN_SERVICE_ADDR", "127.0.0.1:1")


def test_settings_use_prefix_shared_names_and_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_SVC_PORT", "1234")
    monkeypatch.setenv("TOKEN_SERVICE_ADDR", "token:50051")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@redis:6379/0")
    settings = DemoSettings()
    assert settings.port == 1234
    assert settings.token_service_addr == "token:50051"
    assert settings.redis_url.get_secret_value().endswith("@redis:6379/0")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


def test_json_log_lines_carry_ecs_fields_trace_and_correlation() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EcsJsonFormatter("demo"))
    logger = logging.getLogger("xcagw.test.json")
    logger.handlers[:] = [handler]
    logger.propagate = False
    tracer = TracerProvider().get_tracer("t")
    token = correlation_id_var.set("urn:uuid:abc")
    try:
        with tracer.start_as_current_span("op") as span:
            logger.warning("hello %s", "world")
            trace_id = format(span.get_span_context().trace_id, "032x")
    finally:
        correlation_id_var.reset(token)
    doc = json.loads(stream.getvalue().strip())
    assert doc["message"] == "hello world"
    assert doc["log.level"] == "warning"
    assert doc["service.name"] == "demo"
    assert doc["trace.id"] == trace_id
    assert doc["labels.correlation_id"] == "urn:uuid:abc"
    assert "@timestamp" in doc


def test_pseudonymise_is_stable_and_hides_the_number() -> None:
    token = pseudonymise("9000000009")
    assert token == pseudonymise(" 9000000009 ")
    assert token != pseudonymise("9000000017")
    assert "9000000009" not in token


_ECHO = "/demo.v1.Demo/Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
    if request == b"fail":
        await errors.abort(context, grpc.StatusCode.FAILED_PRECONDITION, "nope", "DEMO_REASON")
    return request


def _add_demo(_servicer: object, server: grpc.aio.Server) -> None:
    handler = grpc.method_handlers_generic_handler(
        "demo.v1.Demo",
        {"Echo": grpc.unary_unary_rpc_method_handler(_echo)},
    )
    server.add_generic_rpc_handlers((handler,))


async def test_server_health_follows_readiness_and_stops_gracefully() -> None:
    ready = {"ok": False}

    async def check() -> None:
        if not ready["ok"]:
            raise ConnectionError("dependency down")

    settings = DemoSettings(port=0, metrics_port=0)
    app = GrpcApp(
        name="demo",
        settings=settings,
        bindings=[ServicerBinding(_add_demo, None, "demo.v1.Demo")],
        readiness_checks=[check],
        readiness_interval_seconds=0.1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, stop_event=stop))
    for _ in range(100):
        if app.bound_port:
            break
        await asyncio.sleep(0.02)
    addr = f"127.0.0.1:{app.bound_port}"

    async def status() -> int:
        async with grpc.aio.insecure_channel(addr) as channel:
            resp = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="demo.v1.Demo"), timeout=2
            )
            return int(resp.status)

    try:
        await asyncio.sleep(0.3)
        assert await status() == health_pb2.HealthCheckResponse.NOT_SERVING
        ready["ok"] = True
        await asyncio.sleep(0.3)
        assert await status() == health_pb2.HealthCheckResponse.SERVING

        async with grpc.aio.insecure_channel(addr) as channel:
            echo = channel.unary_unary(_ECHO)
            assert await echo(b"hi", timeout=2) == b"hi"
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await echo(b"fail", timeout=2)
            assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert errors.error_reason(exc.value) == "DEMO_REASON"

            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            names: set[str] = set()
            async for resp in reflect.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            ):
                names.update(s.name for s in resp.list_services_response.service)
            assert {"demo.v1.Demo", "grpc.health.v1.Health"} <= names

        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{app.metrics_port}/metrics")).text
        assert 'xcagw_grpc_server_handled_total{code="OK",method="/demo.v1.Demo/Echo"' in text
        assert 'code="FAILED_PRECONDITION",method="/demo.v1.Demo/Echo"' in text
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)
    with pytest.raises(grpc.aio.AioRpcError):
        await status()
