"""PdsClient against a scripted HTTP transport: headers, request-id reuse, 401 refresh, errors."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest

from pds_adapter.errors import AdapterError
from pds_adapter.fhir_client import PdsClient
from pds_adapter.tokens import TokenProvider
from xcagw.common.v1 import common_pb2
from xcagw.token.v1 import token_service_pb2
from xcagw_common.resilience import (
    CircuitBreaker,
    CircuitState,
    Deadline,
    LocalRateLimiter,
    RetryPolicy,
    is_transient_http_error,
)

BASE = "http://pds.test/personal-demographics/FHIR/R4"
CONTEXT = common_pb2.RequestContext(correlation_id="urn:uuid:corr-1", partner_id="p1")


class FakeTokenStub:
    """GetNhsAccessToken: a new token on every forced refresh."""

    def __init__(self) -> None:
        self.requests: list[token_service_pb2.GetNhsAccessTokenRequest] = []
        self.fail_with: grpc.StatusCode | None = None

    async def GetNhsAccessToken(
        self,
        request: token_service_pb2.GetNhsAccessTokenRequest,
        timeout: float,  # noqa: ASYNC109 - the gRPC stub's signature
        wait_for_ready: bool | None = None,
    ) -> token_service_pb2.GetNhsAccessTokenResponse:
        assert timeout > 0
        assert wait_for_ready is True  # a briefly unreachable token-service is waited for
        self.requests.append(request)
        if self.fail_with is not None:
            raise grpc.aio.AioRpcError(
                self.fail_with, grpc.aio.Metadata(), grpc.aio.Metadata(), details="down"
            )
        return token_service_pb2.GetNhsAccessTokenResponse(
            access_token=f"token-{len(self.requests)}", expires_in_seconds=599, token_type="Bearer"
        )


def make_client(
    handler: Callable[[httpx.Request], httpx.Response],
    stub: FakeTokenStub | None = None,
    *,
    attempts: int = 3,
    threshold: int = 5,
) -> tuple[PdsClient, FakeTokenStub]:
    stub = stub or FakeTokenStub()
    client = PdsClient(
        base_url=BASE,
        tokens=TokenProvider(stub),
        breaker=CircuitBreaker(
            "pds-unit", failure_threshold=threshold, is_failure=is_transient_http_error
        ),
        limiter=LocalRateLimiter("pds-unit", rate=10_000, burst=100),
        retry_policy=RetryPolicy(max_attempts=attempts, base_delay=0.0, max_delay=0.0),
        end_user_org_ods="Y12345",
        transport=httpx.MockTransport(handler),
    )
    return client, stub


def patient_json(nhs: str = "9000000009") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": nhs, "meta": {"security": [{"code": "U"}]}}


async def read(client: PdsClient, deadline: float = 5.0) -> Any:
    return await client.read(
        "Patient/9000000009",
        (),
        context=CONTEXT,
        deadline=Deadline.after(deadline),
        url_template="/Patient/{id}",
    )


async def test_headers_and_the_same_request_id_on_every_retry() -> None:
    seen: list[httpx.Request] = []
    statuses = iter([503, 429, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = next(statuses)
        return httpx.Response(status, json=patient_json() if status == 200 else {})

    client, _ = make_client(handler)
    response = await read(client)
    await client.aclose()
    assert response.status_code == 200 and response.body["id"] == "9000000009"
    assert len(seen) == 3
    request_ids = {r.headers["X-Request-ID"] for r in seen}
    assert len(request_ids) == 1 and response.request_id in request_ids
    uuid.UUID(response.request_id)
    first = seen[0]
    assert str(first.url) == f"{BASE}/Patient/9000000009"
    assert first.headers["Authorization"] == "Bearer token-1"
    assert first.headers["X-Correlation-ID"] == "urn:uuid:corr-1"
    assert first.headers["NHSD-End-User-Organisation-ODS"] == "Y12345"
    assert first.headers["Accept"] == "application/fhir+json"


async def test_each_logical_read_gets_a_new_request_id() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["X-Request-ID"])
        return httpx.Response(200, json=patient_json())

    client, stub = make_client(handler)
    await read(client)
    await read(client)
    await client.aclose()
    assert len(set(seen)) == 2
    assert len(stub.requests) == 1  # the token is reused in process


async def test_401_refreshes_the_token_once_and_keeps_the_request_id() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers["Authorization"] == "Bearer token-1":
            return httpx.Response(401, json={"resourceType": "OperationOutcome"})
        return httpx.Response(200, json=patient_json())

    client, stub = make_client(handler)
    response = await read(client)
    assert response.status_code == 200
    assert [r.force_refresh for r in stub.requests] == [False, True]
    assert seen[0].headers["X-Request-ID"] == seen[1].headers["X-Request-ID"]
    # The refreshed token is kept for the next read.
    await read(client)
    assert len(stub.requests) == 2 and seen[-1].headers["Authorization"] == "Bearer token-2"
    await client.aclose()


async def test_persistent_401_is_returned_after_one_refresh() -> None:
    count = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        return httpx.Response(401, json={})

    client, stub = make_client(handler)
    response = await read(client)
    await client.aclose()
    assert response.status_code == 401 and count == 2 and len(stub.requests) == 2


async def test_transport_failures_become_unavailable_and_open_the_breaker() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    client, _ = make_client(handler, attempts=2, threshold=2)
    for _ in range(2):
        with pytest.raises(AdapterError) as info:
            await read(client)
        assert (info.value.code, info.value.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "UPSTREAM_UNAVAILABLE",
        )
    assert client.breaker.state is CircuitState.OPEN
    with pytest.raises(AdapterError) as info:
        await read(client)
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.UNAVAILABLE, "CIRCUIT_OPEN")
    await client.aclose()


async def test_final_5xx_counts_for_the_breaker_but_404_does_not() -> None:
    statuses = iter([404, 404, 500, 500])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(statuses), json={})

    client, _ = make_client(handler, attempts=1, threshold=1)
    assert (await read(client)).status_code == 404
    assert (await read(client)).status_code == 404
    assert client.breaker.state is CircuitState.CLOSED
    assert (await read(client)).status_code == 500
    assert client.breaker.state is CircuitState.OPEN
    await client.aclose()


async def test_token_service_failure_is_unavailable_and_neutral_for_the_breaker() -> None:
    stub = FakeTokenStub()
    stub.fail_with = grpc.StatusCode.UNAVAILABLE
    client, _ = make_client(lambda r: httpx.Response(200, json=patient_json()), stub, threshold=1)
    with pytest.raises(AdapterError) as info:
        await read(client)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.reason == "TOKEN_UNAVAILABLE"
    assert info.value.metadata["token_service_code"] == "UNAVAILABLE"
    assert client.breaker.state is CircuitState.CLOSED
    await client.aclose()


async def test_an_expired_deadline_is_deadline_exceeded() -> None:
    client, _ = make_client(lambda r: httpx.Response(200, json=patient_json()))
    with pytest.raises(AdapterError) as info:
        await read(client, deadline=0.0)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    await client.aclose()


@pytest.mark.parametrize(
    "correlation_id",
    [
        "bad id with spaces",
        "corr\r\nX-Injected: yes",
        # A trailing newline alone: a `re.match` with `$` check let this one through.
        "urn:uuid:corr-1\n",
        "corrélation-ü",
    ],
)
async def test_unsafe_correlation_ids_are_not_sent(correlation_id: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=patient_json())

    client, _ = make_client(handler)
    await client.read(
        "Patient/9000000009",
        (),
        context=common_pb2.RequestContext(correlation_id=correlation_id),
        deadline=Deadline.after(5),
        url_template="/Patient/{id}",
    )
    await client.aclose()
    assert "X-Correlation-ID" not in seen[0].headers
