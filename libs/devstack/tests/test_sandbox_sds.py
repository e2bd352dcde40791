"""SDS FHIR fake: Device and Endpoint lookups per ODS code, apikey and parameter errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from xcagw_devstack.sandbox.panel import PANEL, PRACTICES, get_practice
from xcagw_devstack.sandbox.testkit import TEST_API_KEY, TEST_BASE

DEVICE = "/spine-directory/FHIR/R4/Device"
ENDPOINT = "/spine-directory/FHIR/R4/Endpoint"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
INTERACTION = "https://fhir.nhs.uk/Id/nhsServiceInteractionId"
PARTY_KEY = "https://fhir.nhs.uk/Id/nhsMhsPartyKey"
GET_STRUCTURED = "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1"
HEADERS = {"apikey": TEST_API_KEY, "X-Request-ID": "60E0B220-8136-4CA5-AE46-1D97EF59D068"}


def _ids(resource: dict[str, Any]) -> dict[str, str]:
    return {i["system"]: i["value"] for i in resource["identifier"]}


@pytest.mark.parametrize("practice", [p for p in PRACTICES if p.in_sds], ids=lambda p: p.ods)
async def test_device_then_endpoint_for_each_practice(
    client: httpx.AsyncClient, practice: Any
) -> None:
    params = [
        ("organization", f"{ODS}|{practice.ods}"),
        ("identifier", f"{INTERACTION}|{GET_STRUCTURED}"),
    ]
    resp = await client.get(DEVICE, params=params, headers=HEADERS)
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] == HEADERS["X-Request-ID"]
    bundle = resp.json()
    assert (bundle["resourceType"], bundle["type"], bundle["total"]) == ("Bundle", "searchset", 1)
    device = bundle["entry"][0]["resource"]
    ids = _ids(device)
    assert ids["https://fhir.nhs.uk/Id/nhsSpineASID"] == practice.asid
    assert ids[PARTY_KEY] == practice.party_key
    assert device["owner"]["identifier"]["value"] == practice.ods

    params.append(("identifier", f"{PARTY_KEY}|{ids[PARTY_KEY]}"))
    endpoints = (await client.get(ENDPOINT, params=params, headers=HEADERS)).json()
    assert endpoints["total"] == 1
    endpoint = endpoints["entry"][0]["resource"]
    assert (
        endpoint["address"]
        == f"{TEST_BASE}/gpconnect/{practice.ods}/STU3/1/gpconnect/structured/fhir"
    )
    assert _ids(endpoint)[PARTY_KEY] == practice.party_key


async def test_every_panel_gp_resolves_consistently(client: httpx.AsyncClient) -> None:
    """PDS GP ODS -> SDS -> the practice the GP Connect fake serves, for the whole panel."""
    for patient in PANEL:
        if patient.gp_ods is None:
            continue
        practice = get_practice(patient.gp_ods)
        assert practice is not None
        params = {
            "organization": f"{ODS}|{patient.gp_ods}",
            "identifier": f"{INTERACTION}|{GET_STRUCTURED}",
        }
        total = (await client.get(DEVICE, params=params, headers=HEADERS)).json()["total"]
        assert total == (1 if practice.in_sds else 0)


@pytest.mark.parametrize("ods", ["Y90004", "ZZZ999"])
async def test_unknown_or_unregistered_ods_gives_empty_bundle(
    client: httpx.AsyncClient, ods: str
) -> None:
    for path in (DEVICE, ENDPOINT):
        params = {"organization": f"{ODS}|{ods}", "identifier": f"{INTERACTION}|{GET_STRUCTURED}"}
        body = (await client.get(path, params=params, headers=HEADERS)).json()
        assert body["total"] == 0
        assert body["entry"] == []


async def test_other_interactions_are_not_registered(client: httpx.AsyncClient) -> None:
    params = {
        "organization": f"{ODS}|Y12345",
        "identifier": f"{INTERACTION}|urn:nhs:names:services:gpconnect:fhir:rest:search:patient-1",
    }
    assert (await client.get(DEVICE, params=params, headers=HEADERS)).json()["total"] == 0


@pytest.mark.parametrize(
    ("headers", "params", "expected"),
    [
        (
            {},
            {"organization": f"{ODS}|Y12345", "identifier": f"{INTERACTION}|{GET_STRUCTURED}"},
            (401, "ACCESS_DENIED"),
        ),
        (
            {"apikey": "wrong"},
            {"organization": f"{ODS}|Y12345", "identifier": f"{INTERACTION}|{GET_STRUCTURED}"},
            (401, "ACCESS_DENIED"),
        ),
        (HEADERS, {"identifier": f"{INTERACTION}|{GET_STRUCTURED}"}, (400, "MISSING_VALUE")),
        (
            HEADERS,
            {"organization": "Y12345", "identifier": f"{INTERACTION}|{GET_STRUCTURED}"},
            (400, "INVALID_VALUE"),
        ),
        (HEADERS, {"organization": f"{ODS}|Y12345"}, (400, "MISSING_VALUE")),
        (
            HEADERS,
            {
                "organization": f"{ODS}|Y12345",
                "identifier": f"https://example.org|{GET_STRUCTURED}",
            },
            (400, "INVALID_VALUE"),
        ),
        (
            HEADERS,
            {"organization": f"{ODS}|Y12345", "identifier": "no-pipe"},
            (400, "INVALID_VALUE"),
        ),
        (
            HEADERS,
            {
                "organization": f"{ODS}|Y12345",
                "identifier": f"{INTERACTION}|{GET_STRUCTURED}",
                "x": "1",
            },
            (400, "INVALID_VALUE"),
        ),
        (
            {**HEADERS, "X-Request-ID": "not-a-uuid"},
            {"organization": f"{ODS}|Y12345", "identifier": f"{INTERACTION}|{GET_STRUCTURED}"},
            (400, "INVALID_VALUE"),
        ),
    ],
)
async def test_device_errors(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    params: dict[str, str],
    expected: tuple[int, str],
) -> None:
    resp = await client.get(DEVICE, params=params, headers=headers)
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    assert (resp.status_code, body["issue"][0]["details"]["coding"][0]["code"]) == expected


async def test_endpoint_needs_an_identifier(client: httpx.AsyncClient) -> None:
    resp = await client.get(ENDPOINT, params={"organization": f"{ODS}|Y12345"}, headers=HEADERS)
    assert resp.status_code == 400
