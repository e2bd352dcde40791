"""GetNhsAccessToken against the NHS sandbox (xcagw_devstack): single flight and failure modes.

The sandbox verifies each assertion like the NHS does: it fetches the app's registered JWKS (our
`/.well-known/jwks.json`, or a JWKS file) at token time and checks the RS512 signature and claims.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from jwcrypto import jwk

from token_service import servicer
from xcagw.common.v1 import common_pb2
from xcagw.token.v1 import token_service_pb2
from xcagw_common.errors import error_info, error_reason

S = grpc.StatusCode


def request(force: bool = False) -> token_service_pb2.GetNhsAccessTokenRequest:
    return token_service_pb2.GetNhsAccessTokenRequest(
        context=common_pb2.RequestContext(correlation_id=str(uuid.uuid4())), force_refresh=force
    )


async def call_all(stubs: list[Any], count: int) -> list[Any]:
    calls = [stubs[i % len(stubs)].GetNhsAccessToken(request()) for i in range(count)]
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def expect_failure(svc: Any, code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.stub.GetNhsAccessToken(request())
    assert (err.value.code(), error_reason(err.value)) == (code, reason)
    doc = servicer.__doc__ or ""
    assert f"| {code.name}" in doc and f"| {reason}" in doc
    info = error_info(err.value)
    assert info is not None
    exposed = " ".join([err.value.details() or "", *info.metadata.values()])
    assert "eyJ" not in exposed  # no JWT (header or payload) in what callers see


async def test_fifty_concurrent_callers_on_a_cold_cache_cause_one_token_request(
    sandbox_factory: Any, sandbox_settings_for: Any, run_service: Any
) -> None:
    async with sandbox_factory() as sandbox:
        # Keep the one token request in flight while the other callers arrive.
        await sandbox.set_oauth_fault(latency_ms=300)
        async with run_service(sandbox_settings_for(sandbox)) as svc:
            answers = await call_all([svc.stub], 50)
            assert await sandbox.oauth_requests() == 1
            assert len({a.access_token for a in answers}) == 1
            later = await svc.stub.GetNhsAccessToken(request())
            assert later.from_cache and later.access_token == answers[0].access_token
            assert 500 < later.expires_in_seconds <= 599
            assert await sandbox.oauth_requests() == 1


async def test_replicas_share_one_refresh_through_redis(
    sandbox_factory: Any, sandbox_settings_for: Any, run_service: Any
) -> None:
    async with sandbox_factory() as sandbox:
        await sandbox.set_oauth_fault(latency_ms=300)
        first_settings = sandbox_settings_for(sandbox)
        second_settings = sandbox_settings_for(sandbox, jwks_http_port=0)
        async with run_service(first_settings) as first, run_service(second_settings) as second:
            answers = await call_all([first.stub, second.stub], 50)
            assert await sandbox.oauth_requests() == 1
            assert len({a.access_token for a in answers}) == 1
            # A forced refresh on one replica (the API answered 401) replaces it for both.
            forced = await second.stub.GetNhsAccessToken(request(force=True))
            assert forced.access_token != answers[0].access_token
            assert await sandbox.oauth_requests() == 2
            cached = await first.stub.GetNhsAccessToken(request())
            assert cached.from_cache and cached.access_token == forced.access_token


async def test_a_failed_refresh_fails_every_waiting_caller_with_one_request(
    sandbox_factory: Any, sandbox_settings_for: Any, run_service: Any
) -> None:
    async with sandbox_factory() as sandbox:
        await sandbox.set_oauth_fault(latency_ms=300, error_rate=1.0, error_status=503)
        async with run_service(sandbox_settings_for(sandbox)) as svc:
            answers = await call_all([svc.stub], 20)
            assert await sandbox.oauth_requests() == 1
            assert all(isinstance(a, grpc.aio.AioRpcError) for a in answers)
            outcomes = {(a.code(), error_reason(a)) for a in answers}
            assert outcomes == {(S.UNAVAILABLE, "OAUTH_UPSTREAM_ERROR")}
            # Failures are not cached: the next call asks again.
            await sandbox.set_oauth_fault()
            assert (await svc.stub.GetNhsAccessToken(request())).access_token
            assert await sandbox.oauth_requests() == 2


async def test_injected_faults_and_an_unregistered_app_map_to_documented_statuses(
    sandbox_factory: Any, sandbox_settings_for: Any, run_service: Any
) -> None:
    faults: list[tuple[dict[str, Any], grpc.StatusCode, str]] = [
        ({"burst_429": 1}, S.RESOURCE_EXHAUSTED, "OAUTH_RATE_LIMITED"),
        ({"error_rate": 1.0, "error_status": 500}, S.UNAVAILABLE, "OAUTH_UPSTREAM_ERROR"),
        ({"error_rate": 1.0, "error_status": 503}, S.UNAVAILABLE, "OAUTH_UPSTREAM_ERROR"),
        ({"timeout_rate": 1.0, "hang_seconds": 1}, S.UNAVAILABLE, "OAUTH_TIMEOUT"),
        ({"malformed_rate": 1.0}, S.UNAVAILABLE, "OAUTH_MALFORMED_RESPONSE"),
    ]
    async with sandbox_factory() as sandbox:
        settings = sandbox_settings_for(sandbox, oauth_timeout_seconds=0.3)
        async with run_service(settings) as svc:
            for fault, code, reason in faults:
                await sandbox.set_oauth_fault(**fault)
                await expect_failure(svc, code, reason)
            await sandbox.set_oauth_fault()
            assert (await svc.stub.GetNhsAccessToken(request())).access_token
            other_app = sandbox_settings_for(sandbox, api_key="unregistered-app", jwks_http_port=0)
            async with run_service(other_app) as other:
                await expect_failure(other, S.FAILED_PRECONDITION, "OAUTH_UNKNOWN_API_KEY")


def public_jwk(key: jwk.JWK, kid: str) -> dict[str, Any]:
    doc = dict(json.loads(key.export_public()))
    doc.update({"kid": kid, "alg": "RS512", "use": "sig"})
    return doc


async def test_key_registration_problems_map_to_documented_statuses(
    sandbox_factory: Any,
    sandbox_settings_for: Any,
    run_service: Any,
    tmp_path: Path,
    seed_key_pem: bytes,
) -> None:
    registered = tmp_path / "registered-jwks.json"
    ours = jwk.JWK.from_pem(seed_key_pem)
    stranger = await asyncio.to_thread(jwk.JWK.generate, kty="RSA", size=2048)

    def register(content: Any) -> None:
        registered.write_text(content if isinstance(content, str) else json.dumps(content))
        stamp = registered.stat().st_mtime_ns + 1_000_000_000  # the sandbox re-reads on change
        os.utime(registered, ns=(stamp, stamp))

    cases = [
        ({"keys": [public_jwk(stranger, "other-kid")]}, S.FAILED_PRECONDITION, "OAUTH_INVALID_KID"),
        (
            {"keys": [public_jwk(stranger, "seed-1")]},
            S.FAILED_PRECONDITION,
            "OAUTH_INVALID_SIGNATURE",
        ),
        ("not a JWKS", S.UNAVAILABLE, "OAUTH_JWKS_UNREACHABLE"),
    ]
    register(cases[0][0])
    async with sandbox_factory(jwks_url="", jwks_file=str(registered)) as sandbox:
        async with run_service(sandbox_settings_for(sandbox)) as svc:
            for content, code, reason in cases:
                register(content)
                await expect_failure(svc, code, reason)
            register({"keys": [public_jwk(ours, "seed-1")]})
            assert (await svc.stub.GetNhsAccessToken(request())).access_token

    async with sandbox_factory(jwks_url="", jwks_file="") as sandbox:
        async with run_service(sandbox_settings_for(sandbox)) as svc:
            await expect_failure(svc, S.FAILED_PRECONDITION, "OAUTH_PUBLIC_KEY_NOT_REGISTERED")

    unreachable = "http://127.0.0.1:9/.well-known/jwks.json"
    async with sandbox_factory(jwks_url=unreachable) as sandbox:
        async with run_service(sandbox_settings_for(sandbox)) as svc:
            await expect_failure(svc, S.UNAVAILABLE, "OAUTH_JWKS_UNREACHABLE")


async def test_tokens_from_the_sandbox_are_accepted_by_its_apis(
    sandbox_factory: Any, sandbox_settings_for: Any, run_service: Any
) -> None:
    async with sandbox_factory() as sandbox:
        async with run_service(sandbox_settings_for(sandbox)) as svc:
            token = (await svc.stub.GetNhsAccessToken(request())).access_token
        async with httpx.AsyncClient(timeout=5) as client:
            answer = await client.get(
                f"{sandbox.base_url}/personal-demographics/FHIR/R4/Patient/9000000009",
                headers={"Authorization": f"Bearer {token}", "X-Request-ID": str(uuid.uuid4())},
            )
        assert answer.status_code == 200, answer.text[:200]
