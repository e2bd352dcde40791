"""The dm+d cache on a real three-master Redis Cluster (issue #11).

One record's codes hash to different slots (MGET would be refused with CROSSSLOT); the enricher
reads them with a pipeline of GETs, which the cluster client splits per master, and keeps doing
so after a slot moved (MOVED).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ccda_converter.dmd import CACHE_PREFIX, DmdEnricher
from xcagw_common.redis import create_redis
from xcagw_common.testing import RedisCluster, cluster_or_skip

CODES = [f"3972031100000{i:04d}" for i in range(1101, 1113)]


cluster = pytest.fixture(scope="session")(cluster_or_skip)


class Terminology:
    """A FHIR $lookup stub on a real socket that knows every code it is asked for."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b" ")[1].decode()
        code = parse_qs(urlsplit(target).query).get("code", [""])[0]
        self.requests.append(code)
        body = json.dumps(
            {
                "resourceType": "Parameters",
                "parameter": [{"name": "display", "valueString": f"Product {code}"}],
            }
        ).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> Terminology:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def terminology() -> AsyncIterator[Terminology]:
    async with Terminology() as fake:
        yield fake


async def test_codes_in_many_slots_are_cached_and_read_across_a_slot_move(
    cluster: RedisCluster, terminology: Terminology
) -> None:
    cluster.flushall()
    owners = {cluster.owner(cluster.keyslot(CACHE_PREFIX + code)) for code in CODES}
    assert len(owners) > 1, "the codes should span several masters"
    redis = create_redis(cluster.url)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            enricher = DmdEnricher(
                f"http://127.0.0.1:{terminology.port}/FHIR/R4", http=http, redis=redis
            )
            first = await enricher.lookup(CODES)
            assert sorted(first) == CODES and sorted(terminology.requests) == CODES
            assert first[CODES[0]].display == f"Product {CODES[0]}"

            terminology.requests.clear()
            old, _ = cluster.rehome(CACHE_PREFIX + CODES[0])
            moved = cluster.moved_replies(old)
            again = await enricher.lookup(CODES)
            assert again == first
            assert terminology.requests == []  # every code came from the cache
            assert cluster.moved_replies(old) > moved
    finally:
        await redis.aclose()
