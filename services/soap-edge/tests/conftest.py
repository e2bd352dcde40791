"""Fixtures for soap-edge tests: real redis-server, fake backends on real sockets, the app."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from xcagw_common.testing_container import TestRedis, redis_for_tests

# Test modules import the kit by name; --import-mode=importlib does not add this folder itself.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from soap_edge_testkit import (  # noqa: E402
    HCID_OID,
    REPO,
    Conformance,
    FakeBackends,
    SoapResponse,
    read_response,
)

from soap_edge.app import create_app  # noqa: E402
from soap_edge.config import Settings  # noqa: E402


@pytest.fixture(scope="session")
def redis_server() -> Iterator[TestRedis]:
    with redis_for_tests() as server:
        yield server


@pytest.fixture(scope="session")
def fakes() -> Iterator[FakeBackends]:
    backends = FakeBackends().start()
    yield backends
    backends.stop()


@pytest.fixture(scope="session")
def conformance() -> Conformance:
    return Conformance()


@pytest.fixture
def clean(redis_server: TestRedis, fakes: FakeBackends) -> None:
    redis.Redis(port=redis_server.port).flushall()
    fakes.reset()


DEV_PARTNERS: dict[str, Any] = {
    "anonymous_partner": "anonymous",
    "partners": [{"id": "anonymous", "saml": {"required": False, "verify": False}}],
}


def make_settings(redis_url: str, fakes: FakeBackends, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "pds_adapter_addr": fakes.addrs["pds-adapter"],
        "gpconnect_adapter_addr": fakes.addrs["gpconnect-adapter"],
        "ccda_converter_addr": fakes.addrs["ccda-converter"],
        "token_service_addr": fakes.addrs["token-service"],
        "home_community_id": HCID_OID,
        "repository_unique_id": REPO,
        "readiness_timeout_seconds": 0.5,
        # Development partner (as make run's): no client certificate, XUA read but not verified.
        # The security layer itself is tested with real partners in test_security_*.py.
        "partner_registry": DEV_PARTNERS,
        "allow_insecure_dev_partners": True,
        # Tests change PDS answers between requests (restriction, outages) and expect the next
        # request to see it; the PDS check cache and its bound are tested on their own
        # (test_soap_edge_caches.py).
        "pds_check_cache_seconds": 0,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def settings(redis_server: TestRedis, fakes: FakeBackends, clean: None) -> Settings:
    return make_settings(redis_server.url, fakes)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://soap-edge.test") as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


@pytest.fixture
def check(conformance: Conformance, tmp_path: Path) -> Callable[..., SoapResponse]:
    """Parse a response and run the conformance checker on it (strict: 0 errors, 0 warnings)."""

    def _check(resp: httpx.Response, *, allow_warnings: tuple[str, ...] = ()) -> SoapResponse:
        parsed = read_response(resp)
        conformance.check(resp.content, tmp_path, allow_warnings=allow_warnings)
        return parsed

    return _check
