"""The real server (soap_edge.__main__): TLS 1.2+ with required client certificates on the partner
listener, partner identity from the TLS connection, and health/metrics on the management
listener only."""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from soap_edge_security_kit import (  # fixtures are imported to be registered here
    AUDIENCE,
    CERT_HEADER,
    Pki,
    good_assertion,
    pki,
    registry,
    security_xml,
)
from soap_edge_testkit import JANE, NHS_OID, envelope, pdq_body, read_response

from soap_edge import healthcheck
from soap_edge.__main__ import build_management_server, build_server
from soap_edge.config import Settings
from xcagw_common.testing import free_port

__all__ = ["pki"]

PDQ = "urn:hl7-org:v3:PRPA_IN201305UV02"


def client_context(pki: Pki, cert: Any | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert_file))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    return ctx


async def test_mtls_partner_listener_and_management_listener(
    settings: Settings, pki: Pki, fakes: Any
) -> None:
    tls_settings = settings.model_copy(
        update={
            "port": 0,
            "management_port": free_port(),
            "tls_cert_file": str(pki.server.cert_file),
            "tls_key_file": str(pki.server.key_file),
            "tls_client_ca_file": str(pki.ca.cert_file),
            "partner_registry": registry(pki),
            "allow_insecure_dev_partners": False,
            "xua_audiences": [AUDIENCE],
        }
    )
    server, sock = build_server(tls_settings)
    management = build_management_server(tls_settings, server.config.app.app)
    assert management is not None
    mgmt_server, mgmt_sock = management
    port, mport = sock.getsockname()[1], mgmt_sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    mtask = asyncio.create_task(mgmt_server.serve(sockets=[mgmt_sock]))
    try:
        while not (server.started and mgmt_server.started):  # noqa: ASYNC110 - uvicorn flags
            await asyncio.sleep(0.02)
        url = f"https://127.0.0.1:{port}"
        body = envelope(
            PDQ,
            pdq_body(ids=[(NHS_OID, JANE)]),
            extra_headers=security_xml(good_assertion(pki)),
        )
        headers = {"content-type": "application/soap+xml; charset=UTF-8"}
        async with httpx.AsyncClient(verify=client_context(pki, pki.partner), timeout=10) as c:
            ok = await c.post(f"{url}/iti47", content=body, headers=headers)
            assert ok.status_code == 200, ok.text
            parsed = read_response(ok)
            assert parsed.xpath("string(//h:queryAck/h:queryResponseCode/@code)") == "OK"
            assert fakes.state.last_context.partner_id == "epic"
            # A certificate header means nothing on a TLS connection from an untrusted peer.
            spoof = {**headers, CERT_HEADER: quote(pki.stranger.cert_pem)}
            assert (await c.post(f"{url}/iti47", content=body, headers=spoof)).status_code == 200
            # Health and metrics are not on the partner listener once a management port exists.
            assert (await c.get(f"{url}/health/ready")).status_code == 404
            assert (await c.get(f"{url}/metrics")).status_code == 404
        async with httpx.AsyncClient(verify=client_context(pki, pki.stranger), timeout=10) as c:
            unknown = await c.post(f"{url}/iti47", content=body, headers=headers)
            assert unknown.status_code == 400
            assert b"wsse:FailedAuthentication" in unknown.content
        async with httpx.AsyncClient(verify=client_context(pki, None), timeout=10) as c:
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                await c.post(f"{url}/iti47", content=body, headers=headers)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{mport}", timeout=10) as m:
            assert (await m.get("/health/ready")).status_code == 200
            assert b"xcagw_partner_requests_total" in (await m.get("/metrics")).content
            assert (await m.post("/iti47", content=body, headers=headers)).status_code == 404
        os.environ["SOAP_EDGE_MANAGEMENT_PORT"] = str(mport)
        try:
            assert await asyncio.to_thread(healthcheck.main) == 0
        finally:
            del os.environ["SOAP_EDGE_MANAGEMENT_PORT"]
    finally:
        mgmt_server.should_exit = True
        server.should_exit = True
        await asyncio.wait_for(asyncio.gather(task, mtask), 15)
