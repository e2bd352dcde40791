"""HTTP hardening middleware: headers, banners, CORS, size limits, internal endpoints."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from lxml import etree

from soap_edge.security.headers import HardeningConfig, HardeningMiddleware

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    """Reads the whole body and answers its size, with a banner the middleware must strip."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"server", b"uvicorn"), (b"x-powered-by", b"python")],
        }
    )
    await send({"type": "http.response.body", "body": str(size).encode()})


def client(config: HardeningConfig | None = None, *, https: bool = False) -> httpx.AsyncClient:
    app = HardeningMiddleware(echo_app, config)
    base = "https://gw.test" if https else "http://gw.test"
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


def fault_reason(resp: httpx.Response) -> str:
    root = etree.fromstring(resp.content)
    assert root.tag == f"{{{SOAP12}}}Envelope"
    assert resp.headers["content-type"].startswith("application/soap+xml")
    return str(root.findtext(f".//{{{SOAP12}}}Text"))


async def test_security_headers_and_no_banner() -> None:
    async with client() as c:
        resp = await c.post("/xca", content=b"<x/>")
    assert resp.status_code == 200 and resp.text == "4"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    assert "server" not in resp.headers and "x-powered-by" not in resp.headers
    assert "strict-transport-security" not in resp.headers
    assert "access-control-allow-origin" not in resp.headers


async def test_hsts_over_https() -> None:
    async with client(https=True) as c:
        resp = await c.post("/xca", content=b"x")
    assert resp.headers["strict-transport-security"].startswith("max-age=")


async def test_declared_body_too_large_is_refused_before_the_app() -> None:
    async with client(HardeningConfig(max_body_bytes=1024)) as c:
        resp = await c.post("/xca", content=b"x" * 2048)
    assert resp.status_code == 413
    assert "larger than 1024" in fault_reason(resp)


async def test_streamed_body_too_large_is_refused() -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield b"y" * 512

    async with client(HardeningConfig(max_body_bytes=1024)) as c:
        resp = await c.post("/xca", content=chunks())
    assert resp.status_code == 413
    assert "larger than 1024" in fault_reason(resp)


async def test_too_many_or_too_large_headers() -> None:
    async with client(HardeningConfig(max_headers=20, max_header_bytes=2048)) as c:
        many = {f"x-h{i}": "v" for i in range(30)}
        resp = await c.post("/xca", content=b"x", headers=many)
        assert resp.status_code == 431
        resp = await c.post("/xca", content=b"x", headers={"x-big": "v" * 4096})
        assert resp.status_code == 431
    assert "headers too large" in fault_reason(resp)


async def test_cors_is_off_by_default() -> None:
    async with client() as c:
        preflight = await c.options(
            "/xca",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        resp = await c.post("/xca", content=b"x", headers={"origin": "https://evil.example"})
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in resp.headers


async def test_cors_for_configured_origins() -> None:
    config = HardeningConfig(cors_origins=frozenset({"https://portal.example"}))
    async with client(config) as c:
        preflight = await c.options(
            "/xca",
            headers={"origin": "https://portal.example", "access-control-request-method": "POST"},
        )
        resp = await c.post("/xca", content=b"x", headers={"origin": "https://portal.example"})
        other = await c.post("/xca", content=b"x", headers={"origin": "https://evil.example"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://portal.example"
    assert resp.headers["access-control-allow-origin"] == "https://portal.example"
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("path", ["/health/ready", "/health/live", "/metrics"])
async def test_internal_endpoints_hidden_unless_allowed(path: str) -> None:
    hidden = HardeningConfig(internal_allowed=lambda scope: False)
    async with client(hidden) as c:
        resp = await c.get(path)
    assert resp.status_code == 404
    assert "No SOAP endpoint" in fault_reason(resp)
    async with client() as c:
        assert (await c.get(path)).status_code == 200
