"""xcagw_common.grpc_server: the `liveness` health name is independent of readiness.

Kubernetes restarts a pod whose livenessProbe fails; if liveness followed readiness, a Redis
outage would restart every adapter (losing in-process tokens) and keep them in CrashLoopBackOff
until Redis came back. These tests run a real server, a real redis-server and real gRPC calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xcagw_common.grpc_server import LIVENESS_SERVICE, GrpcApp, ServicerBinding, ping_redis, serve
from xcagw_common.redis import create_redis
from xcagw_common.settings import BaseServiceSettings
from xcagw_common.testing import RedisServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DEMO = "demo.v1.Demo"

Status = Callable[[str], Awaitable[int]]


def _add_demo(_servicer: object, server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(DEMO, {}),))


async def _wait_for(status: Status, service: str, expected: int) -> None:
    """Poll until `service` reports `expected` (the readiness loop runs every 0.1 s here)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 10.0
    last = -1
    while loop.time() < end:
        last = await status(service)
        if last == expected:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"health of {service!r} stayed {last}, expected {expected}")


@pytest.fixture
async def served() -> AsyncIterator[tuple[Status, RedisServer, GrpcApp]]:
    """A server whose only readiness check is a Redis PING against a real redis-server."""
    with RedisServer() as redis_server:
        client = create_redis(redis_server.url, timeout=0.5)

        async def redis_ready() -> None:
            await ping_redis(client)

        app = GrpcApp(
            name="demo-health",
            settings=BaseServiceSettings(port=0, metrics_port=0),
            bindings=[ServicerBinding(_add_demo, None, DEMO)],
            readiness_checks=[redis_ready],
            readiness_interval_seconds=0.1,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(serve(app, stop_event=stop))
        for _ in range(250):
            if app.bound_port or task.done():
                break
            await asyncio.sleep(0.02)
        assert app.bound_port, "server did not start"
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.bound_port}")
        stub = health_pb2_grpc.HealthStub(channel)

        async def status(service: str) -> int:
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            return int(response.status)

        try:
            yield status, redis_server, app
        finally:
            await channel.close()
            stop.set()
            await asyncio.wait_for(task, timeout=15)
            await client.aclose()


async def test_liveness_stays_serving_while_readiness_fails(
    served: tuple[Status, RedisServer, GrpcApp],
) -> None:
    status, redis_server, _ = served
    await _wait_for(status, "", SERVING)
    assert await status(DEMO) == SERVING
    assert await status(LIVENESS_SERVICE) == SERVING

    redis_server.kill()
    await _wait_for(status, "", NOT_SERVING)
    assert await status(DEMO) == NOT_SERVING
    # Several readiness rounds later the process is still reported alive.
    for _ in range(5):
        await asyncio.sleep(0.15)
        assert await status(LIVENESS_SERVICE) == SERVING
        assert await status("") == NOT_SERVING

    redis_server.start()
    await _wait_for(status, "", SERVING)
    assert await status(LIVENESS_SERVICE) == SERVING


async def test_liveness_is_serving_before_the_first_readiness_pass() -> None:
    """A dependency that is down from the start must not fail the startup probe either."""

    async def never_ready() -> None:
        raise ConnectionError("dependency down")

    app = GrpcApp(
        name="demo-never-ready",
        settings=BaseServiceSettings(port=0, metrics_port=0),
        bindings=[ServicerBinding(_add_demo, None, DEMO)],
        readiness_checks=[never_ready],
        readiness_interval_seconds=0.1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, stop_event=stop))
    try:
        for _ in range(250):
            if app.bound_port or task.done():
                break
            await asyncio.sleep(0.02)
        assert app.bound_port, "server did not start"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.bound_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def check(service: str) -> int:
                request = health_pb2.HealthCheckRequest(service=service)
                return int((await stub.Check(request, timeout=2)).status)

            assert await check(LIVENESS_SERVICE) == SERVING
            await asyncio.sleep(0.3)
            assert await check("") == NOT_SERVING
            assert await check(DEMO) == NOT_SERVING
            assert await check(LIVENESS_SERVICE) == SERVING
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)
