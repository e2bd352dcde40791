"""Redis client construction with fast, predictable failure."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff


def create_redis(url: str, *, timeout: float = 1.0, retries: int = 1) -> Redis:
    """A redis.asyncio client that fails within about `timeout` when Redis is down.

    redis-py 8 retries 3 times with backoff by default: a killed server then takes seconds to
    surface and a stopped one far longer, which would hold requests and readiness hostage.
    """
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries),
        health_check_interval=30,
    )
