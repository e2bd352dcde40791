"""GetNhsAccessToken against the OAuth stub: the NHS error table, leaks, odd answers."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from token_service import oauth, servicer
from xcagw.common.v1 import common_pb2
from xcagw.token.v1 import token_service_pb2
from xcagw_common.errors import error_info, error_reason
from xcagw_common.testing import free_port

S = grpc.StatusCode


def request(force: bool = False) -> token_service_pb2.GetNhsAccessTokenRequest:
    return token_service_pb2.GetNhsAccessTokenRequest(
        context=common_pb2.RequestContext(correlation_id=str(uuid.uuid4())), force_refresh=force
    )


def _error(description: str, error: str = "invalid_request") -> dict[str, str]:
    return {"error": error, "error_description": description, "message_id": "rrt-1"}


# nhs-apis.md §2.3 and the NHS identity service wording ("in client_assertion JWT").
NHS_FAILURES = [
    (
        400,
        _error(
            "Invalid 'alg' header in client_assertion JWT - "
            "unsupported JWT algorithm - must be 'RS512'"
        ),
        S.INTERNAL,
        "OAUTH_INVALID_ALG",
    ),
    (400, _error("Missing 'kid' header in JWT"), S.INTERNAL, "OAUTH_MISSING_KID"),
    (
        401,
        _error("Invalid 'kid' header in JWT - no matching public key"),
        S.FAILED_PRECONDITION,
        "OAUTH_INVALID_KID",
    ),
    (
        400,
        _error("Invalid 'typ' header in client_assertion JWT - must be 'JWT'"),
        S.INTERNAL,
        "OAUTH_INVALID_TYP",
    ),
    (
        400,
        _error("Missing or non-matching iss/sub claims in JWT"),
        S.INTERNAL,
        "OAUTH_ISS_SUB_MISMATCH",
    ),
    (
        401,
        _error("Invalid 'iss'/'sub' claims in client_assertion JWT"),
        S.FAILED_PRECONDITION,
        "OAUTH_UNKNOWN_API_KEY",
    ),
    (
        401,
        _error("Missing or invalid aud claim in JWT"),
        S.FAILED_PRECONDITION,
        "OAUTH_INVALID_AUD",
    ),
    (400, _error("Missing jti claim in JWT"), S.INTERNAL, "OAUTH_INVALID_JTI"),
    (400, _error("Non-unique jti claim in JWT"), S.ABORTED, "OAUTH_JTI_REUSED"),
    (400, _error("Missing exp claim in JWT"), S.INTERNAL, "OAUTH_INVALID_EXP"),
    (
        400,
        _error("Invalid exp claim in JWT - JWT has expired"),
        S.FAILED_PRECONDITION,
        "OAUTH_ASSERTION_EXPIRED",
    ),
    (
        400,
        _error("Invalid exp claim in JWT - more than 5 minutes in future"),
        S.FAILED_PRECONDITION,
        "OAUTH_ASSERTION_TOO_LONG",
    ),
    (400, _error("Failed to decode JWT"), S.INTERNAL, "OAUTH_MALFORMED_ASSERTION"),
    (400, _error("Malformed JWT in client_assertion"), S.INTERNAL, "OAUTH_MALFORMED_ASSERTION"),
    (400, _error("Missing client_assertion"), S.INTERNAL, "OAUTH_INVALID_REQUEST"),
    (
        400,
        _error(
            "Missing or invalid client_assertion_type - "
            "must be 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ),
        S.INTERNAL,
        "OAUTH_INVALID_REQUEST",
    ),
    (
        400,
        _error("grant_type is invalid", "unsupported_grant_type"),
        S.INTERNAL,
        "OAUTH_UNSUPPORTED_GRANT_TYPE",
    ),
    (400, {"error": "unsupported_grant_type"}, S.INTERNAL, "OAUTH_UNSUPPORTED_GRANT_TYPE"),
    (
        403,
        _error(
            "You need to register a public key to use this authentication method - "
            "please contact support to configure",
            "public_key error",
        ),
        S.FAILED_PRECONDITION,
        "OAUTH_PUBLIC_KEY_NOT_REGISTERED",
    ),
    (
        403,
        _error("The JWKS endpoint, for your client_assertion can't be reached", "public_key error"),
        S.UNAVAILABLE,
        "OAUTH_JWKS_UNREACHABLE",
    ),
    (
        401,
        _error("JWT signature verification failed", "public_key error"),
        S.FAILED_PRECONDITION,
        "OAUTH_INVALID_SIGNATURE",
    ),
    (401, {"error": "access_denied"}, S.FAILED_PRECONDITION, "OAUTH_UNAUTHORIZED"),
    (404, "<html>not found</html>", S.FAILED_PRECONDITION, "OAUTH_REJECTED"),
    (
        429,
        _error("rate limit exceeded", "too_many_requests"),
        S.RESOURCE_EXHAUSTED,
        "OAUTH_RATE_LIMITED",
    ),
    (500, _error("internal error", "server_error"), S.UNAVAILABLE, "OAUTH_UPSTREAM_ERROR"),
    (502, "<html>Bad Gateway</html>", S.UNAVAILABLE, "OAUTH_UPSTREAM_ERROR"),
    (302, "", S.UNAVAILABLE, "OAUTH_UNEXPECTED_STATUS"),
    (200, {"access_token": "x"}, S.UNAVAILABLE, "OAUTH_MALFORMED_RESPONSE"),
    (200, {"access_token": "x", "expires_in": "soon"}, S.UNAVAILABLE, "OAUTH_MALFORMED_RESPONSE"),
    (200, "<html>captive portal</html>", S.UNAVAILABLE, "OAUTH_MALFORMED_RESPONSE"),
]


async def test_every_oauth_failure_maps_to_a_documented_status_without_leaks(
    service: Any, oauth_stub: Any
) -> None:
    doc = servicer.__doc__ or ""
    for status, canned, code, reason in NHS_FAILURES:
        body = canned
        if isinstance(body, dict) and "error_description" in body:
            # An upstream echoing the assertion back must not make us leak it.
            body = dict(body, error_description=body["error_description"] + " {assertion}")
        oauth_stub.respond_with = (status, body)
        oauth_stub.requests = 0
        oauth_stub.assertions.clear()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await service.stub.GetNhsAccessToken(request())
        case = f"HTTP {status} {canned!r}"
        assert (err.value.code(), error_reason(err.value)) == (code, reason), case
        assert oauth_stub.requests == 1, case
        assert f"| {code.name}" in doc and f"| {reason}" in doc, case
        info = error_info(err.value)
        assert info is not None, case
        exposed = " ".join([err.value.details() or "", *info.metadata.values(), info.reason])
        assertion = oauth_stub.assertions[0]
        for part in assertion.split("."):
            assert part not in exposed, case
        assert "test-api-key" not in exposed, case


def test_scrub_removes_token_like_text_and_given_secrets() -> None:
    # secret-scan: allow (a fake token, to test that scrubbing removes token-like text)
    assertion = "eyJhbGciOiJSUzUxMiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz"  # secret-scan: allow
    failure = oauth.map_oauth_error(400, _error("Failed to decode JWT " + assertion), ["k3y"])
    assert assertion not in failure.message and "[redacted]" in failure.message
    secret = oauth.map_oauth_error(400, _error("unknown client k3y"), ["k3y"])
    assert "k3y" not in secret.message
    assert len(oauth.map_oauth_error(400, _error("x" * 5000)).message) < 300


async def test_unreachable_token_endpoint_is_unavailable_without_the_url(
    settings_for: Any, service_factory: Any
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/oauth2/token"
    async with service_factory(settings_for(token_url=closed)) as svc:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await svc.stub.GetNhsAccessToken(request())
        assert (err.value.code(), error_reason(err.value)) == (S.UNAVAILABLE, "OAUTH_UNREACHABLE")
        assert closed not in (err.value.details() or "")


async def test_an_audience_other_than_the_token_url_is_a_configuration_error(
    service: Any, oauth_stub: Any
) -> None:
    # The stub now expects another aud, as when token_url points at the wrong environment.
    oauth_stub.token_url = "https://int.api.service.nhs.uk/oauth2/token"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await service.stub.GetNhsAccessToken(request())
    assert (err.value.code(), error_reason(err.value)) == (
        S.FAILED_PRECONDITION,
        "OAUTH_INVALID_AUD",
    )


async def test_integer_expires_in_is_accepted_and_short_tokens_are_not_shared(
    service: Any, oauth_stub: Any
) -> None:
    oauth_stub.expires_in = 30  # shorter than the 60 s refresh skew
    first = await service.stub.GetNhsAccessToken(request())
    assert 0 < first.expires_in_seconds <= 30
    second = await service.stub.GetNhsAccessToken(request())
    assert not second.from_cache and second.access_token != first.access_token
    assert oauth_stub.requests == 2


@pytest.mark.parametrize(
    "description",
    [
        "Invalid 'kid' header in JWT - no matching public key",
        "Invalid 'kid' header in client_assertion JWT - no matching public key",
    ],
)
def test_both_nhs_wordings_map_alike(description: str) -> None:
    failure = oauth.map_oauth_error(401, _error(description))
    assert (failure.code, failure.reason) == (S.FAILED_PRECONDITION, "OAUTH_INVALID_KID")
    assert failure.metadata == {"upstream_status": "401", "upstream_error": "invalid_request"}


def test_every_reason_in_the_code_is_documented() -> None:
    doc = servicer.__doc__ or ""
    reasons = {rule[2] for rule in oauth._DESCRIPTION_RULES}
    reasons |= {rule[1] for rule in oauth._ERROR_CODE_RULES.values()}
    for reason in reasons:
        assert f"| {reason}" in doc, reason
