"""Wires token-service together: Redis, keys, the NHS token provider, gRPC and the JWKS listener."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis.exceptions import RedisError

from token_service.config import Settings
from token_service.jwks_http import JwksHttpServer, create_jwks_app
from token_service.oauth import NhsTokenProvider
from token_service.rotation import STARTUP_LOCK_WAIT_SECONDS, Clock, KeyManagementError, KeyManager
from token_service.servicer import SERVICE_NAME, TokenServicer
from xcagw.token.v1 import token_service_pb2_grpc
from xcagw_common.grpc_server import GrpcApp, ServicerBinding, ping_redis
from xcagw_common.redis import create_redis

log = logging.getLogger(__name__)


@dataclass
class TokenServiceRuntime:
    """The parts of one running token-service (tests read `jwks_port`, `keys`, `tokens`)."""

    settings: Settings
    clock: Clock
    keys_dir: Path
    redis: object
    http: httpx.AsyncClient
    keys: KeyManager
    tokens: NhsTokenProvider
    servicer: TokenServicer
    jwks_server: JwksHttpServer | None
    jwks_port: int = -1
    _temp_dir: str | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _schedule: asyncio.Task[None] | None = None

    @property
    def jwks_url(self) -> str:
        return f"http://{self.settings.host}:{self.jwks_port}/.well-known/jwks.json"

    async def start(self) -> None:
        try:
            await self.keys.tick(wait_seconds=STARTUP_LOCK_WAIT_SECONDS)
        except (RedisError, KeyManagementError, OSError) as exc:
            # Not ready yet (readiness says so); the schedule retries every rotation_check_seconds.
            log.warning("key bootstrap failed: %s", type(exc).__name__)
        if self.jwks_server is not None:
            self.jwks_port = await self.jwks_server.start()
        self._schedule = asyncio.create_task(self.keys.run_schedule(self._stop))

    async def stop(self) -> None:
        self._stop.set()
        if self._schedule is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._schedule
        if self.jwks_server is not None:
            await self.jwks_server.stop()
        await self.http.aclose()
        close = getattr(self.redis, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    async def check_redis(self) -> None:
        await _uncancellable(ping_redis(self.redis))

    async def check_signing_key(self) -> None:
        await _uncancellable(self.keys.check_ready())


async def _uncancellable(check: Coroutine[Any, Any, None]) -> None:
    """Run a readiness check so that cancelling the caller does not cancel it.

    A redis-py 8.1 command cancelled mid-send (it uses asyncio.wait_for internally, which can
    mishandle cancellation on Python 3.11) can keep the cancelled task waiting for many seconds;
    that used to delay shutdown. The check itself is short and bounded by the socket timeout.
    """
    task = asyncio.ensure_future(check)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    await asyncio.shield(task)


def build_app(settings: Settings, clock: Clock = time.time) -> tuple[GrpcApp, TokenServiceRuntime]:
    """Build (no I/O yet) the GrpcApp for `xcagw_common.grpc_server.serve` and its runtime."""
    temp_dir = None
    if settings.keys_dir:
        keys_dir = Path(settings.keys_dir)
    else:
        # Development only (the settings allow it with auto_generate_key): a per-process key
        # that no other replica can share.
        temp_dir = tempfile.mkdtemp(prefix="xcagw-token-keys-")
        keys_dir = Path(temp_dir)
        log.warning("keys_dir not set: using a temporary directory (single replica only)")
    redis = create_redis(settings.redis_url.get_secret_value())
    http = httpx.AsyncClient(timeout=settings.oauth_timeout_seconds, follow_redirects=False)
    keys = KeyManager(settings, redis, keys_dir, clock)
    tokens = NhsTokenProvider(settings, redis, keys, http, clock)
    servicer = TokenServicer(settings, keys, tokens, clock)
    jwks_server = None
    if settings.jwks_http_port >= 0:
        jwks_server = JwksHttpServer(
            create_jwks_app(keys, settings.jwks_max_age_seconds),
            settings.host,
            settings.jwks_http_port,
        )
    runtime = TokenServiceRuntime(
        settings=settings,
        clock=clock,
        keys_dir=keys_dir,
        redis=redis,
        http=http,
        keys=keys,
        tokens=tokens,
        servicer=servicer,
        jwks_server=jwks_server,
        _temp_dir=temp_dir,
    )
    app = GrpcApp(
        name="token-service",
        settings=settings,
        bindings=[
            ServicerBinding(
                token_service_pb2_grpc.add_TokenServiceServicer_to_server, servicer, SERVICE_NAME
            )
        ],
        readiness_checks=[runtime.check_redis, runtime.check_signing_key],
        on_startup=[runtime.start],
        on_shutdown=[runtime.stop],
    )
    return app, runtime
