"""Client assertions, the shared token cache, the JWKS, reflection, readiness and metrics."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import grpc
import httpx
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from jwcrypto import jws
from prometheus_client import REGISTRY

from xcagw.common.v1 import common_pb2
from xcagw.token.v1 import token_service_pb2
from xcagw_common.errors import error_reason
from xcagw_common.grpc_client import check_health
from xcagw_common.testing import RedisServer

API_KEY = "test-api-key-0123456789"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _not(check: Any) -> bool:
    return not await check


def claims_of(compact: str) -> dict[str, Any]:
    payload = compact.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def request(force: bool = False) -> token_service_pb2.GetNhsAccessTokenRequest:
    return token_service_pb2.GetNhsAccessTokenRequest(
        context=common_pb2.RequestContext(correlation_id=str(uuid.uuid4())), force_refresh=force
    )


async def test_assertion_is_rs512_with_nhs_claims_and_verifies_against_the_jwks(
    service: Any, oauth_stub: Any, fetch_jwks: Any
) -> None:
    response = await service.stub.GetNhsAccessToken(request())
    assert oauth_stub.requests == 1
    assert response.access_token == oauth_stub.issued[0]
    assert response.token_type == "Bearer"
    assert not response.from_cache
    # nhs-apis.md §2.2: expires_in arrives as the string "599".
    assert 590 <= response.expires_in_seconds <= 599

    jwks_answer = await service.stub.GetJwks(token_service_pb2.GetJwksRequest())
    keyset, http_answer = await fetch_jwks(service.jwks_url)
    token = jws.JWS()
    token.deserialize(oauth_stub.assertions[0], key=keyset)  # raises unless the signature holds
    assert token.jose_header == {"alg": "RS512", "typ": "JWT", "kid": jwks_answer.active_kid}
    claims = json.loads(token.payload)
    assert claims["iss"] == claims["sub"] == API_KEY
    assert claims["aud"] == oauth_stub.token_url
    assert str(uuid.UUID(claims["jti"])) == claims["jti"]
    assert isinstance(claims["exp"], int) and isinstance(claims["iat"], int)
    assert claims["exp"] - claims["iat"] == 300

    # The JWKS: a {"keys": [...]} set of public RS512 signing keys, cacheable for 60 s.
    assert http_answer.headers["cache-control"] == "public, max-age=60"
    assert http_answer.headers["content-type"].startswith("application/json")
    doc = http_answer.json()
    assert json.loads(jwks_answer.jwks_json) == doc
    assert [k["kid"] for k in doc["keys"]] == [jwks_answer.active_kid]
    for key in doc["keys"]:
        assert key["kty"] == "RSA" and key["alg"] == "RS512" and key["use"] == "sig"
        assert not PRIVATE_MEMBERS & set(key)


async def test_cache_serves_every_replica_until_refresh_and_metrics_move(
    service: Any, oauth_stub: Any
) -> None:
    hits = sample("xcagw_cache_requests_total", cache="nhs-access-token", result="hit")
    misses = sample("xcagw_cache_requests_total", cache="nhs-access-token", result="miss")
    minted = sample("xcagw_tokens_minted_total", kind="nhs_access_token")
    assertions = sample("xcagw_tokens_minted_total", kind="nhs_client_assertion")
    upstream = sample("xcagw_upstream_request_seconds_count", upstream="nhs-oauth", status="200")

    first = await service.stub.GetNhsAccessToken(request())
    second = await service.stub.GetNhsAccessToken(request())
    assert second.from_cache and second.access_token == first.access_token
    assert oauth_stub.requests == 1

    forced = await service.stub.GetNhsAccessToken(request(force=True))
    assert not forced.from_cache and forced.access_token != first.access_token
    assert oauth_stub.requests == 2
    after = await service.stub.GetNhsAccessToken(request())
    assert after.access_token == forced.access_token and after.from_cache

    # Each assertion carries a fresh jti (nhs-apis.md §2.2: reuse is detected).
    jtis = {claims_of(a)["jti"] for a in oauth_stub.assertions}
    assert len(jtis) == 2

    assert sample("xcagw_cache_requests_total", cache="nhs-access-token", result="hit") == hits + 2
    assert (
        sample("xcagw_cache_requests_total", cache="nhs-access-token", result="miss") == misses + 2
    )
    assert sample("xcagw_tokens_minted_total", kind="nhs_access_token") == minted + 2
    assert sample("xcagw_tokens_minted_total", kind="nhs_client_assertion") == assertions + 2
    assert (
        sample("xcagw_upstream_request_seconds_count", upstream="nhs-oauth", status="200")
        == upstream + 2
    )


async def test_reflection_lists_the_token_service(service: Any) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(service.channel)

    async def requests() -> Any:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        yield reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="xcagw.token.v1.TokenService"
        )

    answers = [answer async for answer in stub.ServerReflectionInfo(requests())]
    names = {s.name for s in answers[0].list_services_response.service}
    assert "xcagw.token.v1.TokenService" in names
    assert "grpc.health.v1.Health" in names
    assert answers[1].file_descriptor_response.file_descriptor_proto


async def test_metrics_are_served_over_http(
    settings_for: Any, service_factory: Any, oauth_stub: Any
) -> None:
    async with service_factory(settings_for(metrics_port=0)) as svc:
        await svc.stub.GetNhsAccessToken(request())
        await svc.stub.MintGpConnectJwt(
            token_service_pb2.MintGpConnectJwtRequest(
                context=common_pb2.RequestContext(user_id="u1", organization_name="Org"),
                audience="https://provider.example/B82617/STU3/1/gpconnect/structured/fhir",
            )
        )
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{svc.app.metrics_port}/metrics")).text
    assert 'xcagw_tokens_minted_total{kind="gpconnect_jwt"}' in text
    assert 'xcagw_tokens_minted_total{kind="nhs_access_token"}' in text
    assert 'xcagw_upstream_request_seconds_count{status="200",upstream="nhs-oauth"}' in text
    assert oauth_stub.assertions[0] not in text and oauth_stub.issued[0] not in text


async def test_readiness_follows_redis_and_the_jwks_outlives_an_outage(
    settings_for: Any, service_factory: Any, oauth_stub: Any, fetch_jwks: Any, eventually: Any
) -> None:
    own = RedisServer().start()
    try:
        async with service_factory(settings_for(redis_url=own.url)) as svc:
            oauth_stub.jwks_url = svc.jwks_url
            keyset_before, _ = await fetch_jwks(svc.jwks_url)
            own.kill()
            await eventually(lambda: _not(check_health(svc.channel)))
            assert not await check_health(svc.channel, "xcagw.token.v1.TokenService")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await svc.stub.GetNhsAccessToken(request())
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(err.value) == "CACHE_UNAVAILABLE"
            # The NHS may fetch the JWKS during the outage: the last known keys are served.
            keyset_during, _ = await fetch_jwks(svc.jwks_url)
            assert keyset_during.export(private_keys=False) == keyset_before.export(
                private_keys=False
            )
            own.start()
            await eventually(lambda: check_health(svc.channel))
            answer = await svc.stub.GetNhsAccessToken(request())
            assert answer.access_token
    finally:
        own.stop()
