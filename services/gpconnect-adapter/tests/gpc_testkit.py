"""Helpers of the gpconnect-adapter component tests (the fixtures live in conftest.py).

The rig:

Real parts only: a redis-server on a free port, the NHS sandbox (FastAPI under uvicorn, in a
thread), token-service and pds-adapter as their own processes (their console scripts, like the
launcher runs them), and the adapter under test served by `xcagw_common.grpc_server.serve` in the
test's event loop on a real socket. The one test double is `FakeSsp`, a Spine Secure Proxy in
front of the sandbox (TLS with a required client certificate) that forwards requests or answers
with an error body from the NHS reference examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gpconnect_adapter.app import create_app
from gpconnect_adapter.config import Settings
from xcagw.common.v1 import common_pb2
from xcagw.gpconnect.v1 import gpconnect_adapter_pb2, gpconnect_adapter_pb2_grpc
from xcagw_common.errors import error_info
from xcagw_common.grpc_client import check_health
from xcagw_common.grpc_server import serve
from xcagw_common.testing import free_port, shared_dir

API_KEY = "xcagw-test-api-key"
SDS_API_KEY = "xcagw-test-sds-key"
CONSUMER_ASID = "200000000359"
VENV_BIN = Path(sys.executable).parent


def request_context(**overrides: str) -> common_pb2.RequestContext:
    """A RequestContext as soap-edge builds it from an XUA assertion."""
    values = {
        "correlation_id": "corr-gpc-test",
        "partner_id": "partner-test",
        "user_id": "555021935107",
        "user_name": "Dr Jane Doe",
        "user_role": "158965000",
        "organization_name": "Leeds Teaching Hospitals",
        "organization_id": "RR8",
        "purpose_of_use": "TREATMENT",
        "transaction": "ITI-38",
    }
    values.update(overrides)
    return common_pb2.RequestContext(**values)


# --------------------------------------------------------------------------------------------
# Certificates (throwaway CA, server and client certs) for the mTLS tests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertSet:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _issue(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_certs(directory: Path, prefix: str) -> CertSet:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{prefix} test CA")])
    ca_cert = _issue(f"{prefix} test CA", ca_key, ca_name, ca_key, ca=True)
    paths = CertSet(
        ca=directory / f"{prefix}-ca.pem",
        server_cert=directory / f"{prefix}-server.pem",
        server_key=directory / f"{prefix}-server.key",
        client_cert=directory / f"{prefix}-client.pem",
        client_key=directory / f"{prefix}-client.key",
    )
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, server in (
        (paths.server_cert, paths.server_key, True),
        (paths.client_cert, paths.client_key, False),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue("localhost" if server else "client", key, ca_name, ca_key, server=server)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
    return paths


# --------------------------------------------------------------------------------------------
# HTTP servers in threads (sandbox, fake SSP)
# --------------------------------------------------------------------------------------------


class ThreadedServer:
    """An ASGI app under uvicorn in a background thread (its own event loop)."""

    def __init__(self, app: Any, port: int, **config: Any) -> None:
        self.port = port
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="off",
                access_log=False,
                **config,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class Sandbox:
    """The running NHS sandbox plus its admin API."""

    url: str
    client: httpx.Client

    def stats(self) -> dict[str, Any]:
        response = self.client.get("/_admin/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def requests(self, api: str) -> int:
        return int(self.stats()["requests"][api])

    def reset_stats(self) -> None:
        self.client.post("/_admin/stats/reset").raise_for_status()

    def set_faults(self, faults: dict[str, Any]) -> None:
        self.client.put("/_admin/faults", json=faults).raise_for_status()

    def clear_faults(self) -> None:
        self.client.delete("/_admin/faults").raise_for_status()

    def panel(self) -> dict[str, Any]:
        result: dict[str, Any] = self.client.get("/_admin/panel").json()
        return result


@dataclass
class Ports:
    sandbox: int = field(default_factory=free_port)
    token: int = field(default_factory=free_port)
    jwks: int = field(default_factory=free_port)
    pds: int = field(default_factory=free_port)
    ssp: int = field(default_factory=free_port)


# --------------------------------------------------------------------------------------------
# token-service and pds-adapter as processes
# --------------------------------------------------------------------------------------------


def _serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


class ServiceProcess:
    """A service's console script with its environment, awaited until health is SERVING."""

    def __init__(self, name: str, port: int, env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.port = port
        self.log_path = logdir / f"{name}.log"
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TOKEN_SERVICE_", "PDS_ADAPTER_", "GPCONNECT_ADAPTER_"))
        }
        base.update({"OTEL_SDK_DISABLED": "true", "PYTHONUNBUFFERED": "1", **env})
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(VENV_BIN / name)], env=base, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_serving(self, timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if _serving(self.port):
                return
            time.sleep(0.2)
        self.stop()
        log = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not become SERVING; log tail:\n{log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


@dataclass
class Dependencies:
    token_addr: str
    pds_addr: str
    redis_base: str


# --------------------------------------------------------------------------------------------
# Fake Spine Secure Proxy (the one test double: the SSP boundary)
# --------------------------------------------------------------------------------------------


@dataclass
class FakeSsp:
    """`https://127.0.0.1:port/{provider address}/...`: forwards to the provider, or answers a
    canned (status, body) when one is set. Requires a client certificate like the real SSP."""

    url: str
    canned: tuple[int, bytes] | None = None
    seen_paths: list[str] = field(default_factory=list)
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    seen_bodies: list[bytes] = field(default_factory=list)

    def app(self) -> Starlette:
        async def proxy(request: Request) -> Response:
            raw_path = request.scope.get("raw_path", b"").decode() or request.url.path
            self.seen_paths.append(raw_path)
            self.seen_headers.append(dict(request.headers))
            self.seen_bodies.append(await request.body())
            if self.canned is not None:
                status, body = self.canned
                return Response(body, status_code=status, media_type="application/fhir+json")
            # The SSP path is the provider's full URL (GP Connect "absolute request").
            target = raw_path[1:]
            forward = {
                k: v
                for k, v in request.headers.items()
                if k.lower() not in ("host", "content-length")
            }
            async with httpx.AsyncClient(timeout=30) as client:
                upstream = await client.post(target, content=await request.body(), headers=forward)
            return Response(
                upstream.content,
                status_code=upstream.status_code,
                media_type=upstream.headers.get("content-type"),
            )

        return Starlette(routes=[Route("/{rest:path}", proxy, methods=["POST"])])


# --------------------------------------------------------------------------------------------
# The adapter under test
# --------------------------------------------------------------------------------------------


@dataclass
class RunningAdapter:
    settings: Settings
    port: int
    channel: grpc.aio.Channel
    stub: Any  # GpConnectAdapterServiceStub (async)


@contextlib.asynccontextmanager
async def run_adapter(
    overrides: dict[str, Any],
    *,
    channel_credentials: grpc.ChannelCredentials | None = None,
    wait_ready: bool = True,
) -> AsyncIterator[RunningAdapter]:
    """Serve the adapter on a real port in this event loop; stop it afterwards."""
    settings = Settings(**overrides)
    async with Redis.from_url(settings.redis_url.get_secret_value()) as redis:
        await redis.flushdb()
    app = create_app(settings)
    # One readiness round at start only. xcagw_common.grpc_server's readiness loop can swallow
    # its cancellation when it lands during a check (asyncio.wait_for on Python 3.11), which
    # stalls shutdown; tests therefore stop adapters only between rounds (see the report).
    app.readiness_interval_seconds = 3600.0
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, stop_event=stop))
    try:
        for _ in range(500):
            if app.bound_port or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        target = f"127.0.0.1:{app.bound_port}"
        # Like xcagw_common.grpc_client.create_channel: records can exceed gRPC's 4 MiB default.
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        channel = (
            grpc.aio.secure_channel(target, channel_credentials, options=options)
            if channel_credentials is not None
            else grpc.aio.insecure_channel(target, options=options)
        )
        async with channel:
            if wait_ready:
                for _ in range(100):
                    if await check_health(channel):
                        break
                    await asyncio.sleep(0.05)
            yield RunningAdapter(
                settings,
                app.bound_port,
                channel,
                gpconnect_adapter_pb2_grpc.GpConnectAdapterServiceStub(channel),
            )
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


def shared_errors_dir() -> Path:
    path = shared_dir() / "nhs" / "gpconnect" / "errors"
    if not path.is_dir():
        pytest.skip(f"NHS reference examples not found at {path} (set XCAGW_SHARED_DIR)")
    return path


def via_ssp(ssp: FakeSsp, certs: CertSet, **more: Any) -> dict[str, Any]:
    """Settings overrides that route GP Connect calls through the fake SSP with our client cert."""
    return {
        "ssp_prefix": ssp.url,
        "ssp_client_cert_file": str(certs.client_cert),
        "ssp_client_key_file": str(certs.client_key),
        "ssp_ca_file": str(certs.ca),
        **more,
    }


@dataclass
class RpcFailure:
    code: grpc.StatusCode
    reason: str
    metadata: dict[str, str]
    details: str


async def rpc_error(call: Any) -> RpcFailure:
    """Await a call that must fail; its status code, ErrorInfo reason and metadata."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        info = error_info(exc)
        return RpcFailure(
            exc.code(),
            info.reason if info is not None else "",
            dict(info.metadata) if info is not None else {},
            exc.details() or "",
        )
    raise AssertionError("the call succeeded but was expected to fail")


def record_request(
    nhs: str, options: Any = None, **context: str
) -> gpconnect_adapter_pb2.GetStructuredRecordRequest:
    """GetStructuredRecord for `nhs`; every clinical area unless `options` is given."""
    return gpconnect_adapter_pb2.GetStructuredRecordRequest(
        context=request_context(**context),
        nhs_number=nhs,
        options=options if options is not None else gpconnect_adapter_pb2.RecordOptions(all=True),
    )
