"""Helpers for tests that talk to the NHS sandbox (development and tests only).

Sign NHS client assertions, build unsigned GP Connect JWTs, headers and Parameters, and serve an
ASGI app over a real socket. No pytest dependency, so e2e suites can use it too.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from jwcrypto import jwk, jwt

from xcagw_devstack.sandbox.config import SandboxSettings
from xcagw_devstack.sandbox.sds import GET_STRUCTURED, structured_base

TEST_BASE = "http://sandbox.test"
TEST_API_KEY = "test-api-key"
CONSUMER_ASID = "200000000359"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"


def sandbox_settings(**overrides: Any) -> SandboxSettings:
    """Settings for an in-process sandbox at TEST_BASE (no rate limit to speak of)."""
    values: dict[str, Any] = {
        "public_url": TEST_BASE,
        "api_key": TEST_API_KEY,
        "sds_api_key": TEST_API_KEY,
        "pds_rate_limit_per_second": 10_000,
        "consumer_asid": CONSUMER_ASID,
        "jwks_file": "",
        "jwks_url": "",
        "faults_file": "",
        "seed": 0,
    }
    values.update(overrides)
    return SandboxSettings(**values)


def rsa_key(kid: str, size: int = 2048) -> jwk.JWK:
    """An RSA signing key (NHS asks for 4096 bits; tests use 2048 for speed)."""
    return jwk.JWK.generate(kty="RSA", size=size, kid=kid, alg="RS512", use="sig")


@dataclass(frozen=True)
class KeyRing:
    """Keys for OAuth tests: `signing` (kid test-1, published), `rotated` (kid test-2, published
    only after a rotation) and `rogue` (kid test-1 but other key material, never published)."""

    signing: jwk.JWK
    rotated: jwk.JWK
    rogue: jwk.JWK

    @classmethod
    def generate(cls) -> KeyRing:
        return cls(signing=rsa_key("test-1"), rotated=rsa_key("test-2"), rogue=rsa_key("test-1"))


def jwks_of(*keys: jwk.JWK) -> dict[str, Any]:
    """The public JWKS (`{"keys": [...]}`) of `keys`."""
    return {"keys": [json.loads(k.export_public()) for k in keys]}


def sign_assertion(
    key: jwk.JWK,
    *,
    token_url: str = f"{TEST_BASE}/oauth2/token",
    api_key: str = TEST_API_KEY,
    claims: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    header: dict[str, Any] | None = None,
) -> str:
    """An NHS client assertion (RS512 with kid); `claims` override, `drop` removes claims, a
    header value of None removes that header."""
    body: dict[str, Any] = {
        "iss": api_key,
        "sub": api_key,
        "aud": token_url,
        "jti": str(uuid.uuid4()),
        "exp": int(time.time()) + 240,
    }
    body.update(claims or {})
    for name in drop:
        body.pop(name, None)
    hdr: dict[str, Any] = {"alg": "RS512", "typ": "JWT", "kid": key.get("kid")}
    hdr.update(header or {})
    token = jwt.JWT(header={k: v for k, v in hdr.items() if v is not None}, claims=body)
    token.make_signed_token(key)
    return str(token.serialize())


def token_form(assertion: str) -> dict[str, str]:
    """The x-www-form-urlencoded body of a token request."""
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }


async def fetch_token(
    client: httpx.AsyncClient, key: jwk.JWK, *, token_url: str = f"{TEST_BASE}/oauth2/token"
) -> str:
    """An access token from the sandbox at `client`'s base URL."""
    resp = await client.post(
        "/oauth2/token", data=token_form(sign_assertion(key, token_url=token_url))
    )
    resp.raise_for_status()
    return str(resp.json()["access_token"])


def pds_headers(token: str, **extra: str) -> dict[str, str]:
    """Bearer token plus a fresh X-Request-ID."""
    return {"Authorization": f"Bearer {token}", "X-Request-ID": str(uuid.uuid4()), **extra}


def _b64url(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def gpc_claims(aud: str, **overrides: Any) -> dict[str, Any]:
    """GP Connect audit claims ("Cross organisation audit and provenance") for `aud`."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "https://gateway.example.nhs.uk",
        "sub": "practitioner-1",
        "aud": aud,
        "exp": now + 300,
        "iat": now,
        "reason_for_request": "directcare",
        "requested_scope": "patient/*.read",
        "requesting_device": {
            "resourceType": "Device",
            "identifier": [{"system": "https://gateway.example.nhs.uk", "value": "xcagw"}],
            "model": "xcagw",
            "version": "0.1.0",
        },
        "requesting_organization": {
            "resourceType": "Organization",
            "identifier": [
                {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RR8"}
            ],
            "name": "LEEDS TEACHING HOSPITALS NHS TRUST",
        },
        "requesting_practitioner": {
            "resourceType": "Practitioner",
            "id": "practitioner-1",
            "name": [{"family": "Cone", "given": ["Stephen"], "prefix": ["Dr"]}],
            "identifier": [
                {"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "UNK"},
                {"system": "https://fhir.nhs.uk/Id/sds-role-profile-id", "value": "UNK"},
                {"system": "https://gateway.example.nhs.uk/user-id", "value": "scone"},
            ],
        },
    }
    claims.update(overrides)
    return claims


def gpc_jwt(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """The unsigned GP Connect JWT: base64url(header).base64url(claims). (empty signature)."""
    return f"{_b64url(header or {'alg': 'none', 'typ': 'JWT'})}.{_b64url(claims)}."


def gpc_headers(
    ods: str, asid: str, *, base: str = TEST_BASE, **overrides: str | None
) -> dict[str, str]:
    """Ssp-* headers, media types and a valid JWT for the practice `ods` (ASID `asid`).

    Keyword overrides use the header names with `_` for `-` (Ssp_From=...); None drops a header.
    """
    headers: dict[str, str | None] = {
        "Ssp-TraceID": str(uuid.uuid4()),
        "Ssp-From": CONSUMER_ASID,
        "Ssp-To": asid,
        "Ssp-InteractionID": GET_STRUCTURED,
        "Content-Type": "application/fhir+json;charset=utf-8",
        "Accept": "application/fhir+json;charset=utf-8",
        "Authorization": f"Bearer {gpc_jwt(gpc_claims(structured_base(base, ods)))}",
    }
    for name, value in overrides.items():
        headers[name.replace("_", "-")] = value
    return {k: v for k, v in headers.items() if v is not None}


def parameters(nhs: str, *params: dict[str, Any]) -> dict[str, Any]:
    """A `$gpc.getstructuredrecord` Parameters resource."""
    return {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "patientNHSNumber",
                "valueIdentifier": {"system": NHS_NUMBER_SYSTEM, "value": nhs},
            },
            *params,
        ],
    }


ALL_AREAS: tuple[dict[str, Any], ...] = (
    {
        "name": "includeAllergies",
        "part": [{"name": "includeResolvedAllergies", "valueBoolean": True}],
    },
    {
        "name": "includeMedication",
        "part": [{"name": "includePrescriptionIssues", "valueBoolean": True}],
    },
    {"name": "includeConsultations"},
    {"name": "includeProblems"},
    {"name": "includeImmunisations"},
    {"name": "includeUncategorisedData"},
    {"name": "includeInvestigations"},
    {"name": "includeReferrals"},
    {"name": "includeDiaryEntries"},
)
"""Every clinical area, no filters (what a full C-CDA needs)."""


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """An ASGI app served by uvicorn on a real socket in a background thread (context manager)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
