"""Wires gpconnect-adapter together: Redis, SDS and SSP HTTP clients, dependency channels."""

from __future__ import annotations

from typing import Any

from gpconnect_adapter.config import Settings
from gpconnect_adapter.gpconnect import GpConnectClient
from gpconnect_adapter.http import create_sds_client, create_ssp_client
from gpconnect_adapter.sds import EndpointCache, SdsClient
from gpconnect_adapter.servicer import GpConnectAdapterServicer
from xcagw.gpconnect.v1 import gpconnect_adapter_pb2_grpc
from xcagw.pds.v1 import pds_adapter_pb2_grpc
from xcagw.token.v1 import token_service_pb2_grpc
from xcagw_common.grpc_client import check_health, create_channel
from xcagw_common.grpc_server import GrpcApp, ServicerBinding, ping_redis
from xcagw_common.redis import create_redis
from xcagw_common.resilience import (
    CircuitBreaker,
    CircuitBreakerRegistry,
    is_transient_http_error,
)

SERVICE_NAME = "gpconnect-adapter"
FULL_NAME = "xcagw.gpconnect.v1.GpConnectAdapterService"


class ConfigurationError(ValueError):
    """A setting the adapter cannot run without is missing."""


def check_settings(settings: Settings) -> None:
    """Fail at start, with the env variable names, rather than on the first request."""
    missing = [
        env
        for env, value in (
            ("GPCONNECT_ADAPTER_SDS_BASE_URL", settings.sds_base_url),
            ("GPCONNECT_ADAPTER_CONSUMER_ASID", settings.consumer_asid),
            ("PDS_ADAPTER_ADDR", settings.pds_adapter_addr),
            ("TOKEN_SERVICE_ADDR", settings.token_service_addr),
        )
        if not value
    ]
    if missing:
        raise ConfigurationError("missing settings: " + ", ".join(missing))
    if bool(settings.ssp_client_cert_file) != bool(settings.ssp_client_key_file):
        raise ConfigurationError(
            "GPCONNECT_ADAPTER_SSP_CLIENT_CERT_FILE and _SSP_CLIENT_KEY_FILE go together"
        )


def create_app(settings: Settings, *, redis: Any = None) -> GrpcApp:
    """The service wired from settings; call inside the running event loop.

    Clients are created here (never at import time) and closed by the shutdown hook.
    """
    check_settings(settings)
    redis_client = redis
    if redis_client is None:
        redis_client = create_redis(settings.redis_url.get_secret_value())
    sds_http = create_sds_client(settings)
    ssp_http = create_ssp_client(settings)
    tls = {
        "ca_file": settings.client_tls_ca_file,
        "cert_file": settings.client_tls_cert_file,
        "key_file": settings.client_tls_key_file,
    }
    pds_channel = create_channel(settings.pds_adapter_addr, **tls)
    token_channel = create_channel(settings.token_service_addr, **tls)
    sds = SdsClient(
        settings,
        sds_http,
        EndpointCache(redis_client, settings.endpoint_cache_ttl_seconds),
        CircuitBreaker(
            "sds",
            failure_threshold=settings.breaker_failure_threshold,
            reset_timeout=settings.breaker_reset_seconds,
            is_failure=is_transient_http_error,
        ),
    )
    gpconnect = GpConnectClient(
        settings,
        ssp_http,
        CircuitBreakerRegistry(
            failure_threshold=settings.breaker_failure_threshold,
            reset_timeout=settings.breaker_reset_seconds,
            is_failure=is_transient_http_error,
        ),
    )
    servicer = GpConnectAdapterServicer(
        settings,
        sds,
        gpconnect,
        pds_adapter_pb2_grpc.PdsAdapterServiceStub(pds_channel),
        token_service_pb2_grpc.TokenServiceStub(token_channel),
    )

    async def redis_ready() -> None:
        await ping_redis(redis_client)

    async def pds_adapter_ready() -> None:
        if not await check_health(pds_channel):
            raise ConnectionError("pds-adapter is not SERVING")

    async def token_service_ready() -> None:
        if not await check_health(token_channel):
            raise ConnectionError("token-service is not SERVING")

    async def close() -> None:
        await sds_http.aclose()
        await ssp_http.aclose()
        await pds_channel.close(grace=None)
        await token_channel.close(grace=None)
        if redis is None:
            await redis_client.aclose()

    return GrpcApp(
        name=SERVICE_NAME,
        settings=settings,
        bindings=[
            ServicerBinding(
                gpconnect_adapter_pb2_grpc.add_GpConnectAdapterServiceServicer_to_server,
                servicer,
                FULL_NAME,
            )
        ],
        readiness_checks=[redis_ready, pds_adapter_ready, token_service_ready],
        on_shutdown=[close],
    )
