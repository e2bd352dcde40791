"""The cached-query fast path (issue #11): in-process caches, shared Redis round trips, the
bounded httptools protocol. Each keeps the behaviour of the uncached path within a stated bound.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import pytest
import redis
import uvicorn
from lxml import etree
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from soap_edge_testkit import (
    HCID,
    JANE,
    REPO,
    FakeBackends,
    envelope,
    find_documents,
    post,
    retrieve_body,
)

from soap_edge.app import create_app
from soap_edge.cache import TtlCache
from soap_edge.config import Settings
from soap_edge.patient_ids import nhs_cx
from soap_edge.redisbatch import AutoPipeline
from soap_edge.security.transport import bounded_protocol
from soap_edge.store import key
from soap_edge.xds import EntryView, extrinsic_object
from xcagw.pds.v1 import pds_adapter_pb2
from xcagw_common.redis import create_redis
from xcagw_common.testing import RedisServer

XCQ = "urn:ihe:iti:2007:CrossGatewayQuery"
XCR = "urn:ihe:iti:2007:CrossGatewayRetrieve"
RIM = {"rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"}


# ---- TtlCache ----------------------------------------------------------------------------------
def test_ttl_cache_expires_and_stays_within_its_bounds() -> None:
    now = [0.0]
    cache: TtlCache[str, bytes] = TtlCache(
        10, max_entries=3, max_cost=10, cost=len, clock=lambda: now[0]
    )
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"
    cache.put("c", b"1234")  # 12 bytes > 10: the least recently used ("b") goes
    assert cache.get("b") is None and cache.get("a") == b"1234" and cache.get("c") == b"1234"
    cache.put("huge", b"x" * 11)  # larger than the whole bound: never stored
    assert cache.get("huge") is None
    now[0] = 10.0
    assert cache.get("a") is None and len(cache) == 1
    off: TtlCache[str, int] = TtlCache(0)
    off.put("k", 1)
    assert off.get("k") is None


# ---- PDS restriction check cache -----------------------------------------------------------------
@pytest.fixture
async def cached_client(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings.pds_check_cache_seconds = 0.5
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://soap-edge.test") as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


def restrict(fakes: FakeBackends) -> None:
    patient = pds_adapter_pb2.Patient()
    patient.CopyFrom(fakes.state.patients[JANE])
    patient.security_label = "R"
    fakes.state.patients[JANE] = patient


async def query(client: httpx.AsyncClient, check: Callable[..., Any]) -> Any:
    resp = await post(client, "/iti38", envelope(XCQ, find_documents(JANE)))
    return check(resp)


def error_codes(parsed: Any) -> list[str]:
    return [str(c) for c in parsed.xpath("//rs:RegistryError/@errorCode")]


async def test_a_passed_check_is_reused_for_stored_data_within_its_bound(  # type: ignore[no-untyped-def]
    cached_client, check, fakes
) -> None:
    first = await query(cached_client, check)
    assert len(first.xpath("//rim:ExtrinsicObject")) == 1
    pds_calls = fakes.state.calls["GetPatient"]
    again = await query(cached_client, check)
    assert etree.tostring(again.xpath("//rim:ExtrinsicObject")[0]) == etree.tostring(
        first.xpath("//rim:ExtrinsicObject")[0]
    )
    assert fakes.state.calls["GetPatient"] == pds_calls  # served on the passed check

    # A restriction is seen once the bound has passed (pds_check_cache_seconds = 0.5 here).
    restrict(fakes)
    await asyncio.sleep(0.6)
    parsed = await query(cached_client, check)
    assert error_codes(parsed) == ["XDSUnknownPatientId"]
    assert fakes.state.calls["GetPatient"] == pds_calls + 1
    # A refusal is never cached: each request asks PDS again.
    await query(cached_client, check)
    assert fakes.state.calls["GetPatient"] == pds_calls + 2


async def test_a_miss_never_builds_on_a_cached_check(  # type: ignore[no-untyped-def]
    cached_client, check, fakes, redis_server
) -> None:
    await query(cached_client, check)
    redis.Redis(port=redis_server.port).delete(key("patient-doc", JANE))
    fakes.state.pds_failure = (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    built = fakes.state.calls["GetStructuredRecord"]
    parsed = await query(cached_client, check)
    assert error_codes(parsed) == ["XDSRegistryNotAvailable"]
    assert fakes.state.calls["GetStructuredRecord"] == built


# ---- documents: immutable per uniqueId, existence still read from Redis -------------------------
async def test_retrieve_serves_the_stored_bytes_and_sees_a_replaced_document(  # type: ignore[no-untyped-def]
    client, check, redis_server
) -> None:
    found = await query(client, check)
    uid = found.xpath(
        "string(//rim:ExternalIdentifier[@identificationScheme="
        "'urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab']/@value)"
    )
    r = redis.Redis(port=redis_server.port)
    for _ in range(2):
        resp = await post(client, "/iti39", envelope(XCR, retrieve_body((HCID, REPO, uid))))
        parsed = check(resp)
        assert next(iter(parsed.attachments.values())) == r.hget(key("doc", uid), "content")
    # Redis says which bytes are current: a document stored again under the same id with other
    # bytes is served as stored, not as remembered.
    r.hset(key("doc", uid), mapping={"content": b"<ClinicalDocument/>", "hash": "0" * 40})
    resp = await post(client, "/iti39", envelope(XCR, retrieve_body((HCID, REPO, uid))))
    assert next(iter(check(resp).attachments.values())) == b"<ClinicalDocument/>"


def test_built_document_entries_are_copies(settings: Settings) -> None:
    view = EntryView("urn:uuid:1", "1.2.3", True, "title")
    first = extrinsic_object(view, nhs_cx(JANE), settings)
    first.set("id", "changed")
    second = extrinsic_object(view, nhs_cx(JANE), settings)
    assert second.get("id") == "urn:uuid:1" and second is not first


# ---- AutoPipeline --------------------------------------------------------------------------------
async def test_concurrent_commands_share_round_trips_and_keep_their_own_errors(
    redis_server: Any, clean: None
) -> None:
    client = create_redis(redis_server.url)
    batch = AutoPipeline(client)
    pipelines = 0
    original = client.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal pipelines
        pipelines += 1
        return original(*args, **kwargs)

    client.pipeline = counting  # type: ignore[method-assign]
    try:
        await client.hset("h", "f", "v")
        results = await asyncio.gather(
            *(batch.execute("SET", f"k{i}", str(i)) for i in range(20)),
            batch.execute("GET", "h"),
            return_exceptions=True,
        )
        assert results[:20] == [True] * 20
        assert isinstance(results[20], ResponseError)  # WRONGTYPE for that caller only
        assert pipelines == 1
        assert await batch.execute_many([("GET", "k3"), ("HMGET", "h", "f", "x")]) == [
            b"3",
            [b"v", None],
        ]
    finally:
        await client.aclose()


async def test_a_connection_failure_fails_every_caller_of_the_batch() -> None:
    server = RedisServer().start()
    client = create_redis(server.url, timeout=0.5)
    try:
        batch = AutoPipeline(client)
        assert await batch.execute("SET", "a", "1") is True
        server.kill()
        results = await asyncio.gather(
            *(batch.execute("GET", "a") for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, RedisConnectionError) for r in results), results
    finally:
        await client.aclose()
        server.stop()


# ---- httptools with a bounded request head -------------------------------------------------------
async def test_httptools_protocol_refuses_an_oversized_head_but_not_a_large_body() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, http=bounded_protocol(2048), log_config=None, lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:  # noqa: ASYNC110 - uvicorn flag
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            ok = await http.post("/", content=b"x" * 300_000)
            assert ok.status_code == 200 and ok.text == "300000"
            again = await http.post("/", content=b"abc")
            assert again.status_code == 200 and again.text == "3"
        # A head still incomplete past the bound (h11's max_incomplete_event_size): 400, closed,
        # before it is buffered any further. A complete one is for HardeningMiddleware (431).
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 1500)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"y" * 1500)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 400 ")
        writer.close()
    finally:
        server.should_exit = True
        await task
