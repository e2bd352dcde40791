"""soap-edge on a real three-master Redis Cluster (issue #11).

The real Store, partner rate limiter and audit queue/forwarder against
`xcagw_common.testing.RedisCluster`: keys that one script or transaction uses together share a
slot (CLUSTER KEYSLOT), and operations succeed while slots move under the client (MOVED,
counted by the old owner). Last, the whole gateway answers ITI-38 and ITI-39 over the cluster.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from soap_edge_security_kit import rate_limited_partner
from soap_edge_testkit import (
    HCID,
    HCID_OID,
    JANE,
    REPO,
    UNIQUE_ID,
    FakeBackends,
    envelope,
    find_documents,
    post,
    read_response,
    retrieve_body,
)

from soap_edge.app import create_app
from soap_edge.config import Settings
from soap_edge.security.audit import (
    CURSOR_KEY,
    LEASE_KEY,
    STREAM_KEY,
    ArrEndpoint,
    AuditForwarder,
    AuditQueue,
    AuditRecord,
    AuditSource,
)
from soap_edge.security.errors import RateLimited
from soap_edge.security.ratelimit import PartnerRateLimiter
from soap_edge.store import DocumentRecord, Store, key
from xcagw_common.redis import RedisClient, create_redis
from xcagw_common.testing import RedisCluster, cluster_or_skip
from xcagw_devstack.syslog_sink import SyslogSink

NHS = "9000000009"
OLD_NHS = "9000000017"
XCQ = "urn:ihe:iti:2007:CrossGatewayQuery"
XCR = "urn:ihe:iti:2007:CrossGatewayRetrieve"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"


cluster = pytest.fixture(scope="session")(cluster_or_skip)


@pytest.fixture
async def redis_client(cluster: RedisCluster) -> AsyncIterator[RedisClient]:
    cluster.flushall()
    client = create_redis(cluster.url, timeout=5.0)
    yield client
    await client.aclose()


def cluster_settings(url: str, fakes: FakeBackends) -> Settings:
    return Settings(
        redis_url=url,
        pds_adapter_addr=fakes.addrs["pds-adapter"],
        gpconnect_adapter_addr=fakes.addrs["gpconnect-adapter"],
        ccda_converter_addr=fakes.addrs["ccda-converter"],
        token_service_addr=fakes.addrs["token-service"],
        home_community_id=HCID_OID,
        repository_unique_id=REPO,
        readiness_timeout_seconds=2.0,
        partner_registry={
            "anonymous_partner": "anonymous",
            "partners": [{"id": "anonymous", "saml": {"required": False, "verify": False}}],
        },
        allow_insecure_dev_partners=True,
    )


@pytest.fixture
def store(redis_client: RedisClient, cluster: RedisCluster, fakes: FakeBackends) -> Store:
    return Store(redis_client, cluster_settings(cluster.url, fakes))


def document(unique_id: str, entry_uuid: str, nhs: str = NHS) -> DocumentRecord:
    return DocumentRecord(
        unique_id=unique_id,
        entry_uuid=entry_uuid,
        nhs_number=nhs,
        hash="da39a3ee5e6b4b0d3255bfef95601890afd80709",
        size=7,
        creation_time="20250101120000",
        title="Summary",
        content=b"<x>\x00\xff</x>",
        family="SMITH",
    )


async def test_documents_and_pointers_across_slots_and_moves(
    store: Store, cluster: RedisCluster
) -> None:
    first = document("2.25.1001", "urn:uuid:00000000-0000-0000-0000-000000001001")
    await store.save_document(first, also_for=(OLD_NHS,))
    doc_key, entry_key = key("doc", first.unique_id), key("entry", first.entry_uuid)
    pointer = key("patient-doc", NHS)
    # Looked up by different ids, so they cannot share a slot: why save_document is two steps.
    assert len({cluster.keyslot(k) for k in (doc_key, entry_key, pointer)}) == 3

    old, _ = cluster.rehome(doc_key)
    moved = cluster.moved_replies(old)
    got = await store.current_document(NHS)
    assert got == first
    assert cluster.moved_replies(old) == moved + 1
    assert await store.current_document(OLD_NHS) == first
    assert await store.document_by_entry(first.entry_uuid) == first

    # A new snapshot whose document slot moved before the write: the MULTI on that one slot
    # meets MOVED and still applies (once).
    second = document("2.25.1002", "urn:uuid:00000000-0000-0000-0000-000000001002")
    old, new = cluster.rehome(key("doc", second.unique_id))
    _, _ = cluster.rehome(pointer)
    moved = cluster.moved_replies(old)
    await store.save_document(second)
    assert cluster.moved_replies(old) > moved
    assert cluster.command(new, "HGET", key("doc", second.unique_id), "family") == "SMITH"
    assert await store.current_document(NHS) == second
    assert await store.document(first.unique_id) == first
    ttl = cluster.command(new, "TTL", key("doc", second.unique_id))
    assert 0 < ttl <= store.settings.document_retention_seconds


async def test_on_demand_sessions_ceid_and_continuations(
    store: Store, cluster: RedisCluster
) -> None:
    uid, entry = "2.25.2001", "urn:uuid:00000000-0000-0000-0000-000000002001"
    await store.register_on_demand(uid, entry, NHS)
    cluster.rehome(key("ondemand", uid))
    assert await store.on_demand_by_entry(entry) == uid
    assert await store.on_demand_patient(uid) == NHS

    uids = [f"2.25.30{i:02d}" for i in range(12)]
    assert len({cluster.owner(cluster.keyslot(key("session", "epic", u))) for u in uids}) > 1
    await store.record_session("epic", uids, "urn:uuid:q-1", "ITI-38")
    cluster.rehome(key("session", "epic", uids[0]))
    for u in uids:
        assert await store.session("epic", u) == {
            "query_message_id": "urn:uuid:q-1",
            "transaction": "ITI-38",
        }

    await store.save_ceid_mapping("epic", "1.2.840.114350", "E123", NHS)
    cluster.rehome(key("nhs-ceid", "epic", NHS, "1.2.840.114350"))
    assert await store.nhs_for_ceid("epic", "1.2.840.114350", "E123") == NHS
    assert await store.ceid_for_nhs("epic", NHS, "1.2.840.114350") == "E123"
    assert await store.nhs_for_ceid("other", "1.2.840.114350", "E123") is None

    await store.save_continuation("epic", "q-2", {"remaining": [1, 2]})
    cluster.rehome(key("pdq", "epic", "q-2"))
    assert await store.continuation("epic", "q-2") == {"remaining": [1, 2]}
    await store.drop_continuation("epic", "q-2")
    assert await store.continuation("epic", "q-2") is None


async def test_generation_lock_release_script_follows_moved(
    store: Store, cluster: RedisCluster
) -> None:
    token = await store.acquire_generation_lock(NHS)
    assert token is not None
    assert await store.acquire_generation_lock(NHS) is None
    assert await store.generation_locked(NHS)
    await store.release_generation_lock(NHS, "not-the-owner")
    assert await store.generation_locked(NHS)

    old, new = cluster.rehome(key("lock", "generate", NHS))
    moved = cluster.moved_replies(old)
    await store.release_generation_lock(NHS, token)  # EVAL on the new owner
    assert cluster.moved_replies(old) == moved + 1
    assert not await store.generation_locked(NHS)
    assert cluster.command(new, "EXISTS", key("lock", "generate", NHS)) == 0

    await store.record_generation_failure(NHS, "gpconnect-adapter|UNAVAILABLE")
    assert await store.generation_failure(NHS) == "gpconnect-adapter|UNAVAILABLE"
    await store.clear_generation_failure(NHS)
    assert await store.generation_failure(NHS) is None
    assert await store.ping()


# ---- security layer ----------------------------------------------------------------------------


def _fallbacks() -> float:
    return REGISTRY.get_sample_value("xcagw_partner_rate_limit_fallback_total") or 0.0


async def test_partner_rate_limit_script_keys_share_a_slot(
    redis_client: RedisClient, cluster: RedisCluster, tmp_path: Path
) -> None:
    partner = rate_limited_partner(tmp_path)
    limiter = PartnerRateLimiter(redis_client, redis_retry_interval=60.0)
    keys = [limit.key for limit in limiter.limits_for(partner, "ITI-39")]
    assert len(keys) == 2
    assert cluster.keyslot(keys[0]) == cluster.keyslot(keys[1])
    fallbacks = _fallbacks()

    await limiter.check(partner, "ITI-39")
    with pytest.raises(RateLimited):
        await limiter.check(partner, "ITI-39")  # the per-transaction limit (burst 1)
    old, new = cluster.rehome(keys[0])  # both keys move: one slot
    moved = cluster.moved_replies(old)
    await limiter.check(partner, "ITI-38")  # partner-wide: 2 of 3 used
    assert cluster.moved_replies(old) == moved + 1
    await limiter.check(partner, "ITI-38")
    with pytest.raises(RateLimited):
        await limiter.check(partner, "ITI-38")
    assert cluster.command(new, "EXISTS", *keys) == 2
    assert _fallbacks() == fallbacks  # every decision was the Lua script's, none in process


def _audit_record(i: int) -> AuditRecord:
    return AuditRecord(
        transaction="ITI-38",
        event_time=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        partner_id="epic",
        query_id=f"urn:uuid:00000000-0000-0000-0000-{i:012d}",
        query=b"<AdhocQueryRequest/>",
    )


async def test_audit_commit_script_keys_share_a_slot_and_deliver_after_a_move(
    redis_client: RedisClient, cluster: RedisCluster
) -> None:
    assert len({cluster.keyslot(k) for k in (STREAM_KEY, CURSOR_KEY, LEASE_KEY)}) == 1
    queue = AuditQueue(redis_client, AuditSource(source_id="xcagw-test", hostname="gw-1.test"))
    ids = [await queue.enqueue(_audit_record(i)) for i in range(3)]
    old, new = cluster.rehome(STREAM_KEY)  # the stream and its cursor/lease move together
    sink = SyslogSink().start()
    forwarder = AuditForwarder(
        redis_client,
        ArrEndpoint(host="127.0.0.1", port=sink.port, tls=False).connector(),
        retry_initial=0.05,
        poll_seconds=0.1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(forwarder.run(stop))
    try:
        messages = await asyncio.to_thread(sink.wait_for, 3)
        assert len(messages) == 3 and sink.errors() == []
        for _ in range(250):
            if await forwarder.update_backlog() == 0:
                break
            await asyncio.sleep(0.02)
        assert cluster.command(new, "XLEN", STREAM_KEY) == 0  # trimmed by the commit script
        assert cluster.command(new, "GET", CURSOR_KEY) == ids[-1]
        assert cluster.command(new, "GET", LEASE_KEY) == forwarder.replica_id
        assert cluster.moved_replies(old) >= 1
    finally:
        stop.set()
        await task
        sink.stop()


# ---- the gateway ---------------------------------------------------------------------------------
@pytest.fixture
async def gateway(cluster: RedisCluster, fakes: FakeBackends) -> AsyncIterator[httpx.AsyncClient]:
    cluster.flushall()
    fakes.reset()
    app = create_app(cluster_settings(cluster.url, fakes))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://soap-edge.test") as c:
            yield c


async def test_gateway_queries_and_retrieves_over_the_cluster(
    gateway: httpx.AsyncClient, cluster: RedisCluster
) -> None:
    ready = await gateway.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["redis"] == "ok"

    query = await post(gateway, "/iti38", envelope(XCQ, find_documents(JANE)))
    assert query.status_code == 200, query.text
    uid = str(read_response(query).xpath(UNIQUE_ID))
    assert uid

    cluster.rehome(key("doc", uid))
    retrieve = await post(gateway, "/iti39", envelope(XCR, retrieve_body((HCID, REPO, uid))))
    assert retrieve.status_code == 200, retrieve.text
    parsed = read_response(retrieve)
    assert str(parsed.xpath("string(//rs:RegistryResponse/@status)")) == SUCCESS
    assert len(parsed.attachments) == 1
    data: Any = next(iter(parsed.attachments.values()))
    assert b"ClinicalDocument" in data
