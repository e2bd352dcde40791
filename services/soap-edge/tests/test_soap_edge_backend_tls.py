"""soap-edge's gRPC channels to the backends: TLS when backend_tls_ca_file is set, mTLS with our
client certificate, checked with a real handshake.

The backend is a real grpc.aio server on a socket, with the credentials every backend builds
(xcagw_common.grpc_server.server_credentials: TLS, and mTLS when a client CA is configured) and
the standard health service. The PKI is generated per module (soap_edge_security_kit.make_cert).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from pydantic import ValidationError
from soap_edge_security_kit import KeyPair, make_cert

from soap_edge.backends import CCDA, GPCONNECT, PDS, TOKEN, Backends
from soap_edge.config import Settings
from xcagw_common.grpc_server import server_credentials
from xcagw_common.settings import BaseServiceSettings

BACKENDS = (PDS, GPCONNECT, CCDA, TOKEN)
TLS_ENV = (
    "SOAP_EDGE_BACKEND_TLS_CA_FILE",
    "SOAP_EDGE_BACKEND_TLS_CERT_FILE",
    "SOAP_EDGE_BACKEND_TLS_KEY_FILE",
)


@dataclass
class BackendPki:
    ca: KeyPair
    server: KeyPair
    client: KeyPair  # soap-edge's client certificate, issued by the backends' CA
    stranger: KeyPair  # a client certificate from a CA the backends do not trust


@pytest.fixture(scope="module")
def backend_pki(tmp_path_factory: pytest.TempPathFactory) -> BackendPki:
    d = tmp_path_factory.mktemp("backend-pki")
    ca = make_cert("xcagw internal CA", ca=True, days=365).write(d, "ca")
    other_ca = make_cert("someone else's CA", ca=True, days=365).write(d, "other-ca")
    return BackendPki(
        ca=ca,
        server=make_cert("localhost", issuer=ca, server=True).write(d, "backend"),
        client=make_cert("soap-edge", issuer=ca, client=True).write(d, "soap-edge"),
        stranger=make_cert("soap-edge", issuer=other_ca, client=True).write(d, "stranger"),
    )


@pytest.fixture(autouse=True)
def _no_tls_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test passes counts (not a variable of the machine running the suite)."""
    for name in TLS_ENV:
        monkeypatch.delenv(name, raising=False)


async def _backend(pki: BackendPki, *, mtls: bool) -> tuple[grpc.aio.Server, str]:
    tls = BaseServiceSettings(
        tls_cert_file=str(pki.server.cert_file),
        tls_key_file=str(pki.server.key_file),
        tls_client_ca_file=str(pki.ca.cert_file) if mtls else "",
    )
    creds = server_credentials(tls)
    assert creds is not None
    server = grpc.aio.server()
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def mtls_backend(backend_pki: BackendPki) -> AsyncIterator[str]:
    """A backend that requires a client certificate from its CA (tls_client_ca_file set)."""
    server, addr = await _backend(backend_pki, mtls=True)
    yield addr
    await server.stop(None)


@pytest.fixture
async def tls_backend(backend_pki: BackendPki) -> AsyncIterator[str]:
    """A backend with server-side TLS only."""
    server, addr = await _backend(backend_pki, mtls=False)
    yield addr
    await server.stop(None)


def edge_settings(addr: str, **tls: Any) -> Settings:
    """soap-edge settings whose four backends are all the server at `addr`."""
    return Settings(
        pds_adapter_addr=addr,
        gpconnect_adapter_addr=addr,
        ccda_converter_addr=addr,
        token_service_addr=addr,
        **tls,
    )


def mtls_files(pki: BackendPki, client: KeyPair | None = None) -> dict[str, str]:
    client = client or pki.client
    return {
        "backend_tls_ca_file": str(pki.ca.cert_file),
        "backend_tls_cert_file": str(client.cert_file),
        "backend_tls_key_file": str(client.key_file),
    }


async def health_of_every_backend(settings: Settings) -> dict[str, bool]:
    backends = Backends(settings)
    try:
        return {name: await backends.health(name, 5.0) for name in BACKENDS}
    finally:
        await backends.close()


async def test_mtls_settings_reach_serving_on_every_backend(
    mtls_backend: str, backend_pki: BackendPki
) -> None:
    settings = edge_settings(mtls_backend, **mtls_files(backend_pki))
    assert await health_of_every_backend(settings) == dict.fromkeys(BACKENDS, True)


async def test_the_env_variables_configure_mtls(
    mtls_backend: str, backend_pki: BackendPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in zip(TLS_ENV, mtls_files(backend_pki).values(), strict=True):
        monkeypatch.setenv(name, value)
    assert await health_of_every_backend(edge_settings(mtls_backend)) == dict.fromkeys(
        BACKENDS, True
    )


@pytest.mark.parametrize("missing", ["client certificate", "all TLS settings"])
async def test_without_our_client_certificate_an_mtls_backend_is_not_serving(
    mtls_backend: str, backend_pki: BackendPki, missing: str
) -> None:
    tls = (
        {}
        if missing == "all TLS settings"
        else {"backend_tls_ca_file": str(backend_pki.ca.cert_file)}
    )
    settings = edge_settings(mtls_backend, **tls)
    assert await health_of_every_backend(settings) == dict.fromkeys(BACKENDS, False)


async def test_a_client_certificate_from_another_ca_is_refused(
    mtls_backend: str, backend_pki: BackendPki
) -> None:
    settings = edge_settings(mtls_backend, **mtls_files(backend_pki, backend_pki.stranger))
    assert await health_of_every_backend(settings) == dict.fromkeys(BACKENDS, False)


async def test_the_ca_alone_gives_tls_to_a_backend_without_mtls(
    tls_backend: str, backend_pki: BackendPki
) -> None:
    with_ca = edge_settings(tls_backend, backend_tls_ca_file=str(backend_pki.ca.cert_file))
    assert await health_of_every_backend(with_ca) == dict.fromkeys(BACKENDS, True)
    # Plaintext to a TLS listener fails: the CA really switches the channels to TLS.
    assert await health_of_every_backend(edge_settings(tls_backend)) == dict.fromkeys(
        BACKENDS, False
    )


async def test_a_backend_certificate_from_an_untrusted_ca_is_refused(
    tls_backend: str, backend_pki: BackendPki
) -> None:
    # Trusting only the stranger's certificate (not the backends' CA) must fail the handshake.
    settings = edge_settings(tls_backend, backend_tls_ca_file=str(backend_pki.stranger.cert_file))
    assert await health_of_every_backend(settings) == dict.fromkeys(BACKENDS, False)


@pytest.fixture
def files(backend_pki: BackendPki) -> dict[str, str]:
    return mtls_files(backend_pki)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (("cert", "ca"), "SOAP_EDGE_BACKEND_TLS_KEY_FILE"),
        (("key", "ca"), "SOAP_EDGE_BACKEND_TLS_CERT_FILE"),
        (("cert", "key"), "needs backend_tls_ca_file (SOAP_EDGE_BACKEND_TLS_CA_FILE)"),
    ],
)
def test_incomplete_tls_settings_stop_start_up_with_the_variable_names(
    files: dict[str, str], monkeypatch: pytest.MonkeyPatch, given: tuple[str, ...], message: str
) -> None:
    env = dict(zip(("ca", "cert", "key"), TLS_ENV, strict=True))
    paths = dict(zip(("ca", "cert", "key"), files.values(), strict=True))
    for which in given:
        monkeypatch.setenv(env[which], paths[which])
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert message in str(raised.value)


def test_a_missing_file_stops_start_up(files: dict[str, str], tmp_path: Path) -> None:
    absent = str(tmp_path / "absent-ca.pem")
    with pytest.raises(ValidationError) as raised:
        Settings(**{**files, "backend_tls_ca_file": absent})
    assert "backend_tls_ca_file (SOAP_EDGE_BACKEND_TLS_CA_FILE): no such file" in str(raised.value)
