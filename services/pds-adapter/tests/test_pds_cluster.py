"""pds-adapter on a real three-master Redis Cluster (issue #11): patient cache and the shared
PDS rate limit (one key each, so cluster safe), served across a slot move (MOVED)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pds_adapter.cache import RATE_LIMIT_NAME, patient_key
from xcagw.common.v1 import common_pb2
from xcagw.pds.v1 import pds_adapter_pb2
from xcagw_common.testing import RedisCluster, cluster_or_skip

if TYPE_CHECKING:  # fixtures' types; conftest is not importable under --import-mode=importlib
    from conftest import AdapterFactory, Sandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")

NHS = "9000000009"
CONTEXT = common_pb2.RequestContext(
    correlation_id="urn:uuid:0b7c1c9e-5a52-4c1b-9a43-4d6f7d1c2e01",
    partner_id="partner-1",
    transaction="ITI-47",
)


cluster = pytest.fixture(scope="session")(cluster_or_skip)


def holder(cluster: RedisCluster, key: str) -> int | None:
    """The port of the master that holds `key`, or None (asked of the slot's owner only: any
    other master would answer MOVED)."""
    owner = cluster.owner(cluster.keyslot(key))
    return owner if cluster.command(owner, "EXISTS", key) else None


async def test_cache_and_rate_limit_work_on_a_cluster_across_a_slot_move(
    cluster: RedisCluster, start_adapter: AdapterFactory, sandbox: Sandbox
) -> None:
    cluster.flushall()
    request = pds_adapter_pb2.GetPatientRequest(context=CONTEXT, nhs_number=NHS)
    # The factory returns once the adapter is SERVING: its Redis readiness PING passed.
    async with start_adapter(redis_url=cluster.url) as adapter:
        first = await adapter.stub.GetPatient(request, timeout=10)
        assert first.patient.nhs_number == NHS
        assert await sandbox.pds_requests() == 1
        cached_on = holder(cluster, patient_key(NHS))
        assert cached_on is not None
        # The GCRA decision came from Redis (its key), not the in-process fallback.
        assert holder(cluster, f"xcagw:ratelimit:{RATE_LIMIT_NAME}") is not None

        old, new = cluster.rehome(patient_key(NHS))
        moved = cluster.moved_replies(old)
        again = await adapter.stub.GetPatient(request, timeout=10)
        assert again == first
        assert await sandbox.pds_requests() == 1  # served from the cache on the new owner
        assert cluster.moved_replies(old) == moved + 1
        assert holder(cluster, patient_key(NHS)) == new
