"""Per-partner / per-transaction rate limits on a real Redis, shared by 'replicas'."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from soap_edge_security_kit import rate_limited_partner

from soap_edge.security.errors import RateLimited
from soap_edge.security.partners import PartnerRegistry, RateLimit
from soap_edge.security.ratelimit import PartnerRateLimiter
from xcagw_common.redis import create_redis
from xcagw_common.testing import RedisServer


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[object]:
    client = create_redis(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


def _count(result: str, transaction: str) -> float:
    value = REGISTRY.get_sample_value(
        "xcagw_partner_requests_total",
        {"partner": "epic", "transaction": transaction, "result": result},
    )
    return value or 0.0


async def test_burst_then_refused_with_retry_after(redis_client: object, tmp_path: Path) -> None:
    partner = rate_limited_partner(tmp_path)
    limiter = PartnerRateLimiter(redis_client)
    before = _count("rate_limited", "ITI-38")
    for _ in range(3):
        await limiter.check(partner, "ITI-38")
    with pytest.raises(RateLimited) as exc:
        await limiter.check(partner, "ITI-38")
    assert 90 < exc.value.retry_after <= 100
    assert exc.value.retry_after_seconds == 100
    assert "retry after 100 second" in exc.value.reason
    assert _count("rate_limited", "ITI-38") == before + 1


async def test_the_quota_is_shared_across_replicas(redis_client: object, tmp_path: Path) -> None:
    partner = rate_limited_partner(tmp_path)
    replica_a = PartnerRateLimiter(redis_client)
    replica_b = PartnerRateLimiter(redis_client)
    await replica_a.check(partner, "ITI-38")
    await replica_b.check(partner, "ITI-38")
    await replica_a.check(partner, "ITI-38")
    with pytest.raises(RateLimited):
        await replica_b.check(partner, "ITI-38")


async def test_transaction_limit_refusal_consumes_nothing_else(
    redis_client: object, tmp_path: Path
) -> None:
    partner = rate_limited_partner(tmp_path)
    limiter = PartnerRateLimiter(redis_client)
    await limiter.check(partner, "ITI-39")  # uses the one ITI-39 slot and one of three overall
    for _ in range(3):
        with pytest.raises(RateLimited):
            await limiter.check(partner, "ITI-39")
    # The refused ITI-39 requests did not use the partner-wide quota: two slots remain.
    await limiter.check(partner, "ITI-38")
    await limiter.check(partner, "ITI-47")
    with pytest.raises(RateLimited):
        await limiter.check(partner, "ITI-38")


async def test_default_limit_applies_to_partners_without_their_own(
    redis_client: object, tmp_path: Path
) -> None:
    partner = PartnerRegistry.from_mapping({"partners": [{"id": "plain"}]}, base_dir=tmp_path).get(
        "plain"
    )
    assert partner is not None
    limiter = PartnerRateLimiter(redis_client, default_limit=RateLimit(per_second=0.01, burst=1))
    await limiter.check(partner, "ITI-38")
    with pytest.raises(RateLimited):
        await limiter.check(partner, "ITI-38")
    unlimited = PartnerRateLimiter(redis_client)
    for _ in range(5):
        await unlimited.check(partner, "ITI-38")


async def test_redis_outage_falls_back_to_an_in_process_limit(tmp_path: Path) -> None:
    server = RedisServer().start()
    client = create_redis(server.url, timeout=0.5)
    try:
        partner = rate_limited_partner(tmp_path)
        limiter = PartnerRateLimiter(client, redis_retry_interval=60)
        server.kill()
        for _ in range(3):
            await limiter.check(partner, "ITI-38")
        with pytest.raises(RateLimited):
            await limiter.check(partner, "ITI-38")
    finally:
        await client.aclose()
        server.stop()
