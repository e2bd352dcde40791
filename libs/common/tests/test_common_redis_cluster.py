"""Redis Cluster support (issue #11): URL parsing, the client, readiness and the GCRA script.

Against a real three-master cluster (xcagw_common.testing.RedisCluster), with slots moved under
the client so that commands and scripts meet MOVED redirections.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as ClusterClient
from redis.exceptions import RedisClusterException

from xcagw_common.grpc_server import ping_redis
from xcagw_common.redis import (
    RedisClient,
    create_redis,
    is_cluster_url,
    parse_cluster_url,
    ping,
)
from xcagw_common.resilience import RateLimitExceededError, RedisRateLimiter
from xcagw_common.testing import RedisCluster, cluster_or_skip

cluster = pytest.fixture(scope="session")(cluster_or_skip)


@pytest.fixture
async def client(cluster: RedisCluster) -> AsyncIterator[RedisClient]:
    cluster.flushall()
    redis = create_redis(cluster.url)
    yield redis
    await redis.aclose()


# ---- URLs ---------------------------------------------------------------------------------------
def test_cluster_urls_are_recognised() -> None:
    assert is_cluster_url("redis+cluster://a:7000")
    assert is_cluster_url("REDISS+CLUSTER://a:7000")
    assert not is_cluster_url("redis://a:6379/0")
    assert not is_cluster_url("rediss://a:6379/0")


def test_parse_cluster_url_keeps_credentials_options_and_every_node() -> None:
    first, nodes = parse_cluster_url(
        "rediss+cluster://user:p%40ss@r-0:7000,r-1:7001,[::1]:7002,r-3?ssl_cert_reqs=none"
    )
    assert first == "rediss://user:p%40ss@r-0:7000/0?ssl_cert_reqs=none"
    assert nodes == [("r-0", 7000), ("r-1", 7001), ("::1", 7002), ("r-3", 6379)]


def test_parse_cluster_url_first_node_ipv6_and_database_zero() -> None:
    first, nodes = parse_cluster_url("redis+cluster://[::1]:7000/0")
    assert first == "redis://[::1]:7000/0"
    assert nodes == [("::1", 7000)]


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://a:7000/1",  # cluster mode has database 0 only
        "redis+cluster://",
        "redis+cluster://user@,",
        "redis://a:6379/0",
    ],
)
def test_parse_cluster_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        parse_cluster_url(url)


async def test_create_redis_picks_the_client_from_the_scheme() -> None:
    single = create_redis("redis://127.0.0.1:1/0")
    many = create_redis("redis+cluster://127.0.0.1:1,127.0.0.1:2")
    try:
        assert isinstance(single, Redis)
        assert isinstance(many, ClusterClient)
        assert [(n.host, n.port) for n in many.startup_nodes] == [
            ("127.0.0.1", 2),
            ("127.0.0.1", 1),
        ]
    finally:
        await single.aclose()
        await many.aclose()


# ---- Against the cluster ------------------------------------------------------------------------
async def test_commands_follow_moved_after_a_slot_moves(
    cluster: RedisCluster, client: RedisClient
) -> None:
    assert isinstance(client, ClusterClient)
    await client.set("xcagw:test:moved", "1")
    old, new = cluster.rehome("xcagw:test:moved")
    before = cluster.moved_replies(old)
    assert await client.get("xcagw:test:moved") == b"1"
    assert cluster.moved_replies(old) == before + 1
    # The client learnt the new owner: the next command goes straight there.
    assert await client.get("xcagw:test:moved") == b"1"
    assert cluster.moved_replies(old) == before + 1
    assert cluster.command(new, "GET", "xcagw:test:moved") == "1"


async def test_cross_slot_transactions_are_refused_and_tagged_ones_run(
    cluster: RedisCluster, client: RedisClient
) -> None:
    """Why keys used together need one hash tag: the cluster client refuses anything else."""
    a, b = "xcagw:test:{one}:a", "xcagw:test:{one}:b"
    assert cluster.keyslot(a) == cluster.keyslot(b)
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(a, "1")
        pipe.set(b, "2")
        assert await pipe.execute() == [True, True]
    assert cluster.keyslot("xcagw:test:a") != cluster.keyslot("xcagw:test:b")
    with pytest.raises(RedisClusterException):
        async with client.pipeline(transaction=True) as pipe:
            pipe.set("xcagw:test:a", "1")
            pipe.set("xcagw:test:b", "2")
            await pipe.execute()


async def test_readiness_ping_reaches_every_master(cluster: RedisCluster) -> None:
    redis = create_redis(cluster.url)
    try:
        await ping_redis(redis)  # the gRPC services' readiness helper works against a cluster
        before = {
            port: cluster.command(port, "INFO", "commandstats").get("cmdstat_ping", {})
            for port in cluster.ports
        }
        assert await ping(redis)
        for port in cluster.ports:
            calls = cluster.command(port, "INFO", "commandstats")["cmdstat_ping"]["calls"]
            assert calls > int(before[port].get("calls", 0)), f"no PING reached {port}"
    finally:
        await redis.aclose()


async def test_readiness_fails_fast_when_one_master_is_down() -> None:
    try:
        outage = RedisCluster().start()
    except RuntimeError as exc:
        pytest.skip(f"no local Redis Cluster: {exc}")
    redis = create_redis(outage.url, timeout=0.5)
    try:
        assert await ping(redis)
        # A master other than the client's default node: a plain cluster PING would still pass.
        assert isinstance(redis, ClusterClient)
        default = redis.get_default_node()
        outage.kill(next(p for p in outage.ports if default is None or p != default.port))
        started = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - any Redis error means "not ready"
            await ping(redis)
        assert time.monotonic() - started < 5.0
    finally:
        await redis.aclose()
        outage.stop()


async def test_gcra_script_is_cluster_safe_and_survives_a_slot_move(
    cluster: RedisCluster, client: RedisClient
) -> None:
    """One key per limiter; EVALSHA on the slot's new owner reloads the script (NOSCRIPT)."""
    limiter = RedisRateLimiter(client, "cluster-test", rate=1.0, redis_retry_interval=60.0)
    assert await limiter.reserve(max_wait=0.0) == 0.0
    assert await client.exists(limiter.key) == 1  # decided by Redis, not the local fallback
    old, new = cluster.rehome(limiter.key)
    before = cluster.moved_replies(old)
    with pytest.raises(RateLimitExceededError):
        await limiter.reserve(max_wait=0.0)  # the state moved with the slot
    assert cluster.moved_replies(old) == before + 1
    wait = await limiter.reserve(max_wait=5.0)
    assert 0.0 < wait <= 1.0  # the slot after the first one, reserved on the new owner
    assert cluster.command(new, "EXISTS", limiter.key) == 1
    assert limiter._redis_down_until < time.monotonic()  # never fell back to in-process
