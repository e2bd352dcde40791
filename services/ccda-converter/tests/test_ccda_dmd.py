"""DmdEnricher on a real HTTP socket and a real redis-server: caching, outages, no error caching."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from ccda_converter.dmd import CACHE_PREFIX, DmdEnricher, medication_codes, parse_lookup
from xcagw_common.testing import RedisServer

AMP = "39720311000001101"
VMP = "42109611000001109"


def lookup_body(code: str) -> dict[str, object]:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "display", "valueString": "Paracetamol 500mg tablets (Acme)"},
            {
                "name": "property",
                "part": [
                    {"name": "code", "valueCode": "VMP"},
                    {
                        "name": "value",
                        "valueCoding": {
                            "system": "https://dmd.nhs.uk",
                            "code": VMP,
                            "display": "Paracetamol 500mg tablets",
                        },
                    },
                ],
            },
            {
                "name": "property",
                "part": [
                    {"name": "code", "valueCode": "route"},
                    {"name": "value", "valueCoding": {"code": "26643006", "display": "Oral"}},
                ],
            },
            {
                "name": "property",
                "part": [
                    {"name": "code", "valueCode": "strength"},
                    {"name": "value", "valueString": "500 mg"},
                ],
            },
        ],
    }


class FakeTerminology:
    """A minimal HTTP/1.1 server on a free port: 200 for AMP, 404 otherwise."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b" ")[1].decode()
        self.requests.append(target)
        query = parse_qs(urlsplit(target).query)
        code = query.get("code", [""])[0]
        ok = urlsplit(target).path.endswith("/CodeSystem/$lookup") and code == AMP
        body = json.dumps(
            lookup_body(code) if ok else {"resourceType": "OperationOutcome"}
        ).encode()
        status = b"200 OK" if ok else b"404 Not Found"
        writer.write(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: application/fhir+json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer().start()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def terminology() -> AsyncIterator[FakeTerminology]:
    fake = FakeTerminology()
    await fake.start()
    yield fake
    await fake.stop()


async def test_lookup_then_cache_then_outage(terminology: FakeTerminology, redis: Redis) -> None:
    base = f"http://127.0.0.1:{terminology.port}/terminology/FHIR/R4"
    async with httpx.AsyncClient() as http:
        enricher = DmdEnricher(base, http=http, redis=redis)
        found = await enricher.lookup([AMP, "999"])
        assert set(found) == {AMP}
        assert found[AMP].vmp_code == VMP and found[AMP].route_code == "26643006"
        assert found[AMP].strength == "500 mg"
        assert "system=https%3A%2F%2Fdmd.nhs.uk" in terminology.requests[0]
        assert await redis.get(CACHE_PREFIX + AMP) is not None
        assert await redis.get(CACHE_PREFIX + "999") is None  # a failed lookup is never cached
        await terminology.stop()
        again = await enricher.lookup([AMP, "999"])  # server down: cache answers, nothing raises
        assert set(again) == {AMP}


async def test_server_and_redis_down_never_fail(redis_server: RedisServer) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    async with httpx.AsyncClient() as http:
        enricher = DmdEnricher(
            "http://127.0.0.1:1/FHIR/R4", http=http, redis=dead, timeout_seconds=1.0
        )
        assert await enricher.lookup([AMP]) == {}
    await dead.aclose()


def test_codes_and_parser_tolerate_shapes() -> None:
    bundle = {
        "entry": [
            {
                "resource": {
                    "resourceType": "Medication",
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": AMP}]},
                }
            },
            "junk",
            {
                "resource": {
                    "resourceType": "MedicationStatement",
                    "medicationCodeableConcept": {
                        "coding": [{"system": "https://dmd.nhs.uk", "code": "123"}]
                    },
                }
            },
        ]
    }
    assert medication_codes(bundle) == {AMP, "123"}
    assert parse_lookup("x", {"parameter": ["junk", {"name": "property"}]}).code == "x"


FAST = "39720311000001101"
SLOW = "42109611000001109"


class SplitTerminology:
    """A real HTTP server: FAST answers at once; SLOW never answers and records the hang-up."""

    def __init__(self) -> None:
        self.slow_hung_up = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        code = parse_qs(urlsplit(head.split(b" ")[1].decode()).query).get("code", [""])[0]
        if code == SLOW:
            await reader.read()  # until the client closes the connection
            self.slow_hung_up.set()
            writer.close()
            return
        body = json.dumps(lookup_body(code)).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_timeout_keeps_finished_lookups_and_cancels_the_rest() -> None:
    fake = SplitTerminology()
    await fake.start()
    try:
        async with httpx.AsyncClient() as http:
            enricher = DmdEnricher(
                f"http://127.0.0.1:{fake.port}/FHIR/R4", http=http, timeout_seconds=0.5
            )
            loop = asyncio.get_running_loop()
            started = loop.time()
            found = await enricher.lookup([FAST, SLOW])
            elapsed = loop.time() - started
            # The fast lookup's enrichment survives the overall timeout...
            assert set(found) == {FAST}
            assert found[FAST].display == "Paracetamol 500mg tablets (Acme)"
            assert found[FAST].vmp_code == VMP
            # ...the slow one was given up at the budget, not awaited to the end...
            assert elapsed < 3.0
            # ...cancelled and awaited: no lookup task outlives the call, its connection closed.
            assert not [
                t for t in asyncio.all_tasks() if not t.done() and "_fetch" in repr(t.get_coro())
            ]
            await asyncio.wait_for(fake.slow_hung_up.wait(), timeout=5.0)
    finally:
        await fake.stop()
