"""NHS OAuth fake: signed-JWT client credentials, every error path, JWKS file/URL and rotation."""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from jwcrypto import jwt
from starlette.responses import JSONResponse

from xcagw_devstack.sandbox.app import create_app
from xcagw_devstack.sandbox.testkit import (
    TEST_API_KEY,
    TEST_BASE,
    KeyRing,
    LiveServer,
    free_port,
    jwks_of,
    pds_headers,
    rsa_key,
    sandbox_settings,
    sign_assertion,
    token_form,
)

TOKEN_URL = f"{TEST_BASE}/oauth2/token"


def _error(resp: httpx.Response) -> tuple[int, str, str]:
    body = resp.json()
    assert body["message_id"]
    return resp.status_code, body["error"], body["error_description"]


async def test_valid_assertion_gets_an_opaque_token(
    client: httpx.AsyncClient, keys: KeyRing
) -> None:
    resp = await client.post("/oauth2/token", data=token_form(sign_assertion(keys.signing)))
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"access_token", "expires_in", "token_type", "issued_at"}
    assert body["expires_in"] == "599"
    assert body["token_type"] == "Bearer"
    assert body["issued_at"].isdigit()
    assert body["access_token"].count(".") == 0
    pds = await client.get(
        "/personal-demographics/FHIR/R4/Patient/9000000009",
        headers=pds_headers(body["access_token"]),
    )
    assert pds.status_code == 200


class _SECONDS_FROM_NOW:  # noqa: N801 - reads as a value in the parameter table
    """An `exp` relative to when the test runs."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


@pytest.mark.parametrize(
    ("claims", "drop", "header", "expected"),
    [
        ({"sub": "other"}, (), None, (400, "Missing or non-matching iss/sub claims in JWT")),
        ({"iss": "other"}, (), None, (400, "Missing or non-matching iss/sub claims in JWT")),
        ({}, ("sub",), None, (400, "Missing or non-matching iss/sub claims in JWT")),
        ({"iss": "invalid", "sub": "invalid"}, (), None, (401, "Invalid iss/sub claims in JWT")),
        (
            {"aud": "https://int.api.service.nhs.uk/oauth2/token"},
            (),
            None,
            (401, "Missing or invalid aud claim in JWT"),
        ),
        ({}, ("aud",), None, (401, "Missing or invalid aud claim in JWT")),
        ({}, ("jti",), None, (400, "Missing jti claim in JWT")),
        ({"jti": 1234567890}, (), None, (400, "Failed to decode JWT")),
        ({}, ("exp",), None, (400, "Missing exp claim in JWT")),
        ({"exp": "invalid"}, (), None, (400, "Failed to decode JWT")),
        (
            {"exp": _SECONDS_FROM_NOW(-20)},
            (),
            None,
            (400, "Invalid exp claim in JWT - JWT has expired"),
        ),
        (
            {"exp": _SECONDS_FROM_NOW(360)},
            (),
            None,
            (400, "Invalid exp claim in JWT - more than 5 minutes in future"),
        ),
        ({}, (), {"kid": None}, (400, "Missing 'kid' header in JWT")),
        ({}, (), {"kid": "invalid"}, (401, "Invalid 'kid' header in JWT - no matching public key")),
    ],
)
async def test_claim_and_header_errors(
    client: httpx.AsyncClient,
    keys: KeyRing,
    claims: dict[str, Any],
    drop: tuple[str, ...],
    header: dict[str, Any] | None,
    expected: tuple[int, str],
) -> None:
    # Relative times are resolved now, not at collection: the suite may run minutes later.
    claims = {
        k: int(time.time()) + v.offset if isinstance(v, _SECONDS_FROM_NOW) else v
        for k, v in claims.items()
    }
    assertion = sign_assertion(keys.signing, claims=claims, drop=drop, header=header)
    resp = await client.post("/oauth2/token", data=token_form(assertion))
    status, error, description = _error(resp)
    assert (status, description) == expected
    assert error == "invalid_request"


async def test_wrong_algorithm_is_refused(client: httpx.AsyncClient, keys: KeyRing) -> None:
    token = jwt.JWT(
        header={"alg": "RS256", "kid": "test-1"},
        claims={
            "iss": TEST_API_KEY,
            "sub": TEST_API_KEY,
            "aud": TOKEN_URL,
            "jti": str(uuid.uuid4()),
            "exp": int(time.time()) + 60,
        },
    )
    token.make_signed_token(keys.signing)
    resp = await client.post("/oauth2/token", data=token_form(token.serialize()))
    assert _error(resp) == (
        400,
        "invalid_request",
        "Invalid 'alg' header in JWT - unsupported JWT algorithm - must be 'RS512'",
    )


async def test_key_not_in_jwks_is_refused(client: httpx.AsyncClient, keys: KeyRing) -> None:
    # A key with the registered kid but other key material: the signature does not verify.
    resp = await client.post("/oauth2/token", data=token_form(sign_assertion(keys.rogue)))
    assert resp.status_code == 401
    assert _error(resp)[2] == "Signature verification failed"
    # A key whose kid is not published at all.
    resp = await client.post("/oauth2/token", data=token_form(sign_assertion(keys.rotated)))
    assert _error(resp) == (
        401,
        "invalid_request",
        "Invalid 'kid' header in JWT - no matching public key",
    )
    stats = (await client.get("/_admin/stats")).json()
    assert stats["responses"]["oauth"] == {"401": 2}


async def test_jti_cannot_be_reused(client: httpx.AsyncClient, keys: KeyRing) -> None:
    assertion = sign_assertion(keys.signing)
    first = await client.post("/oauth2/token", data=token_form(assertion))
    assert first.status_code == 200
    second = await client.post("/oauth2/token", data=token_form(assertion))
    assert _error(second) == (400, "invalid_request", "Non-unique jti claim in JWT")


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"grant_type": None}, (400, "invalid_request", "grant_type is missing")),
        (
            {"grant_type": "authorization_code"},
            (400, "unsupported_grant_type", "grant_type is invalid"),
        ),
        (
            {"client_assertion_type": "invalid"},
            (
                400,
                "invalid_request",
                "Missing or invalid client_assertion_type - must be "
                "'urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
        ),
        (
            {"client_assertion_type": None},
            (
                400,
                "invalid_request",
                "Missing or invalid client_assertion_type - must be "
                "'urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
        ),
        ({"client_assertion": None}, (400, "invalid_request", "Missing client_assertion")),
        (
            {"client_assertion": "invalid"},
            (400, "invalid_request", "Malformed JWT in client_assertion"),
        ),
        (
            {"client_assertion": "a.b.c"},
            (400, "invalid_request", "Malformed JWT in client_assertion"),
        ),
    ],
)
async def test_form_errors(
    client: httpx.AsyncClient,
    keys: KeyRing,
    form: dict[str, str | None],
    expected: tuple[int, str, str],
) -> None:
    data: dict[str, str | None] = {**token_form(sign_assertion(keys.signing)), **form}
    resp = await client.post("/oauth2/token", data={k: v for k, v in data.items() if v is not None})
    assert _error(resp) == expected


async def test_no_registered_key_is_403() -> None:
    key = rsa_key("test-1")
    app = create_app(sandbox_settings(jwks_file="", jwks_url=""))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=TEST_BASE) as c:
        resp = await c.post("/oauth2/token", data=token_form(sign_assertion(key)))
    assert _error(resp) == (
        403,
        "public_key error",
        "You need to register a public key to use this authentication method "
        "- please contact support to configure",
    )


async def test_unreachable_jwks_url_is_403(keys: KeyRing) -> None:
    app = create_app(sandbox_settings(jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=TEST_BASE) as c:
        resp = await c.post("/oauth2/token", data=token_form(sign_assertion(keys.signing)))
    assert _error(resp) == (
        403,
        "public_key error",
        "The JWKS endpoint, for your client_assertion can't be reached",
    )


async def test_bare_jwk_is_not_a_jwks(tmp_path: Any, keys: KeyRing) -> None:
    # Xhuma published a bare JWK instead of {"keys": [...]}: no key can match.
    path = tmp_path / "bare.json"
    path.write_text(keys.signing.export_public())
    app = create_app(sandbox_settings(jwks_file=str(path)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=TEST_BASE) as c:
        resp = await c.post("/oauth2/token", data=token_form(sign_assertion(keys.signing)))
    assert _error(resp)[2] == "Invalid 'kid' header in JWT - no matching public key"


async def test_jwks_file_rotation(tmp_path: Any, keys: KeyRing) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_of(keys.signing)))
    app = create_app(sandbox_settings(jwks_file=str(path)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=TEST_BASE) as c:
        assert (
            await c.post("/oauth2/token", data=token_form(sign_assertion(keys.rotated)))
        ).status_code == 401
        path.write_text(json.dumps(jwks_of(keys.signing, keys.rotated)))
        # A different mtime is what makes the sandbox re-read the file.
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
        assert (
            await c.post("/oauth2/token", data=token_form(sign_assertion(keys.rotated)))
        ).status_code == 200
        assert (
            await c.post("/oauth2/token", data=token_form(sign_assertion(keys.signing)))
        ).status_code == 200


async def test_jwks_url_rotation_end_to_end_over_sockets(keys: KeyRing) -> None:
    """A JWKS host (like token-service) and the sandbox on real sockets; keys rotate live."""
    published: dict[str, Any] = jwks_of(keys.signing)
    jwks_app = FastAPI()

    @jwks_app.get("/jwks.json")
    async def jwks() -> JSONResponse:
        return JSONResponse(published)

    sandbox_port = free_port()
    jwks_port = free_port()
    settings = sandbox_settings(
        public_url=f"http://127.0.0.1:{sandbox_port}",
        jwks_url=f"http://127.0.0.1:{jwks_port}/jwks.json",
        jwks_cache_seconds=300,
    )
    with LiveServer(jwks_app, jwks_port), LiveServer(create_app(settings), sandbox_port) as sandbox:
        token_url = f"{sandbox.url}/oauth2/token"
        async with httpx.AsyncClient(base_url=sandbox.url, timeout=10) as c:

            async def status(key: Any) -> int:
                assertion = sign_assertion(key, token_url=token_url)
                return (await c.post("/oauth2/token", data=token_form(assertion))).status_code

            assert await status(keys.signing) == 200
            assert await status(keys.rotated) == 401
            # Step 1 of a rotation: publish the new key next to the old one. The unknown kid
            # forces a refetch although the cache would still be fresh.
            published["keys"] = jwks_of(keys.signing, keys.rotated)["keys"]
            assert await status(keys.rotated) == 200
            assert await status(keys.signing) == 200
            # Step 3: withdraw the old key; it stays usable until the cache expires, then fails.
            published["keys"] = jwks_of(keys.rotated)["keys"]
            (await c.post("/_admin/stats/reset")).raise_for_status()
            assert await status(keys.rotated) == 200
            stats = (await c.get("/_admin/stats")).json()
            assert stats["requests"]["oauth"] == 1


async def test_force_expired_tokens_are_refused(client: httpx.AsyncClient, token: str) -> None:
    url = "/personal-demographics/FHIR/R4/Patient/9000000009"
    assert (await client.get(url, headers=pds_headers(token))).status_code == 200
    resp = await client.post("/_admin/tokens/expire")
    assert resp.json() == {"expired": 1}
    resp = await client.get(url, headers=pds_headers(token))
    assert resp.status_code == 401
    assert resp.json()["issue"][0]["diagnostics"] == "Invalid Access Token"


async def test_expire_one_token(client: httpx.AsyncClient, keys: KeyRing) -> None:
    first = (
        await client.post("/oauth2/token", data=token_form(sign_assertion(keys.signing)))
    ).json()
    second = (
        await client.post("/oauth2/token", data=token_form(sign_assertion(keys.signing)))
    ).json()
    resp = await client.post("/_admin/tokens/expire", json={"access_token": first["access_token"]})
    assert resp.json() == {"expired": 1}
    url = "/personal-demographics/FHIR/R4/Patient/9000000009"
    assert (await client.get(url, headers=pds_headers(first["access_token"]))).status_code == 401
    assert (await client.get(url, headers=pds_headers(second["access_token"]))).status_code == 200
