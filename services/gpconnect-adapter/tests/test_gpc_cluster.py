"""The SDS endpoint cache on a real three-master Redis Cluster (issue #11): one key per practice,
served across a slot move (MOVED)."""

from __future__ import annotations

import pytest

from gpconnect_adapter.sds import EndpointCache, ProviderEndpoint
from xcagw_common.redis import create_redis, ping
from xcagw_common.testing import RedisCluster, cluster_or_skip

cluster = pytest.fixture(scope="session")(cluster_or_skip)


async def test_endpoint_cache_put_get_invalidate_across_a_slot_move(
    cluster: RedisCluster,
) -> None:
    cluster.flushall()
    redis = create_redis(cluster.url)
    try:
        assert await ping(redis)
        cache = EndpointCache(redis, ttl_seconds=60)
        endpoint = ProviderEndpoint("Y12345", "918999198738", "Y12345-9000001", "https://gp.test/")
        await cache.put(endpoint)
        old, new = cluster.rehome(EndpointCache.key("Y12345"))
        moved = cluster.moved_replies(old)
        assert await cache.get("Y12345") == endpoint
        assert cluster.moved_replies(old) == moved + 1
        assert 0 < cluster.command(new, "TTL", EndpointCache.key("Y12345")) <= 60
        await cache.invalidate("Y12345")
        assert cluster.command(new, "EXISTS", EndpointCache.key("Y12345")) == 0
        assert await cache.get("Y12345") is None
    finally:
        await redis.aclose()
