"""Fault injection (latency, errors, hangs, 429 bursts, malformed bodies), stats and admin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from xcagw_devstack.sandbox.app import create_app
from xcagw_devstack.sandbox.faults import FaultConfig, FaultInjector, RouteFault
from xcagw_devstack.sandbox.testkit import (
    TEST_API_KEY,
    TEST_BASE,
    KeyRing,
    LiveServer,
    pds_headers,
    sandbox_settings,
    sign_assertion,
    token_form,
)

PDS_URL = "/personal-demographics/FHIR/R4/Patient/9000000009"
SDS_URL = "/spine-directory/FHIR/R4/Device"
SDS_PARAMS = {
    "organization": "https://fhir.nhs.uk/Id/ods-organization-code|Y12345",
    "identifier": "https://fhir.nhs.uk/Id/nhsServiceInteractionId|"
    "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1",
}


async def put_faults(client: httpx.AsyncClient, config: dict[str, Any]) -> None:
    resp = await client.put("/_admin/faults", json=config)
    assert resp.status_code == 200, resp.text


async def test_error_rate_with_chosen_status(client: httpx.AsyncClient, token: str) -> None:
    await put_faults(
        client, {"pds": {"error_rate": 1.0, "error_status": 503, "retry_after_seconds": 7}}
    )
    resp = await client.get(PDS_URL, headers=pds_headers(token))
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "7"
    assert resp.json()["issue"][0]["code"] == "transient"
    # Other APIs are untouched.
    assert (
        await client.get(SDS_URL, params=SDS_PARAMS, headers={"apikey": TEST_API_KEY})
    ).status_code == 200
    await put_faults(client, {"gpconnect": {"error_rate": 1.0, "error_status": 502}})
    resp = await client.post(
        "/gpconnect/Y12345/STU3/1/gpconnect/structured/fhir/Patient/$gpc.getstructuredrecord"
    )
    assert resp.status_code == 502
    assert "ERROR_COMMUNICATING_TO_ENDPOINT_URL" in resp.text


async def test_429_burst_then_recovery(client: httpx.AsyncClient, keys: KeyRing) -> None:
    await put_faults(client, {"oauth": {"burst_429": 2, "retry_after_seconds": 1}})
    statuses = []
    for _ in range(3):
        resp = await client.post("/oauth2/token", data=token_form(sign_assertion(keys.signing)))
        statuses.append(resp.status_code)
    assert statuses == [429, 429, 200]
    stats = (await client.get("/_admin/stats")).json()
    assert stats["requests"]["oauth"] == 3
    assert stats["responses"]["oauth"] == {"200": 1, "429": 2}


async def test_malformed_body(client: httpx.AsyncClient) -> None:
    await put_faults(client, {"sds": {"malformed_rate": 1.0}})
    resp = await client.get(SDS_URL, params=SDS_PARAMS, headers={"apikey": TEST_API_KEY})
    assert resp.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.content)


async def test_latency_still_answers(client: httpx.AsyncClient) -> None:
    await put_faults(client, {"terminology": {"latency_ms": 5, "latency_max_ms": 15}})
    resp = await client.get(
        "/terminology/FHIR/R4/CodeSystem/$lookup",
        params={"system": "https://dmd.nhs.uk", "code": "322236009"},
    )
    assert resp.status_code == 200


def test_latency_distribution_stays_in_range() -> None:
    injector = FaultInjector(seed=1)
    injector.set(FaultConfig(pds=RouteFault(latency_ms=10, latency_max_ms=50)))
    delays = [injector.decide("pds").delay for _ in range(200)]
    assert all(0.010 <= d <= 0.050 for d in delays)
    assert len(set(delays)) > 100
    injector.set(FaultConfig(pds=RouteFault(latency_ms=25)))
    assert {injector.decide("pds").delay for _ in range(5)} == {0.025}


def test_error_rate_is_a_probability_and_seeded() -> None:
    def run() -> list[str]:
        injector = FaultInjector(seed=7)
        injector.set(FaultConfig(sds=RouteFault(error_rate=0.3)))
        return [injector.decide("sds").action for _ in range(1000)]

    first = run()
    assert first == run()
    assert 200 < first.count("error") < 400


async def test_hang_times_the_client_out_over_a_real_socket(jwks_file: Path) -> None:
    settings = sandbox_settings(jwks_file=str(jwks_file))
    with LiveServer(create_app(settings)) as server:
        async with httpx.AsyncClient(base_url=server.url) as c:
            await put_faults(c, {"sds": {"timeout_rate": 1.0, "hang_seconds": 0.8}})
            with pytest.raises(httpx.ReadTimeout):
                await c.get(
                    SDS_URL, params=SDS_PARAMS, headers={"apikey": TEST_API_KEY}, timeout=0.2
                )
            # A patient client sees the gateway timeout after the hang.
            resp = await c.get(
                SDS_URL, params=SDS_PARAMS, headers={"apikey": TEST_API_KEY}, timeout=10
            )
            assert resp.status_code == 504
            (await c.delete("/_admin/faults")).raise_for_status()
            resp = await c.get(
                SDS_URL, params=SDS_PARAMS, headers={"apikey": TEST_API_KEY}, timeout=10
            )
            assert resp.status_code == 200


async def test_faults_file_is_loaded_at_start(tmp_path: Path, jwks_file: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"pds": {"error_rate": 1, "error_status": 500}}))
    app = create_app(sandbox_settings(jwks_file=str(jwks_file), faults_file=str(faults)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=TEST_BASE) as c:
        active = (await c.get("/_admin/faults")).json()
        assert set(active) == {"pds"}
        assert (active["pds"]["error_rate"], active["pds"]["error_status"]) == (1, 500)
        assert (await c.get(PDS_URL)).status_code == 500
        assert (await c.delete("/_admin/faults")).status_code == 200
        assert (await c.get(PDS_URL)).status_code == 401


async def test_invalid_fault_configuration_is_400(client: httpx.AsyncClient) -> None:
    for bad in ({"pds": {"error_rate": 2}}, {"xds": {}}, {"pds": {"surprise": 1}}):
        resp = await client.put("/_admin/faults", json=bad)
        assert resp.status_code == 400
    assert (await client.put("/_admin/faults", content=b"not json")).status_code == 400


async def test_stats_count_each_api_and_reset(client: httpx.AsyncClient, token: str) -> None:
    await client.get(PDS_URL, headers=pds_headers(token))
    await client.get(SDS_URL, params=SDS_PARAMS, headers={"apikey": TEST_API_KEY})
    await client.get("/_health")
    stats = (await client.get("/_admin/stats")).json()
    assert stats["requests"] == {"oauth": 1, "pds": 1, "sds": 1, "gpconnect": 0, "terminology": 0}
    assert stats["responses"]["pds"] == {"200": 1}
    reset = (await client.post("/_admin/stats/reset")).json()
    assert set(reset["requests"].values()) == {0}


async def test_health_and_panel(client: httpx.AsyncClient) -> None:
    assert (await client.get("/_health")).json() == {"status": "pass"}
    panel = (await client.get("/_admin/panel")).json()
    assert len(panel["patients"]) >= 10
    assert {p["ods"] for p in panel["practices"]} >= {"Y12345", "B82617"}


async def test_unknown_path_is_an_operation_outcome(client: httpx.AsyncClient) -> None:
    resp = await client.get("/personal-demographics/FHIR/R4/Nothing")
    assert resp.status_code == 404
    assert resp.json()["resourceType"] == "OperationOutcome"
