"""gRPC server bootstrap: health with real readiness, reflection, metrics, graceful shutdown.

The standard health service (grpc.health.v1) answers two questions under different names:

- readiness, `""` and every bound service's full name: SERVING only while every readiness check
  passes (Redis, keys, the services it calls...). Kubernetes' readinessProbe and the compose
  healthchecks ask this one, so a dependency outage takes the pod out of rotation.
- liveness, `LIVENESS_SERVICE` (`"liveness"`): SERVING from the moment the server runs until
  graceful shutdown starts, whatever the dependencies do. It is answered on the event loop, so a
  stuck loop fails it. Kubernetes' livenessProbe and startupProbe ask this one: restarting a pod
  because Redis is down cures nothing, loses in-process state (a still-valid OAuth token) and,
  while the outage lasts, ends in CrashLoopBackOff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AioHealthServicer
from grpc_reflection.v1alpha import reflection

from xcagw_common.metrics import MetricsInterceptor, observe_certificate, start_metrics_server
from xcagw_common.redis import ping
from xcagw_common.settings import BaseServiceSettings

log = logging.getLogger(__name__)

LIVENESS_SERVICE = "liveness"
"""Health service name of the liveness status (`grpc: {port, service: liveness}` probes)."""

ReadinessCheck = Callable[[], Awaitable[None]]
"""Raises when a dependency is not ready (Redis down, keys not loaded...)."""


@dataclass
class ServicerBinding:
    """One servicer and the generated `add_*Servicer_to_server` function it plugs into."""

    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    full_name: str  # e.g. "xcagw.pds.v1.PdsAdapterService" (reflection + health)


@dataclass
class GrpcApp:
    """Everything `serve` needs to run a service."""

    name: str
    settings: BaseServiceSettings
    bindings: Sequence[ServicerBinding]
    readiness_checks: Sequence[ReadinessCheck] = ()
    on_startup: Sequence[Callable[[], Awaitable[None]]] = ()
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = ()
    readiness_interval_seconds: float = 2.0
    interceptors: Sequence[Any] = ()
    bound_port: int = field(default=0, init=False)
    metrics_port: int = field(default=0, init=False)


def server_credentials(settings: BaseServiceSettings) -> grpc.ServerCredentials | None:
    """TLS (and mTLS when a client CA is configured) from PEM files in the settings."""
    if not settings.tls_cert_file:
        return None
    key = Path(settings.tls_key_file).read_bytes()
    cert = Path(settings.tls_cert_file).read_bytes()
    ca = Path(settings.tls_client_ca_file).read_bytes() if settings.tls_client_ca_file else None
    observe_certificate("grpc-server", cert)
    if ca is not None:
        observe_certificate("grpc-client-ca", ca)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


async def _check_ready(app: GrpcApp) -> bool:
    for check in app.readiness_checks:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # lands as the check completes, which would keep this loop alive after SIGTERM.
            async with asyncio.timeout(2.0):
                await check()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            log.warning("readiness check failed: %s", type(exc).__name__)
            return False
    return True


def _readiness_names(app: GrpcApp) -> list[str]:
    """Health names that follow readiness; never `LIVENESS_SERVICE`."""
    return ["", *(b.full_name for b in app.bindings)]


async def _readiness_loop(app: GrpcApp, servicer: AioHealthServicer, stop: asyncio.Event) -> None:
    last: bool | None = None
    while not stop.is_set():
        ready = await _check_ready(app)
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if ready != last:
            log.info("readiness changed: %s", "SERVING" if ready else "NOT_SERVING")
        for name in _readiness_names(app):
            await servicer.set(name, status)
        last = ready
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(app.readiness_interval_seconds):
                await stop.wait()


async def serve(app: GrpcApp, *, stop_event: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or `stop_event`), then NOT_SERVING and a graceful stop."""
    settings = app.settings
    server = grpc.aio.server(interceptors=[MetricsInterceptor(app.name), *app.interceptors])
    for binding in app.bindings:
        binding.add_to_server(binding.servicer, server)
    health_servicer = AioHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in _readiness_names(app):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        [*(b.full_name for b in app.bindings), health.SERVICE_NAME, reflection.SERVICE_NAME],
        server,
    )
    address = f"{settings.host}:{settings.port}"
    creds = server_credentials(settings)
    if creds is not None:
        app.bound_port = server.add_secure_port(address, creds)
    else:
        app.bound_port = server.add_insecure_port(address)
    app.metrics_port = start_metrics_server(settings.metrics_port, settings.host)

    for hook in app.on_startup:
        await hook()
    # Alive from the first answer on (set before start, so no probe ever sees NOT_FOUND); only
    # graceful shutdown turns it NOT_SERVING.
    await health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    await server.start()
    log.info(
        "gRPC server started",
        extra={"ecs": {"server.port": app.bound_port, "labels.metrics_port": app.metrics_port}},
    )
    stop = stop_event or asyncio.Event()
    readiness = asyncio.create_task(_readiness_loop(app, health_servicer, stop))

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        # The loop ends on `stop`; cancel too in case a check is stuck, and never wait forever.
        readiness.cancel()
        await asyncio.wait({readiness}, timeout=3.0)
        # Kubernetes and the launcher see NOT_SERVING first, then in-flight RPCs finish.
        await health_servicer.enter_graceful_shutdown()
        await server.stop(settings.shutdown_grace_seconds)
        for hook in app.on_shutdown:
            with contextlib.suppress(Exception):
                await hook()
        log.info("stopped")


async def ping_redis(client: Any) -> None:
    """Readiness check helper: raises when Redis (every master of a cluster) does not answer."""
    if not await ping(client):
        raise ConnectionError("redis ping failed")
