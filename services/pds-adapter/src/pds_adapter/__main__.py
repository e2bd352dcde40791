"""pds-adapter entry point: `pds-adapter` (console script) or `python -m pds_adapter`."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from pds_adapter.cache import RATE_LIMIT_NAME, PatientCache
from pds_adapter.config import Settings
from pds_adapter.fhir_client import UPSTREAM, PdsClient
from pds_adapter.servicer import PdsAdapterServicer
from pds_adapter.tokens import TokenProvider
from xcagw.pds.v1 import pds_adapter_pb2_grpc
from xcagw.token.v1 import token_service_pb2_grpc
from xcagw_common import telemetry
from xcagw_common.grpc_client import check_health, create_channel
from xcagw_common.grpc_server import GrpcApp, ServicerBinding, ping_redis, serve
from xcagw_common.logging import setup_logging
from xcagw_common.redis import create_redis
from xcagw_common.resilience import (
    CircuitBreaker,
    RedisRateLimiter,
    RetryPolicy,
    is_transient_http_error,
)

SERVICE_NAME = "pds-adapter"
FULL_NAME = "xcagw.pds.v1.PdsAdapterService"


def create_app(settings: Settings, *, http_transport: Any = None) -> GrpcApp:
    """The service wired from settings; call inside the running event loop.

    Clients are created here (not at import time) and closed by the app's shutdown hooks.
    """
    redis = create_redis(settings.redis_url.get_secret_value())
    channel = create_channel(
        settings.token_service_addr,
        ca_file=settings.token_service_ca_file,
        cert_file=settings.token_service_cert_file,
        key_file=settings.token_service_key_file,
    )
    tokens = TokenProvider(
        token_service_pb2_grpc.TokenServiceStub(channel),
        timeout_seconds=settings.token_timeout_seconds,
        refresh_skew_seconds=settings.token_refresh_skew_seconds,
    )
    client = PdsClient(
        base_url=settings.base_url,
        tokens=tokens,
        breaker=CircuitBreaker(
            UPSTREAM,
            failure_threshold=settings.breaker_failure_threshold,
            reset_timeout=settings.breaker_reset_timeout_seconds,
            is_failure=is_transient_http_error,
        ),
        limiter=RedisRateLimiter(
            redis,
            RATE_LIMIT_NAME,
            rate=settings.rate_limit_per_second,
            burst=settings.rate_limit_burst,
        ),
        retry_policy=RetryPolicy(
            max_attempts=settings.retry_max_attempts,
            base_delay=settings.retry_base_delay_seconds,
            max_delay=settings.retry_max_delay_seconds,
            retry_after_cap=settings.retry_after_cap_seconds,
        ),
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.read_timeout_seconds,
        rate_limit_max_wait=settings.rate_limit_max_wait_seconds,
        end_user_org_ods=settings.end_user_org_ods,
        end_user_org_ods_map=settings.end_user_org_ods_map,
        max_connections=settings.http_max_connections,
        verify=settings.ca_file or True,
        transport=http_transport,
    )
    servicer = PdsAdapterServicer(
        client,
        PatientCache(redis, settings.cache_ttl_seconds),
        deadline_seconds=settings.deadline_seconds,
        search_max_results=settings.search_max_results,
    )

    async def redis_ready() -> None:
        await ping_redis(redis)

    async def token_service_ready() -> None:
        if not await check_health(channel):
            raise ConnectionError("token-service is not SERVING")

    async def close() -> None:
        await client.aclose()
        await channel.close(grace=None)
        await redis.aclose()

    return GrpcApp(
        name=SERVICE_NAME,
        settings=settings,
        bindings=[
            ServicerBinding(
                pds_adapter_pb2_grpc.add_PdsAdapterServiceServicer_to_server, servicer, FULL_NAME
            )
        ],
        readiness_checks=[redis_ready, token_service_ready],
        on_shutdown=[close],
    )


async def run(settings: Settings) -> None:
    await serve(create_app(settings))


def main() -> None:
    """Console script: settings from the environment, logging, telemetry, serve until SIGTERM."""
    try:
        settings = Settings()  # base_url (required) comes from the environment
    except (ValidationError, SettingsError) as exc:
        # SettingsError: a JSON setting (e.g. END_USER_ORG_ODS_MAP) that is not JSON at all.
        sys.stderr.write(f"pds-adapter: invalid settings (env PDS_ADAPTER_*):\n{exc}\n")
        raise SystemExit(2) from None
    setup_logging(SERVICE_NAME, settings.log_level)
    provider = telemetry.setup(SERVICE_NAME)
    try:
        asyncio.run(run(settings))
    finally:
        telemetry.shutdown(provider)


if __name__ == "__main__":
    main()
