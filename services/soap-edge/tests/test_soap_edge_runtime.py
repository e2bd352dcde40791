"""Health, metrics, Redis keys and TTLs, settings, and a real uvicorn server on a socket."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import redis
from soap_edge_testkit import (
    CEID_OID,
    HCID,
    JANE,
    NHS_OID,
    REPO,
    UNIQUE_ID,
    envelope,
    find_documents,
    pdq_body,
    post,
    read_response,
    retrieve_body,
)

from soap_edge import healthcheck
from soap_edge.__main__ import build_server
from soap_edge.config import Settings
from soap_edge.store import key
from xcagw_common.testing import free_port, wait_for_port

PDQ = "urn:hl7-org:v3:PRPA_IN201305UV02"
XCQ = "urn:ihe:iti:2007:CrossGatewayQuery"


async def test_liveness_and_readiness(client, fakes) -> None:
    live = await client.get("/health/live")
    assert live.status_code == 200 and live.json() == {"status": "live"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {
        "redis",
        "pds-adapter",
        "gpconnect-adapter",
        "ccda-converter",
        "token-service",
    }
    fakes.set_serving("ccda-converter", False)
    not_ready = await client.get("/health/ready")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["ccda-converter"] == "failing"


async def test_readiness_follows_redis(client, redis_server) -> None:
    assert (await client.get("/health/ready")).status_code == 200
    redis_server.kill()
    try:
        resp = await client.get("/health/ready")
        assert resp.status_code == 503 and resp.json()["checks"]["redis"] == "failing"
        assert (await client.get("/health/live")).status_code == 200
    finally:
        redis_server.start()
    assert (await client.get("/health/ready")).status_code == 200


async def test_metrics(client) -> None:
    await post(client, "/iti47", envelope(PDQ, pdq_body(ids=[(NHS_OID, JANE)])))
    await post(client, "/iti47", b"garbage")
    text = (await client.get("/metrics")).text
    assert 'xcagw_soap_requests_total{outcome="success",transaction="ITI-47"}' in text
    assert 'xcagw_soap_faults_total{code="Sender",subcode=""}' in text
    assert "xcagw_soap_request_seconds_bucket" in text
    assert JANE not in text


async def test_redis_keys_and_ttls(client, redis_server) -> None:
    await post(
        client, "/iti47", envelope(PDQ, pdq_body(ids=[(NHS_OID, JANE), (CEID_OID, "EPIC7")]))
    )
    resp = await post(client, "/iti38", envelope(XCQ, find_documents()))
    parsed = read_response(resp)
    uid = parsed.xpath(UNIQUE_ID)
    entry = parsed.xpath("string(//rim:ExtrinsicObject/@id)")
    r = redis.Redis(port=redis_server.port)
    day = 24 * 3600
    for k in (
        key("doc", uid),
        key("entry", entry),
        key("patient-doc", JANE),
        key("session", "anonymous", uid),
    ):
        assert day - 60 < r.ttl(k) <= day, k
    # CEID pairings are per partner (the dev partner here is "anonymous").
    assert 29 * day < r.ttl(key("ceid", "anonymous", CEID_OID, "EPIC7")) <= 30 * day
    assert r.get(key("nhs-ceid", "anonymous", JANE, CEID_OID)) == b"EPIC7"
    assert not r.exists(key("ceid", CEID_OID, "EPIC7"))
    assert r.hget(key("doc", uid), "entry_uuid").decode() == entry
    assert not r.keys(key("lock", "*"))  # the generation lock was released


async def test_retention_is_configurable(client, redis_server) -> None:
    client.app.state.settings.document_retention_seconds = 120
    resp = await post(client, "/iti38", envelope(XCQ, find_documents()))
    uid = read_response(resp).xpath(UNIQUE_ID)
    assert 0 < redis.Redis(port=redis_server.port).ttl(key("doc", uid)) <= 120


def test_settings_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("SOAP_EDGE_HOME_COMMUNITY_ID", "urn:oid:1.2.3.4")
    monkeypatch.setenv("SOAP_EDGE_DOCUMENT_RETENTION_SECONDS", "3600")
    monkeypatch.setenv("SOAP_EDGE_CEID_DOMAINS", '["1.2.3.9", "urn:oid:1.2.3.10"]')
    monkeypatch.setenv("PDS_ADAPTER_ADDR", "pds:50052")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6380/1")
    settings = Settings()
    assert settings.home_community_id == "1.2.3.4" and settings.hcid == "urn:oid:1.2.3.4"
    assert settings.document_retention_seconds == 3600
    assert settings.ceid_domains == ["1.2.3.9", "1.2.3.10"]
    assert settings.pds_adapter_addr == "pds:50052"
    assert settings.redis_url.get_secret_value() == "redis://cache:6380/1"
    assert "cache:6380" not in repr(settings)
    assert Settings(_env_file=None).max_request_bytes == 10 * 1024 * 1024  # type: ignore[call-arg]
    monkeypatch.setenv("SOAP_EDGE_PROCESSING_CODE", "X")
    with pytest.raises(ValueError, match="processing_code"):
        Settings()


async def test_real_uvicorn_on_a_socket(settings) -> None:
    server, sock = build_server(settings.model_copy(update={"port": 0}))
    port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            pdq = await post(http, "/iti47", envelope(PDQ, pdq_body(ids=[(NHS_OID, JANE)])))
            assert pdq.status_code == 200
            assert (
                read_response(pdq).xpath("string(//h:queryAck/h:queryResponseCode/@code)") == "OK"
            )
            found = read_response(await post(http, "/iti38", envelope(XCQ, find_documents())))
            uid = found.xpath(UNIQUE_ID)
            got = await post(
                http,
                "/iti39",
                envelope("urn:ihe:iti:2007:CrossGatewayRetrieve", retrieve_body((HCID, REPO, uid))),
            )
            parsed = read_response(got)
            assert (
                got.headers["content-type"].startswith("multipart/related")
                and len(parsed.attachments) == 1
            )
            assert (await http.get("/health/ready")).status_code == 200
            # SoapEndpoints outermost: the SOAP POSTs above skipped FastAPI's stack but not the
            # hardening layer; GETs and unknown paths still go through FastAPI.
            assert got.headers["x-content-type-options"] == "nosniff"
            assert pdq.headers["x-content-type-options"] == "nosniff"
            wsdl = await http.get("/iti38?wsdl")
            assert wsdl.status_code == 200 and b"<definitions" in wsdl.content
            assert wsdl.headers["x-content-type-options"] == "nosniff"
            missing = await http.post("/nowhere", content=b"<x/>")
            assert missing.status_code == 404
            assert missing.headers["content-type"].startswith("application/soap+xml")
            # The container HEALTHCHECK command against the same server.
            os.environ["SOAP_EDGE_PORT"] = str(port)
            try:
                assert await asyncio.to_thread(healthcheck.main) == 0
            finally:
                del os.environ["SOAP_EDGE_PORT"]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def test_console_script_starts_and_stops_on_sigterm(redis_server, fakes) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SOAP_EDGE_PORT": str(port),
        "REDIS_URL": redis_server.url,
        "PDS_ADAPTER_ADDR": fakes.addrs["pds-adapter"],
        "GPCONNECT_ADAPTER_ADDR": fakes.addrs["gpconnect-adapter"],
        "CCDA_CONVERTER_ADDR": fakes.addrs["ccda-converter"],
        "TOKEN_SERVICE_ADDR": fakes.addrs["token-service"],
        "OTEL_SDK_DISABLED": "true",
    }
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "soap_edge"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=30)
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out.decode()
        assert b'"service.name": "soap-edge"' in out  # JSON logs
        assert b"Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_checker_cli_strict_on_saved_responses(client, conformance, tmp_path) -> None:
    """The same checker as a CLI (`validate_check.py --strict`) exits 0 on our responses."""
    if not conformance.available:
        pytest.skip("../shared/conformance is absent")
    found = await post(client, "/iti38", envelope(XCQ, find_documents()))
    uid = read_response(found).xpath(UNIQUE_ID)
    retrieve = envelope("urn:ihe:iti:2007:CrossGatewayRetrieve", retrieve_body((HCID, REPO, uid)))
    responses = {
        "iti47.xml": await post(client, "/iti47", envelope(PDQ, pdq_body(ids=[(NHS_OID, JANE)]))),
        "iti38.xml": found,
        "iti39.mtom.txt": await post(client, "/iti39", retrieve),
        "fault.xml": await post(client, "/iti38", b"<not-soap/>"),
    }
    paths = []
    for name, resp in responses.items():
        path = tmp_path / name
        path.write_bytes(resp.content)
        paths.append(str(path))
    cmd = [sys.executable, str(conformance.dir / "validate_check.py"), "--strict", "-q", *paths]
    result = await asyncio.to_thread(
        subprocess.run, cmd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASS") == 4
