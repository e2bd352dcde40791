"""token-service on a real three-master Redis Cluster (issue #11).

All keys of one NHS application share the `{<digest>}` hash tag (token_service.config
.app_namespace): the locks live on the same master as the state they guard. The service keeps
serving from its cache, rotating keys and refreshing tokens after that slot moved (MOVED).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from token_service.config import app_namespace
from token_service.redis_lock import RedisLock
from xcagw.common.v1 import common_pb2
from xcagw.token.v1 import token_service_pb2
from xcagw_common.redis import create_redis
from xcagw_common.testing import RedisCluster, cluster_or_skip

cluster = pytest.fixture(scope="session")(cluster_or_skip)


def request(force: bool = False) -> token_service_pb2.GetNhsAccessTokenRequest:
    return token_service_pb2.GetNhsAccessTokenRequest(
        context=common_pb2.RequestContext(correlation_id=str(uuid.uuid4())), force_refresh=force
    )


def service_keys(cluster: RedisCluster) -> dict[str, int]:
    """Every token-service key in the cluster -> the port of the master holding it."""
    return {
        name: port
        for port in cluster.ports
        for name in cluster.command(port, "KEYS", "xcagw:token-service:*")
    }


async def test_redis_lock_is_owner_checked_after_its_slot_moved(cluster: RedisCluster) -> None:
    cluster.flushall()
    client = create_redis(cluster.url)
    try:
        lock = RedisLock(client, "xcagw:token-service:{cluster-test}:lock", 30.0)
        token = await lock.try_acquire()
        assert token is not None
        assert await lock.try_acquire() is None
        old, new = cluster.rehome(lock.name)
        moved = cluster.moved_replies(old)
        await lock.release("someone-else")  # the release script runs on the new owner
        assert cluster.moved_replies(old) == moved + 1
        assert await lock.holder() == token
        await lock.release(token)
        assert await lock.holder() is None
        assert cluster.command(new, "EXISTS", lock.name) == 0
    finally:
        await client.aclose()


async def test_token_service_shares_one_slot_per_application(
    cluster: RedisCluster, settings_for: Any, service_factory: Any, oauth_stub: Any
) -> None:
    cluster.flushall()
    settings = settings_for(redis_url=cluster.url)
    namespace = app_namespace(settings)
    state_key = f"{namespace}:keys:state"
    # SERVING (awaited by the factory) means its Redis readiness check passed on the cluster.
    async with service_factory(settings) as svc:
        first = await svc.stub.GetNhsAccessToken(request())
        assert not first.from_cache
        keys = service_keys(cluster)
        assert {state_key, f"{namespace}:nhs-oauth:token"} <= set(keys)
        assert len({cluster.keyslot(name) for name in keys}) == 1
        assert len(set(keys.values())) == 1

        old, new = cluster.rehome(state_key)
        moved = cluster.moved_replies(old)
        second = await svc.stub.GetNhsAccessToken(request())
        assert second.from_cache and second.access_token == first.access_token
        assert cluster.moved_replies(old) > moved
        assert set(service_keys(cluster).values()) == {new}

        state_before = cluster.command(new, "GET", state_key)
        await svc.stub.RotateKeys(
            token_service_pb2.RotateKeysRequest(
                context=common_pb2.RequestContext(user_id="ops-admin", correlation_id="rot-1")
            )
        )
        assert cluster.command(new, "GET", state_key) != state_before
        forced = await svc.stub.GetNhsAccessToken(request(force=True))
        assert not forced.from_cache and forced.access_token != first.access_token
        assert oauth_stub.requests == 2
        # Both locks (rotation, OAuth single flight) were released; everything on one master.
        keys = service_keys(cluster)
        assert f"{namespace}:keys:lock" not in keys
        assert f"{namespace}:nhs-oauth:lock" not in keys
        assert set(keys.values()) == {new}
