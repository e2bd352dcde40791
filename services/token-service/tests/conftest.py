"""token-service test kit: a real redis-server, the service on real sockets, an OAuth stub.

The OAuth stub (a FastAPI app served by uvicorn on a free port) behaves like the NHS token endpoint
of nhs-apis.md §2: it fetches our JWKS URL at token time, verifies the RS512 signature with
jwcrypto, checks the claims, counts requests, records the assertions and can be told to answer
with any status and body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from jwcrypto import jwk, jws

from token_service.app import TokenServiceRuntime, build_app
from token_service.config import Settings
from token_service.keys import generate_private_key, private_key_pem
from xcagw.token.v1 import token_service_pb2_grpc
from xcagw_common.grpc_client import check_health
from xcagw_common.grpc_server import GrpcApp, serve
from xcagw_common.testing import free_port
from xcagw_common.testing_container import TestRedis, redis_for_tests

API_KEY = "test-api-key-0123456789"


async def wait_until(predicate: Any, limit_seconds: float = 20.0) -> None:
    """Poll `predicate` (sync or async) until it is true; fail after `limit_seconds`."""
    deadline = time.monotonic() + limit_seconds
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {limit_seconds}s")
        await asyncio.sleep(0.02)


@pytest.fixture
def eventually() -> Any:
    """`await eventually(predicate)`: poll a condition (no timing assertions)."""
    return wait_until


class FakeClock:
    """Real time plus an offset the test moves forward (shared by service and stub)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class OAuthStub:
    """A fake NHS OAuth token endpoint (nhs-apis.md §2.1-2.3)."""

    api_key: str
    clock: FakeClock
    jwks_url: str = ""
    token_url: str = ""
    requests: int = 0
    assertions: list[str] = field(default_factory=list)
    seen_jti: set[str] = field(default_factory=set)
    respond_with: tuple[int, Any] | None = None
    delay_seconds: float = 0.0
    expires_in: Any = "599"
    issued: list[str] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/oauth2/token")
        async def token(request: Request) -> Response:
            self.requests += 1
            form = await request.form()
            assertion = str(form.get("client_assertion") or "")
            self.assertions.append(assertion)
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            if self.respond_with is not None:
                status, body = self.respond_with
                if isinstance(body, str):
                    return Response(body, status_code=status, media_type="text/html")
                # "{assertion}" in a canned body echoes what we received (leak tests).
                echoed = json.dumps(body).replace("{assertion}", assertion)
                return JSONResponse(json.loads(echoed), status_code=status)
            return await self._verify(form)

        @app.get("/_admin/stats")
        async def stats() -> dict[str, int]:
            return {"token_requests": self.requests}

        return app

    @staticmethod
    def _error(status: int, description: str, error: str = "invalid_request") -> JSONResponse:
        body = {"error": error, "error_description": description, "message_id": uuid.uuid4().hex}
        return JSONResponse(body, status_code=status)

    async def _verify(self, form: Any) -> Response:
        if form.get("grant_type") != "client_credentials":
            return self._error(400, "grant_type is invalid", "unsupported_grant_type")
        if form.get("client_assertion_type") != (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            return self._error(400, "Missing or invalid client_assertion_type")
        assertion = form.get("client_assertion")
        if not assertion:
            return self._error(400, "Missing client_assertion")
        token = jws.JWS()
        try:
            token.deserialize(str(assertion))
        except Exception:
            return self._error(400, "Malformed JWT in client_assertion")
        header = token.jose_header
        if header.get("alg") != "RS512":
            return self._error(400, "Invalid 'alg' header in JWT - unsupported JWT algorithm")
        if header.get("typ") != "JWT":
            return self._error(400, "Invalid 'typ' header in JWT - must be 'JWT'")
        if not header.get("kid"):
            return self._error(400, "Missing 'kid' header in JWT")
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                fetched = await client.get(self.jwks_url)
            keyset = jwk.JWKSet.from_json(fetched.text)
        except Exception:
            return self._error(
                403,
                "The JWKS endpoint, for your client_assertion can't be reached",
                "public_key error",
            )
        if keyset.get_key(header["kid"]) is None:
            return self._error(401, "Invalid 'kid' header in JWT - no matching public key")
        try:
            token.verify(keyset)
        except Exception:
            return self._error(401, "JWT signature verification failed", "public_key error")
        claims = json.loads(token.payload)
        now = self.clock()
        if claims.get("iss") != claims.get("sub") or not claims.get("iss"):
            return self._error(400, "Missing or non-matching iss/sub claims in JWT")
        if claims["iss"] != self.api_key:
            return self._error(401, "Invalid iss/sub claims in JWT")
        if claims.get("aud") != self.token_url:
            return self._error(401, "Missing or invalid aud claim in JWT")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            return self._error(400, "Missing jti claim in JWT")
        if jti in self.seen_jti:
            return self._error(400, "Non-unique jti claim in JWT")
        self.seen_jti.add(jti)
        exp = claims.get("exp")
        if not isinstance(exp, int):
            return self._error(400, "Failed to decode JWT")
        if exp <= now:
            return self._error(400, "Invalid exp claim in JWT - JWT has expired")
        if exp > now + 300 + 5:
            return self._error(400, "Invalid exp claim in JWT - more than 5 minutes in future")
        access_token = f"stub-{uuid.uuid4().hex}"
        self.issued.append(access_token)
        return JSONResponse(
            {
                "access_token": access_token,
                "expires_in": self.expires_in,
                "token_type": "Bearer",
                "issued_at": str(int(now * 1000)),
            }
        )


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def run_uvicorn(app_for_port: Callable[[int], Any]) -> AsyncIterator[int]:
    """Serve the ASGI app built for its port on a free 127.0.0.1 port during the block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(app_for_port(port), log_config=None, access_log=False, lifespan="off")
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await wait_until(lambda: server.started)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[TestRedis]:
    with redis_for_tests() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: TestRedis) -> str:
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def oauth_stub(clock: FakeClock) -> AsyncIterator[OAuthStub]:
    stub = OAuthStub(api_key=API_KEY, clock=clock)
    async with run_uvicorn(lambda _port: stub.app()) as port:
        stub.token_url = f"http://127.0.0.1:{port}/oauth2/token"
        yield stub


@dataclass
class RunningService:
    app: GrpcApp
    runtime: TokenServiceRuntime
    channel: grpc.aio.Channel
    stub: token_service_pb2_grpc.TokenServiceStub
    task: asyncio.Task[None]
    stop: asyncio.Event

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.app.bound_port}"

    @property
    def jwks_url(self) -> str:
        return self.runtime.jwks_url


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": -1,
        "jwks_http_port": 0,
        "shutdown_grace_seconds": 0.5,
        "auto_generate_key": True,
        # 2048-bit keys keep the suite fast; the CLI test covers the 4096-bit default.
        "key_bits": 2048,
        "api_key": API_KEY,
        "gpc_issuer": "https://xcagw.test.example/",
        "gpc_consumer_asid": "200000000359",
        "gpc_default_ods_code": "RRK",
        "gpc_default_organisation_name": "Default Test Hospital",
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def start_service(settings: Settings, clock: FakeClock) -> AsyncIterator[RunningService]:
    """Run the service with xcagw_common.grpc_server.serve as a task until the block ends."""
    app, runtime = build_app(settings, clock=clock)
    app.readiness_interval_seconds = 0.1
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, stop_event=stop))
    deadline = time.monotonic() + 20
    while not app.bound_port or runtime.jwks_server is not None and runtime.jwks_port <= 0:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise TimeoutError("token-service did not start")
        await asyncio.sleep(0.02)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.bound_port}")
    while not await check_health(channel):
        if time.monotonic() > deadline:
            raise TimeoutError("token-service never became SERVING")
        await asyncio.sleep(0.05)
    running = RunningService(
        app, runtime, channel, token_service_pb2_grpc.TokenServiceStub(channel), task, stop
    )
    try:
        yield running
    finally:
        await channel.close(None)
        stop.set()
        await asyncio.wait_for(task, timeout=15)


def seeded_keys_dir(tmp_path: Path, pem: bytes) -> str:
    """tmp_path/keys holding the session's seed key as kid "seed-1"."""
    seeded = tmp_path / "keys" / "seed-1.pem"
    if not seeded.exists():
        seeded.parent.mkdir(parents=True, exist_ok=True)
        seeded.write_bytes(pem)
    return str(seeded.parent)


@pytest.fixture(scope="session")
def seed_key_pem() -> bytes:
    """One RSA key for the whole session, so most tests skip key generation."""
    return private_key_pem(generate_private_key(2048))


@pytest.fixture
def settings_for(redis_url: str, tmp_path: Path, oauth_stub: OAuthStub, seed_key_pem: bytes) -> Any:
    """`settings_for(**overrides)`: settings wired to this test's Redis, keys_dir and stub.

    The default keys_dir starts with the session's seed key (kid "seed-1")."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "keys_dir": seeded_keys_dir(tmp_path, seed_key_pem),
            "token_url": oauth_stub.token_url,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
def service_factory(clock: FakeClock, oauth_stub: OAuthStub) -> Any:
    """`async with service_factory(settings) as svc`: one more replica; the stub fetches the
    JWKS of the replica started last (replicas share the key state, so any one will do)."""

    @contextlib.asynccontextmanager
    async def factory(settings: Settings) -> AsyncIterator[RunningService]:
        async with start_service(settings, clock) as running:
            oauth_stub.jwks_url = running.jwks_url
            yield running

    return factory


@pytest.fixture
async def service(settings_for: Any, service_factory: Any) -> AsyncIterator[RunningService]:
    async with service_factory(settings_for()) as running:
        yield running


async def _fetch_jwks(url: str) -> tuple[jwk.JWKSet, httpx.Response]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(url)
    response.raise_for_status()
    return jwk.JWKSet.from_json(response.text), response


@pytest.fixture
def fetch_jwks() -> Any:
    """`await fetch_jwks(url)` -> (JWKSet, httpx.Response) over real HTTP."""
    return _fetch_jwks


@dataclass
class Sandbox:
    """The NHS sandbox of xcagw_devstack (OAuth part) on a real socket.

    It checks assertions against real time, so tests that move the fake clock (rotation) use the
    OAuth stub above instead.
    """

    base_url: str
    jwks_port: int  # reserved for the service's JWKS listener (the sandbox's jwks_url)

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth2/token"

    async def oauth_requests(self) -> int:
        async with httpx.AsyncClient(timeout=5) as client:
            stats = (await client.get(f"{self.base_url}/_admin/stats")).json()
        return int(stats["requests"]["oauth"])

    async def set_oauth_fault(self, **fault: Any) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            answer = await client.put(f"{self.base_url}/_admin/faults", json={"oauth": fault})
        answer.raise_for_status()


@pytest.fixture
def sandbox_factory() -> Any:
    """`async with sandbox_factory(**SandboxSettings overrides) as sandbox` (real sockets).

    By default the app's JWKS URL is the service's listener on `sandbox.jwks_port`, as the NHS
    developer portal's `jwks_resource_url` would be.
    """
    app_module = pytest.importorskip(
        "xcagw_devstack.sandbox.app", reason="the NHS sandbox (xcagw_devstack) is not installed"
    )
    config = pytest.importorskip("xcagw_devstack.sandbox.config")

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Sandbox]:
        jwks_port = free_port()
        values: dict[str, Any] = {
            "api_key": API_KEY,
            "jwks_url": f"http://127.0.0.1:{jwks_port}/.well-known/jwks.json",
            "jwks_file": "",
            "faults_file": "",
        }
        values.update(overrides)

        def build(port: int) -> Any:
            values.setdefault("public_url", f"http://127.0.0.1:{port}")
            return app_module.create_app(config.SandboxSettings(**values))

        async with run_uvicorn(build) as port:
            yield Sandbox(base_url=f"http://127.0.0.1:{port}", jwks_port=jwks_port)

    return factory


@pytest.fixture
def sandbox_settings_for(redis_url: str, tmp_path: Path, seed_key_pem: bytes) -> Any:
    """`sandbox_settings_for(sandbox, **overrides)`: service settings for one sandbox."""

    def build(sandbox: Sandbox, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "keys_dir": seeded_keys_dir(tmp_path, seed_key_pem),
            "token_url": sandbox.token_url,
            "jwks_http_port": sandbox.jwks_port,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
def run_service(clock: FakeClock) -> Any:
    """`async with run_service(settings) as svc`: a replica without the OAuth stub."""

    def factory(settings: Settings) -> Any:
        return start_service(settings, clock)

    return factory
