"""pds-adapter component test kit: real Redis, the NHS sandbox, the real token-service, the adapter.

Everything listens on real sockets on free ports. One sandbox and one token-service serve a whole
test module (module-scoped event loop); each test starts its own adapter so breaker, token and
settings state never leak between tests. The sandbox issues tokens only through its OAuth
endpoint, which verifies token-service's RS512 client assertions against token-service's JWKS
URL, exactly as in the dev stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
import redis
import uvicorn

from pds_adapter.__main__ import create_app
from pds_adapter.config import Settings
from xcagw.pds.v1 import pds_adapter_pb2_grpc
from xcagw_common.grpc_client import check_health
from xcagw_common.grpc_server import GrpcApp, serve
from xcagw_common.testing_container import TestRedis, redis_for_tests

STARTUP_TIMEOUT = 30.0


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers (the test runner owns the signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def _serve_grpc(app: GrpcApp) -> AsyncIterator[GrpcApp]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, stop_event=stop))
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not app.bound_port:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{app.name} did not start")
        await asyncio.sleep(0.02)
    try:
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


async def _wait_serving(addr: str, name: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    async with grpc.aio.insecure_channel(addr) as channel:
        while not await check_health(channel):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} never became SERVING")
            await asyncio.sleep(0.05)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[TestRedis]:
    with redis_for_tests() as server:
        yield server


PDS_PATH_PREFIX = "/personal-demographics/"


class HeaderRecorder:
    """ASGI wrapper in front of the sandbox: the headers of each PDS request as they arrived.

    It records what uvicorn parsed off the socket, so a test sees the request the adapter really
    sent (repeated header names kept as separate entries), not what the client meant to send.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self.pds_requests: list[list[tuple[str, str]]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PDS_PATH_PREFIX):
            self.pds_requests.append(
                [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
            )
        await self._app(scope, receive, send)


@dataclass
class Sandbox:
    """The running NHS sandbox: its base URL and admin helpers."""

    url: str
    http: httpx.AsyncClient
    recorder: HeaderRecorder

    def pds_header_values(self, name: str) -> list[list[str]]:
        """For each PDS request received so far, every value of header `name` (in order)."""
        wanted = name.lower()
        return [[v for k, v in heads if k == wanted] for heads in self.recorder.pds_requests]

    @property
    def pds_base_url(self) -> str:
        return f"{self.url}/personal-demographics/FHIR/R4"

    async def stats(self) -> dict[str, Any]:
        response = await self.http.get(f"{self.url}/_admin/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    async def pds_requests(self) -> int:
        return int((await self.stats())["requests"]["pds"])

    async def pds_responses(self) -> dict[str, int]:
        responses: dict[str, int] = (await self.stats())["responses"]["pds"]
        return responses

    async def oauth_requests(self) -> int:
        return int((await self.stats())["requests"]["oauth"])

    async def set_pds_faults(self, **fault: Any) -> None:
        response = await self.http.put(f"{self.url}/_admin/faults", json={"pds": fault})
        response.raise_for_status()

    async def clear_faults(self) -> None:
        (await self.http.delete(f"{self.url}/_admin/faults")).raise_for_status()

    async def reset_stats(self) -> None:
        (await self.http.post(f"{self.url}/_admin/stats/reset")).raise_for_status()
        self.recorder.pds_requests.clear()

    async def expire_tokens(self) -> int:
        response = await self.http.post(f"{self.url}/_admin/tokens/expire")
        response.raise_for_status()
        return int(response.json()["expired"])


@dataclass
class Stack:
    """Sandbox plus token-service, shared by the tests of one module."""

    sandbox: Sandbox
    token_service_addr: str
    redis_url: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    redis_server: TestRedis, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    token_app_module = pytest.importorskip(
        "token_service.app", reason="token-service is not importable"
    )
    from token_service.config import Settings as TokenSettings
    from xcagw_devstack.sandbox.app import create_app as create_sandbox
    from xcagw_devstack.sandbox.config import DEFAULT_API_KEY, SandboxSettings

    # The sandbox's port is needed before it can start (token-service's token_url), and
    # token-service's JWKS URL before the sandbox can (its registered key source).
    sandbox_sock = _listening_socket()
    sandbox_port = int(sandbox_sock.getsockname()[1])
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    keys_dir: Path = tmp_path_factory.mktemp("token-keys")
    token_settings = TokenSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        jwks_http_port=0,
        redis_url=redis_server.url,
        shutdown_grace_seconds=0.5,
        keys_dir=str(keys_dir),
        auto_generate_key=True,
        key_bits=2048,
        api_key=DEFAULT_API_KEY,
        token_url=f"{sandbox_url}/oauth2/token",
    )
    token_app, runtime = token_app_module.build_app(token_settings)
    token_app.readiness_interval_seconds = 0.1
    async with _serve_grpc(token_app):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while runtime.jwks_server is not None and runtime.jwks_port <= 0:
            if time.monotonic() > deadline:
                raise TimeoutError("token-service JWKS listener did not start")
            await asyncio.sleep(0.02)
        token_addr = f"127.0.0.1:{token_app.bound_port}"
        await _wait_serving(token_addr, "token-service")

        sandbox_app = create_sandbox(
            SandboxSettings(
                host="127.0.0.1",
                port=sandbox_port,
                jwks_url=runtime.jwks_url,
                pds_rate_limit_per_second=1000,
            )
        )
        recorder = HeaderRecorder(sandbox_app)
        server = _QuietServer(
            uvicorn.Config(recorder, log_config=None, access_log=False, lifespan="off")
        )
        server_task = asyncio.create_task(server.serve(sockets=[sandbox_sock]))
        while not server.started:
            if server_task.done():
                server_task.result()
            await asyncio.sleep(0.01)
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                yield Stack(Sandbox(sandbox_url, http, recorder), token_addr, redis_server.url)
        finally:
            server.should_exit = True
            await asyncio.wait_for(server_task, timeout=10)
            sandbox_sock.close()


@dataclass
class Adapter:
    """One running pds-adapter and a stub to call it."""

    app: GrpcApp
    settings: Settings
    channel: grpc.aio.Channel
    stub: pds_adapter_pb2_grpc.PdsAdapterServiceStub

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.app.bound_port}"


def _clear_adapter_keys(redis_url: str) -> None:
    # Only pds-adapter's keys: token-service keeps its keys and tokens in the same Redis.
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [*client.scan_iter("xcagw:pds:*"), *client.scan_iter("xcagw:ratelimit:pds")]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


AdapterFactory = Callable[..., contextlib.AbstractAsyncContextManager[Adapter]]


@pytest_asyncio.fixture(loop_scope="module")
async def start_adapter(stack: Stack) -> AsyncIterator[AdapterFactory]:
    """`async with start_adapter(**setting_overrides) as adapter`, with clean Redis and faults."""
    _clear_adapter_keys(stack.redis_url)
    await stack.sandbox.clear_faults()
    await stack.sandbox.reset_stats()

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Adapter]:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "metrics_port": -1,
            "shutdown_grace_seconds": 0.5,
            "redis_url": stack.redis_url,
            "base_url": stack.sandbox.pds_base_url,
            "token_service_addr": stack.token_service_addr,
            "end_user_org_ods": "Y12345",
            # Fast tests: quick retries, a generous rate limit (its own tests are in common).
            "retry_base_delay_seconds": 0.01,
            "retry_max_delay_seconds": 0.05,
            "retry_after_cap_seconds": 1.0,
            "rate_limit_per_second": 500.0,
            "rate_limit_burst": 50,
            "deadline_seconds": 5.0,
        }
        values.update(overrides)
        settings = Settings(**values)
        app = create_app(settings)
        app.readiness_interval_seconds = 0.1
        async with _serve_grpc(app):
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.bound_port}")
            try:
                yield Adapter(
                    app, settings, channel, pds_adapter_pb2_grpc.PdsAdapterServiceStub(channel)
                )
            finally:
                await channel.close()

    try:
        yield factory
    finally:
        await stack.sandbox.clear_faults()


@pytest_asyncio.fixture(loop_scope="module")
async def adapter(start_adapter: AdapterFactory) -> AsyncIterator[Adapter]:
    """An adapter with the default test settings."""
    async with start_adapter() as running:
        yield running


@pytest.fixture
def sandbox(stack: Stack) -> Sandbox:
    return stack.sandbox
