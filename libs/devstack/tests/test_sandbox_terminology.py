"""Terminology fake: CodeSystem/$lookup for the dm+d concepts the generator prescribes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from xcagw_devstack.sandbox import dmd
from xcagw_devstack.sandbox.synthetic import generate_bundle

LOOKUP = "/terminology/FHIR/R4/CodeSystem/$lookup"


def props(body: dict[str, Any], code: str) -> list[list[dict[str, Any]]]:
    return [
        p["part"]
        for p in body["parameter"]
        if p["name"] == "property" and p["part"][0]["valueCode"] == code
    ]


def value(body: dict[str, Any], name: str) -> Any:
    return next(p for p in body["parameter"] if p["name"] == name)["valueString"]


async def test_vmp_lookup_with_vpi_route_and_parent(client: httpx.AsyncClient) -> None:
    params = [("system", dmd.DMD_SYSTEM), ("code", "322236009")] + [
        ("property", p) for p in ("VPI", "ROUTECD", "parent")
    ]
    resp = await client.get(LOOKUP, params=params)
    assert resp.status_code == 200
    body = resp.json()
    assert body["resourceType"] == "Parameters"
    assert value(body, "name") == "dm+d"
    assert value(body, "display") == "Paracetamol 500mg tablets"
    parents = [p[1]["valueCode"] for p in props(body, "parent")]
    assert parents == ["90332006", "VMP"]
    (vpi,) = props(body, "VPI")
    subs = {s["part"][0]["valueCode"]: s["part"][1] for s in vpi[1:]}
    assert subs["ISID"]["valueCoding"]["code"] == "387517004"
    assert subs["STRNT_NMRTR_VAL"]["valueDecimal"] == 500
    assert subs["STRNT_NMRTR_UOMCD"]["valueCoding"]["code"] == "258684004"
    (route,) = props(body, "ROUTECD")
    assert route[1]["valueCoding"] == {
        "system": dmd.DMD_SYSTEM,
        "code": "26643006",
        "display": "Oral",
    }


async def test_amp_resolves_to_its_vmp(client: httpx.AsyncClient) -> None:
    amp = dmd.DRUGS[0].amp
    body = (
        await client.get(
            LOOKUP, params={"system": dmd.DMD_SYSTEM, "code": amp, "property": "parent"}
        )
    ).json()
    parents = [p[1]["valueCode"] for p in props(body, "parent")]
    assert parents == [dmd.DRUGS[0].vmp, "AMP"]
    assert not props(body, "VPI")


async def test_only_requested_properties(client: httpx.AsyncClient) -> None:
    body = (
        await client.get(
            LOOKUP, params={"system": dmd.DMD_SYSTEM, "code": "320176004", "property": "ROUTECD"}
        )
    ).json()
    assert {p["part"][0]["valueCode"] for p in body["parameter"] if p["name"] == "property"} == {
        "ROUTECD"
    }
    everything = (
        await client.get(LOOKUP, params={"system": dmd.DMD_SYSTEM, "code": "320176004"})
    ).json()
    (vpi,) = props(everything, "VPI")
    assert {s["part"][0]["valueCode"] for s in vpi[1:]} >= {"STRNT_DNMTR_VAL", "STRNT_DNMTR_UOMCD"}


async def test_post_with_coding_and_snomed_system(client: httpx.AsyncClient) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "coding", "valueCoding": {"system": dmd.SNOMED_SYSTEM, "code": "319283006"}},
            {"name": "property", "valueCode": "parent"},
        ],
    }
    resp = await client.post(LOOKUP, json=body)
    assert resp.status_code == 200
    assert value(resp.json(), "name") == "SNOMED CT"
    assert value(resp.json(), "display") == "Amlodipine 5mg tablets"


async def test_units_and_routes_have_displays(client: httpx.AsyncClient) -> None:
    for code, display in (("258684004", "mg"), ("26643006", "Oral"), ("387517004", "Paracetamol")):
        body = (await client.get(LOOKUP, params={"system": dmd.DMD_SYSTEM, "code": code})).json()
        assert value(body, "display") == display


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"system": dmd.DMD_SYSTEM, "code": "999999999"}, 404),
        ({"system": "http://loinc.org", "code": "1234-5"}, 404),
        ({"code": "322236009"}, 400),
        ({"system": dmd.DMD_SYSTEM}, 400),
    ],
)
async def test_lookup_errors(
    client: httpx.AsyncClient, params: dict[str, str], status: int
) -> None:
    resp = await client.get(LOOKUP, params=params)
    assert resp.status_code == status
    assert resp.json()["resourceType"] == "OperationOutcome"


async def test_post_errors(client: httpx.AsyncClient) -> None:
    assert (await client.post(LOOKUP, content=b"nope")).status_code == 400
    assert (
        await client.post(LOOKUP, json={"resourceType": "Parameters", "parameter": []})
    ).status_code == 400


async def test_every_generated_medication_code_is_known(client: httpx.AsyncClient) -> None:
    codes = {
        coding["code"]
        for e in generate_bundle("9000000009", size=1500)["entry"]
        if e["resource"]["resourceType"] == "Medication"
        for coding in e["resource"]["code"]["coding"]
    }
    assert codes
    for code in sorted(codes):
        resp = await client.get(LOOKUP, params={"system": dmd.SNOMED_SYSTEM, "code": code})
        assert resp.status_code == 200, code


def test_dmd_ids_have_valid_check_digits() -> None:
    for code in (*dmd.CONCEPTS, *dmd.UNITS, *dmd.ROUTES):
        assert dmd.sctid_is_valid(code), code
    assert not dmd.sctid_is_valid("319283007")
