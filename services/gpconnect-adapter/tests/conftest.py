"""Fixtures of the gpconnect-adapter component tests; helpers are in gpc_testkit.py."""

from __future__ import annotations

import shutil
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# Test modules import the helpers by name (pytest runs with --import-mode=importlib).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpc_testkit import (  # noqa: E402
    API_KEY,
    CONSUMER_ASID,
    SDS_API_KEY,
    CertSet,
    Dependencies,
    FakeSsp,
    Ports,
    RunningAdapter,
    Sandbox,
    ServiceProcess,
    ThreadedServer,
    make_certs,
    run_adapter,
)

from xcagw_common.testing_container import TestRedis, redis_for_tests  # noqa: E402
from xcagw_devstack.sandbox.app import create_app as create_sandbox_app  # noqa: E402
from xcagw_devstack.sandbox.config import SandboxSettings  # noqa: E402


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="xcagw-gpc-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def certs(workdir: Path) -> CertSet:
    """One CA issuing the adapter's server cert and a client cert (soap-edge's identity)."""
    return make_certs(workdir, "grpc")


@pytest.fixture(scope="session")
def ssp_certs(workdir: Path) -> CertSet:
    """Another CA for the SSP: the proxy's server cert and our NHS-issued client cert."""
    return make_certs(workdir, "ssp")


@pytest.fixture(scope="session")
def ports() -> Ports:
    return Ports()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[TestRedis]:
    with redis_for_tests() as server:
        yield server


@pytest.fixture(scope="session")
def sandbox_server(ports: Ports) -> Iterator[Sandbox]:
    url = f"http://127.0.0.1:{ports.sandbox}"
    settings = SandboxSettings(
        port=ports.sandbox,
        public_url=url,
        api_key=API_KEY,
        sds_api_key=SDS_API_KEY,
        jwks_url=f"http://127.0.0.1:{ports.jwks}/.well-known/jwks.json",
        consumer_asid=CONSUMER_ASID,
        pds_rate_limit_per_second=1000,
    )
    server = ThreadedServer(create_sandbox_app(settings), ports.sandbox).start()
    with httpx.Client(base_url=url, timeout=10) as client:
        yield Sandbox(url, client)
    server.stop()


@pytest.fixture
def sandbox(sandbox_server: Sandbox) -> Iterator[Sandbox]:
    """The sandbox with zeroed request counts; faults are cleared afterwards."""
    sandbox_server.clear_faults()
    sandbox_server.reset_stats()
    yield sandbox_server
    sandbox_server.clear_faults()


@pytest.fixture(scope="session")
def dependencies(
    ports: Ports, redis_server: TestRedis, sandbox_server: Sandbox, workdir: Path
) -> Iterator[Dependencies]:
    """token-service and pds-adapter, real, talking to the sandbox (Redis db 0)."""
    redis_url = f"redis://127.0.0.1:{redis_server.port}/0"
    (workdir / "keys").mkdir(exist_ok=True)
    token = ServiceProcess(
        "token-service",
        ports.token,
        {
            "REDIS_URL": redis_url,
            "TOKEN_SERVICE_HOST": "127.0.0.1",
            "TOKEN_SERVICE_PORT": str(ports.token),
            "TOKEN_SERVICE_METRICS_PORT": "-1",
            "TOKEN_SERVICE_JWKS_HTTP_PORT": str(ports.jwks),
            "TOKEN_SERVICE_KEYS_DIR": str(workdir / "keys"),
            "TOKEN_SERVICE_AUTO_GENERATE_KEY": "true",
            "TOKEN_SERVICE_KEY_BITS": "2048",
            "TOKEN_SERVICE_API_KEY": API_KEY,
            "TOKEN_SERVICE_TOKEN_URL": f"{sandbox_server.url}/oauth2/token",
            "TOKEN_SERVICE_GPC_ISSUER": "https://xcagw.test/gateway",
            "TOKEN_SERVICE_GPC_CONSUMER_ASID": CONSUMER_ASID,
            "TOKEN_SERVICE_GPC_DEFAULT_ODS_CODE": "RR8",
            "TOKEN_SERVICE_GPC_DEFAULT_ORGANISATION_NAME": "Leeds Teaching Hospitals",
        },
        workdir,
    )
    # Both start at once (pds-adapter turns SERVING once token-service is): a faster start.
    pds = ServiceProcess(
        "pds-adapter",
        ports.pds,
        {
            "REDIS_URL": redis_url,
            "PDS_ADAPTER_HOST": "127.0.0.1",
            "PDS_ADAPTER_PORT": str(ports.pds),
            "PDS_ADAPTER_METRICS_PORT": "-1",
            "PDS_ADAPTER_BASE_URL": f"{sandbox_server.url}/personal-demographics/FHIR/R4",
            "TOKEN_SERVICE_ADDR": f"127.0.0.1:{ports.token}",
        },
        workdir,
    )
    try:
        token.wait_serving()
        pds.wait_serving()
        yield Dependencies(
            token_addr=f"127.0.0.1:{ports.token}",
            pds_addr=f"127.0.0.1:{ports.pds}",
            redis_base=f"redis://127.0.0.1:{redis_server.port}",
        )
    finally:
        pds.stop()
        token.stop()


@pytest.fixture(scope="session")
def ssp_server(ports: Ports, ssp_certs: CertSet) -> Iterator[FakeSsp]:
    ssp = FakeSsp(url=f"https://127.0.0.1:{ports.ssp}")
    server = ThreadedServer(
        ssp.app(),
        ports.ssp,
        ssl_certfile=str(ssp_certs.server_cert),
        ssl_keyfile=str(ssp_certs.server_key),
        ssl_ca_certs=str(ssp_certs.ca),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    ).start()
    yield ssp
    server.stop()


@pytest.fixture
def ssp(ssp_server: FakeSsp) -> Iterator[FakeSsp]:
    ssp_server.canned = None
    ssp_server.seen_paths.clear()
    ssp_server.seen_headers.clear()
    ssp_server.seen_bodies.clear()
    yield ssp_server
    ssp_server.canned = None


@pytest.fixture
def adapter_settings(dependencies: Dependencies, sandbox_server: Sandbox) -> dict[str, Any]:
    """Settings for a sandbox-backed adapter; tests override what they exercise."""
    return {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": -1,
        "shutdown_grace_seconds": 0.2,
        # db 1: the adapter's own cache, flushed per test (the dependencies use db 0).
        "redis_url": f"{dependencies.redis_base}/1",
        "sds_base_url": f"{sandbox_server.url}/spine-directory/FHIR/R4",
        "sds_api_key": SDS_API_KEY,
        "consumer_asid": CONSUMER_ASID,
        "pds_adapter_addr": dependencies.pds_addr,
        "token_service_addr": dependencies.token_addr,
        "gpconnect_timeout_seconds": 10.0,
        "sds_timeout_seconds": 5.0,
        "retry_backoff_base_seconds": 0.01,
        "retry_backoff_max_seconds": 0.05,
        "retry_after_max_seconds": 0.1,
        "request_deadline_seconds": 30.0,
    }


@pytest.fixture
async def adapter(
    adapter_settings: dict[str, Any], sandbox: Sandbox
) -> AsyncIterator[RunningAdapter]:
    """The adapter with the default sandbox settings."""
    async with run_adapter(adapter_settings) as running:
        yield running
