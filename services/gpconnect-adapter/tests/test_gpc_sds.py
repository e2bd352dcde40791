"""SDS lookups: a shared lookup serves each caller within its own deadline; partner-controlled
correlation ids never break (or inject into) the SDS request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from gpc_testkit import (
    RunningAdapter,
    Sandbox,
    ThreadedServer,
    request_context,
    rpc_error,
    run_adapter,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from xcagw.gpconnect.v1 import gpconnect_adapter_pb2
from xcagw_common.testing import free_port

C = grpc.StatusCode


def _lookup(ods: str, **context: str) -> gpconnect_adapter_pb2.LookupEndpointRequest:
    return gpconnect_adapter_pb2.LookupEndpointRequest(
        context=request_context(**context), ods_code=ods
    )


async def test_gpc_shared_sds_lookup_serves_each_caller_within_its_own_deadline(
    adapter: RunningAdapter, sandbox: Sandbox
) -> None:
    # Each SDS search takes 0.8 s: the lookup (Device, then Endpoint) needs about 1.6 s.
    sandbox.set_faults({"sds": {"latency_ms": 800}})
    short = adapter.stub.LookupEndpoint(_lookup("Y12345", correlation_id="corr-short"), timeout=0.5)
    # The long caller joins once the short caller's lookup is at SDS (counted on arrival), so
    # the short caller is the one that started the shared lookup.
    while await asyncio.to_thread(sandbox.requests, "sds") == 0:
        assert not short.done(), "the short call ended before its lookup reached SDS"
        await asyncio.sleep(0.01)
    long = await adapter.stub.LookupEndpoint(
        _lookup("Y12345", correlation_id="corr-long"), timeout=10
    )
    assert (long.asid, long.from_cache) == ("918999198001", False)
    failure = await rpc_error(short)
    assert failure.code == C.DEADLINE_EXCEEDED
    assert sandbox.requests("sds") == 2  # one lookup: one Device and one Endpoint search
    # The shared lookup was cached for everyone.
    again = await adapter.stub.LookupEndpoint(_lookup("Y12345"), timeout=10)
    assert again.from_cache and sandbox.requests("sds") == 2


@dataclass
class RecordingSds:
    """A reverse proxy in front of the sandbox's SDS that records each request's headers."""

    upstream: str
    seen: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def forward(request: Request) -> Response:
            self.seen.append(dict(request.headers))
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.get(
                    f"{self.upstream}{request.url.path}",
                    params=list(request.query_params.multi_items()),
                    headers=headers,
                )
            return Response(
                answer.content,
                status_code=answer.status_code,
                media_type=answer.headers.get("content-type"),
            )

        return Starlette(routes=[Route("/{rest:path}", forward, methods=["GET"])])


@pytest.fixture
def recording_sds(sandbox: Sandbox) -> Iterator[tuple[str, RecordingSds]]:
    port = free_port()
    proxy = RecordingSds(sandbox.url)
    server = ThreadedServer(proxy.app(), port).start()
    try:
        yield f"http://127.0.0.1:{port}/spine-directory/FHIR/R4", proxy
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("ods", "correlation_id"),
    [
        # A partner's wsa:MessageID with `&#13;&#10;` in it arrives here as CR/LF.
        ("Y12345", "corr\r\nX-Injected: yes"),
        ("B82617", "urn:uuid:corr-1\n"),
        ("A20047", "corrélation-ü"),
    ],
)
async def test_gpc_unsafe_correlation_id_is_left_out_of_the_sds_request(
    adapter_settings: dict[str, Any],
    recording_sds: tuple[str, RecordingSds],
    ods: str,
    correlation_id: str,
) -> None:
    sds_url, proxy = recording_sds
    # One failure would open the shared "sds" breaker: a lookup after it proves none counted.
    settings = {**adapter_settings, "sds_base_url": sds_url, "breaker_failure_threshold": 1}
    async with run_adapter(settings) as running:
        response = await running.stub.LookupEndpoint(
            _lookup(ods, correlation_id=correlation_id), timeout=10
        )
        assert (response.ods_code, response.from_cache) == (ods, False)
        # Device and Endpoint searches, each sent once, neither with the unsafe value.
        assert len(proxy.seen) == 2
        for headers in proxy.seen:
            assert "x-correlation-id" not in headers
            assert "x-injected" not in headers
        # The breaker stayed closed, and a safe correlation id is still passed on.
        proxy.seen.clear()
        await running.stub.LookupEndpoint(
            _lookup("Y90003", correlation_id="urn:uuid:ok-1"), timeout=10
        )
        assert [h.get("x-correlation-id") for h in proxy.seen] == ["urn:uuid:ok-1"] * 2
