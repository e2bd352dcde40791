"""`GET /.well-known/jwks.json` over HTTP, in the gRPC server's event loop.

The NHS fetches this URL (the app's `jwks_resource_url`, nhs-apis.md §2.4) when it verifies a
client assertion, so it serves the public keys only, even while Redis is down (last known view).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from token_service.rotation import KeyManager, StateCorruptError, StateUnavailableError

log = logging.getLogger(__name__)

JWKS_PATH = "/.well-known/jwks.json"


def create_jwks_app(keys: KeyManager, max_age_seconds: int) -> FastAPI:
    app = FastAPI(title="token-service JWKS", docs_url=None, redoc_url=None, openapi_url=None)
    cache_control = f"public, max-age={max_age_seconds}"

    @app.get(JWKS_PATH)
    async def jwks() -> Response:
        try:
            view = await keys.view()
        except (StateUnavailableError, StateCorruptError):
            return JSONResponse(
                {"error": "key state unavailable"},
                status_code=503,
                headers={"Cache-Control": "no-store", "Retry-After": "5"},
            )
        if view.active is None:
            return JSONResponse(
                {"error": "no signing key yet"},
                status_code=503,
                headers={"Cache-Control": "no-store", "Retry-After": "5"},
            )
        return Response(
            content=json.dumps(view.jwks()),
            media_type="application/json",
            headers={"Cache-Control": cache_control},
        )

    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: xcagw_common.grpc_server.serve owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class JwksHttpServer:
    """Runs the JWKS app on host:port (0 = a free port) as a task of the current loop."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    async def start(self) -> int:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on sockets it sees as TCP, and
        # without it small replies wait ~40 ms for a delayed ACK (benchmarks/PROFILE.md).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.setblocking(False)
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", server_header=False
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("JWKS HTTP server stopped during startup")
            await asyncio.sleep(0.01)
        log.info("JWKS HTTP server started", extra={"ecs": {"server.port": self.port}})
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout=5)
        if self._socket is not None:
            self._socket.close()
