"""PDS FHIR R4 fake: reads, searches and every error path."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from xcagw_devstack.sandbox.app import create_app
from xcagw_devstack.sandbox.testkit import (
    TEST_BASE,
    KeyRing,
    fetch_token,
    jwks_of,
    pds_headers,
    sandbox_settings,
)

PATIENT = "/personal-demographics/FHIR/R4/Patient"
SPINE = "https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode"


def spine(resp: httpx.Response) -> tuple[int, str, str, str]:
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    coding = issue["details"]["coding"][0]
    assert coding["system"] == SPINE
    assert coding["version"] == "1"
    return resp.status_code, coding["code"], issue["code"], issue["severity"]


async def test_read_normal_patient(client: httpx.AsyncClient, token: str) -> None:
    rid = str(uuid.uuid4())
    resp = await client.get(
        f"{PATIENT}/9000000009",
        headers=pds_headers(token, **{"X-Request-ID": rid, "X-Correlation-ID": "corr-1"}),
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/fhir+json")
    assert resp.headers["x-request-id"] == rid
    assert resp.headers["x-correlation-id"] == "corr-1"
    body = resp.json()
    assert resp.headers["etag"] == f'W/"{body["meta"]["versionId"]}"'
    assert body["id"] == "9000000009"
    assert body["identifier"][0]["value"] == "9000000009"
    assert body["meta"]["security"][0]["code"] == "U"
    assert body["generalPractitioner"][0]["identifier"] == {
        "system": "https://fhir.nhs.uk/Id/ods-organization-code",
        "value": "Y12345",
        "period": {"start": "2012-03-01"},
    }
    assert body["address"][0]["postalCode"] == "LS1 6AE"
    assert {"use": "usual", "family": "SMITH"}.items() <= body["name"][0].items()
    assert "official" not in [n["use"] for n in body["name"]]


async def test_restricted_patient_is_stripped(client: httpx.AsyncClient, token: str) -> None:
    body = (await client.get(f"{PATIENT}/9000000025", headers=pds_headers(token))).json()
    assert body["meta"]["security"][0]["code"] == "R"
    for field in ("address", "telecom", "generalPractitioner", "contact"):
        assert field not in body
    assert "NominatedPharmacy" not in str(body)


async def test_superseded_number_returns_the_new_record(
    client: httpx.AsyncClient, token: str
) -> None:
    resp = await client.get(f"{PATIENT}/9000000041", headers=pds_headers(token))
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == "9000000068"
    assert body["identifier"][0]["value"] == "9000000068"


async def test_deceased_patient(client: httpx.AsyncClient, token: str) -> None:
    body = (await client.get(f"{PATIENT}/9000000084", headers=pds_headers(token))).json()
    assert body["deceasedDateTime"] == "2023-11-02T00:00:00+00:00"
    urls = [e["url"] for e in body["extension"]]
    assert (
        "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-DeathNotificationStatus"
        in urls
    )


async def test_patient_without_gp(client: httpx.AsyncClient, token: str) -> None:
    body = (await client.get(f"{PATIENT}/9000000092", headers=pds_headers(token))).json()
    assert "generalPractitioner" not in body
    assert body["address"]


@pytest.mark.parametrize(
    ("nhs", "expected"),
    [
        ("9000000000", (400, "INVALID_RESOURCE_ID", "value", "error")),
        ("900000000", (400, "INVALID_RESOURCE_ID", "value", "error")),
        ("90000000AB", (400, "INVALID_RESOURCE_ID", "value", "error")),
        ("9111231130", (404, "RESOURCE_NOT_FOUND", "not-found", "information")),
        ("9000000076", (404, "INVALIDATED_RESOURCE", "processing", "error")),
    ],
)
async def test_read_errors(
    client: httpx.AsyncClient, token: str, nhs: str, expected: tuple[int, str, str, str]
) -> None:
    assert spine(await client.get(f"{PATIENT}/{nhs}", headers=pds_headers(token))) == expected


@pytest.mark.parametrize(
    ("headers", "expected", "diagnostics"),
    [
        ({}, (401, "ACCESS_DENIED", "forbidden", "error"), "Missing Authorization header"),
        (
            {"Authorization": ""},
            (401, "ACCESS_DENIED", "forbidden", "error"),
            "Empty Authorization header",
        ),
        (
            {"Authorization": "Bearer nope"},
            (401, "ACCESS_DENIED", "forbidden", "error"),
            "Invalid Access Token",
        ),
        (
            {"Authorization": "Basic abc"},
            (401, "ACCESS_DENIED", "forbidden", "error"),
            "Invalid Access Token",
        ),
    ],
)
async def test_token_errors(
    client: httpx.AsyncClient, headers: dict[str, str], expected: Any, diagnostics: str
) -> None:
    resp = await client.get(
        f"{PATIENT}/9000000009", headers={"X-Request-ID": str(uuid.uuid4()), **headers}
    )
    assert spine(resp) == expected
    assert resp.json()["issue"][0]["diagnostics"] == diagnostics


async def test_request_id_errors(client: httpx.AsyncClient, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    missing = await client.get(f"{PATIENT}/9000000009", headers=auth)
    assert spine(missing) == (400, "MISSING_VALUE", "required", "error")
    assert missing.json()["issue"][0]["diagnostics"] == (
        "Invalid request with error - X-Request-ID header must be supplied to access this resource"
    )
    bad = await client.get(f"{PATIENT}/9000000009", headers={**auth, "X-Request-ID": "1234"})
    assert spine(bad) == (400, "INVALID_VALUE", "value", "error")
    assert (
        bad.json()["issue"][0]["diagnostics"] == "Invalid value - '1234' in header 'X-Request-ID'"
    )


async def test_rate_limit_gives_429_with_retry_after(jwks_file: Any, keys: KeyRing) -> None:
    app = create_app(sandbox_settings(jwks_file=str(jwks_file), pds_rate_limit_per_second=3))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=TEST_BASE) as c:
        token = await fetch_token(c, keys.signing)
        statuses = [
            (await c.get(f"{PATIENT}/9000000009", headers=pds_headers(token))).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 200]
        resp = await c.get(f"{PATIENT}/9000000009", headers=pds_headers(token))
    assert spine(resp) == (429, "TOO_MANY_REQUESTS", "throttled", "error")
    assert resp.headers["retry-after"] == "1"
    assert "rate limited" in resp.json()["issue"][0]["diagnostics"]


async def search(client: httpx.AsyncClient, token: str, **params: Any) -> httpx.Response:
    items = [
        (k.replace("_dash_", "-"), v)
        for k, vs in params.items()
        for v in ([vs] if isinstance(vs, str) else vs)
    ]
    return await client.get(PATIENT, params=items, headers=pds_headers(token))


async def test_search_single_match(client: httpx.AsyncClient, token: str) -> None:
    resp = await search(client, token, family="Smith", gender="female", birthdate="eq2010-10-22")
    assert resp.status_code == 200
    body = resp.json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == "searchset"
    assert body["total"] == 1
    entry = body["entry"][0]
    assert entry["fullUrl"] == f"{TEST_BASE}{PATIENT}/9000000009"
    assert entry["search"]["score"] == 1.0
    # A search result carries less than a GET: no pharmacies or communication.
    assert "extension" not in entry["resource"]


async def test_search_too_many_matches_is_http_200_outcome(
    client: httpx.AsyncClient, token: str
) -> None:
    resp = await search(client, token, family="JONES", birthdate="eq1980-04-12")
    assert spine(resp) == (200, "TOO_MANY_MATCHES", "multiple-matches", "information")
    narrowed = (
        await search(client, token, family="JONES", given="Alex", birthdate="eq1980-04-12")
    ).json()
    assert [e["resource"]["id"] for e in narrowed["entry"]] == ["9000000114"]


async def test_search_no_match_has_no_entry(client: httpx.AsyncClient, token: str) -> None:
    body = (await search(client, token, family="Nobody", birthdate="eq1999-01-01")).json()
    assert body["total"] == 0
    assert "entry" not in body


async def test_search_restricted_patient(client: httpx.AsyncClient, token: str) -> None:
    found = (
        await search(client, token, family="Smythe", given="Janet", birthdate="eq2005-06-16")
    ).json()
    assert found["entry"][0]["resource"]["meta"]["security"][0]["code"] == "R"
    assert "address" not in found["entry"][0]["resource"]
    # Searches by postcode or GP never return restricted patients (PDS API spec).
    by_postcode = await search(
        client,
        token,
        family="Smythe",
        birthdate="eq2005-06-16",
        **{"address_dash_postalcode": "HU1 1AA"},
    )
    assert by_postcode.json()["total"] == 0
    by_gp = await search(
        client,
        token,
        family="Smythe",
        birthdate="eq2005-06-16",
        **{"general_dash_practitioner": "A20047"},
    )  # noqa: E501
    assert by_gp.json()["total"] == 0


async def test_search_never_returns_superseded_records(
    client: httpx.AsyncClient, token: str
) -> None:
    body = (await search(client, token, family="CUFF", birthdate="eq1926-01-07")).json()
    assert [e["resource"]["id"] for e in body["entry"]] == ["9000000068"]


async def test_search_wildcard_fuzzy_exact_and_ranges(
    client: httpx.AsyncClient, token: str
) -> None:
    wild = (
        await search(client, token, family="Sm*", given="Jane", birthdate="eq2010-10-22")
    ).json()
    assert wild["entry"][0]["search"]["score"] < 1
    fuzzy = (
        await search(
            client,
            token,
            family="Smith",
            given="Jayne",
            birthdate="eq1982-06-16",
            _fuzzy_dash_match="true",
        )
    ).json()
    assert [e["resource"]["id"] for e in fuzzy["entry"]] == ["9000000017"]
    assert fuzzy["entry"][0]["search"]["score"] < 1
    exact = (
        await search(
            client,
            token,
            family="Smith",
            given="Jayne",
            birthdate="eq1982-06-16",
            _fuzzy_dash_match="true",
            _exact_dash_match="true",
        )
    ).json()
    assert exact["total"] == 0
    ranged = (
        await search(client, token, family="HUGHES", birthdate=["ge1940-01-01", "le1940-12-31"])
    ).json()
    assert [e["resource"]["id"] for e in ranged["entry"]] == ["9000000106"]
    postcode = (
        await search(
            client,
            token,
            family="BLAKE",
            birthdate="eq1935-02-11",
            address_dash_postalcode="ls15hd",
        )
    ).json()
    assert postcode["total"] == 1


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, (400, "UNSUPPORTED_SERVICE", "processing", "error")),
        (
            {"family": "Smith", "birthdate": "eq2010-10-22", "colour": "blue"},
            (400, "ADDITIONAL_PROPERTIES", "invariant", "error"),
        ),
        ({"family": "Smith"}, (400, "MISSING_VALUE", "required", "error")),
        ({"gender": "female"}, (400, "MISSING_VALUE", "required", "error")),
        ({"family": "Smith", "birthdate": "2010-13-45"}, (400, "INVALID_VALUE", "value", "error")),
        (
            {"family": "Smith", "birthdate": "gt2010-10-22"},
            (400, "INVALID_VALUE", "value", "error"),
        ),
        (
            {"family": "Smith", "birthdate": "eq2010-10-22", "gender": "f"},
            (400, "INVALID_VALUE", "value", "error"),
        ),
        (
            {"family": "Smith", "birthdate": "eq2010-10-22", "_max-results": "0"},
            (400, "INVALID_VALUE", "value", "error"),
        ),
        (
            {"family": "Smith", "birthdate": "eq2010-10-22", "_max-results": "2"},
            (403, "INVALID_VALUE", "value", "error"),
        ),
        (
            {
                "family": "Smith",
                "birthdate": "eq2010-10-22",
                "address-postcode": "LS1",
                "address-postalcode": "LS1",
            },
            (400, "INVALID_SEARCH_DATA", "value", "error"),
        ),
        (
            {"family": "S*", "birthdate": "eq2010-10-22"},
            (400, "INVALID_SEARCH_DATA", "value", "error"),
        ),
        (
            {"family": "Sm*", "birthdate": "eq2010-10-22", "_fuzzy-match": "true", "given": "Jane"},
            (400, "INVALID_SEARCH_DATA", "value", "error"),
        ),
        (
            {"family": "Smith", "birthdate": "eq2010-10-22", "_fuzzy-match": "true"},
            (400, "INVALID_SEARCH_DATA", "value", "error"),
        ),
        (
            {"given": "Jane", "birthdate": "eq2010-10-22"},
            (400, "INVALID_SEARCH_DATA", "value", "error"),
        ),
        (
            {"family": "Smith", "birthdate": "eq2010-10-22", "_history": "maybe"},
            (400, "INVALID_VALUE", "value", "error"),
        ),
        (
            {"family": "A" * 36, "birthdate": "eq2010-10-22"},
            (400, "INVALID_VALUE", "value", "error"),
        ),
        (
            {"family": ["Smith", "Jones"], "birthdate": "eq2010-10-22"},
            (400, "INVALID_SEARCH_DATA", "value", "error"),
        ),
    ],
)
async def test_search_errors(
    client: httpx.AsyncClient,
    token: str,
    params: dict[str, Any],
    expected: tuple[int, str, str, str],
) -> None:
    items = [(k, v) for k, vs in params.items() for v in ([vs] if isinstance(vs, str) else vs)]
    resp = await client.get(PATIENT, params=items, headers=pds_headers(token))
    assert spine(resp) == expected


async def test_search_needs_a_token_too(client: httpx.AsyncClient) -> None:
    resp = await client.get(PATIENT, params={"family": "Smith", "birthdate": "eq2010-10-22"})
    assert spine(resp)[:2] == (401, "ACCESS_DENIED")


async def test_post_is_not_allowed(client: httpx.AsyncClient, token: str) -> None:
    resp = await client.post(PATIENT, json={"resourceType": "Patient"}, headers=pds_headers(token))
    assert resp.status_code == 405
    assert resp.json()["resourceType"] == "OperationOutcome"


def test_jwks_helper_shape(keys: KeyRing) -> None:
    doc = jwks_of(keys.signing)
    assert set(doc) == {"keys"}
    assert doc["keys"][0]["kid"] == "test-1"
    assert "d" not in doc["keys"][0]
