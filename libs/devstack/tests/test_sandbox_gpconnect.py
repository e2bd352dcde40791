"""GP Connect Access Record Structured fake: SSP checks, the audit JWT, Parameters and outcomes."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from xcagw_devstack.sandbox.panel import get_practice
from xcagw_devstack.sandbox.testkit import (
    ALL_AREAS,
    TEST_BASE,
    LiveServer,
    gpc_claims,
    gpc_headers,
    gpc_jwt,
    parameters,
)

SPINE = "https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1"
SSP = "http://fhir.nhs.net/ValueSet/gpconnect-schedule-response-code-1-0"


def url(ods: str) -> str:
    return f"/gpconnect/{ods}/STU3/1/gpconnect/structured/fhir/Patient/$gpc.getstructuredrecord"


def asid(ods: str) -> str:
    practice = get_practice(ods)
    assert practice is not None
    return practice.asid


async def post(
    client: httpx.AsyncClient,
    nhs: str,
    *params: dict[str, Any],
    ods: str = "Y12345",
    body: bytes | None = None,
    **headers: str | None,
) -> httpx.Response:
    content = body if body is not None else json.dumps(parameters(nhs, *params)).encode()
    return await client.post(
        url(ods), content=content, headers=gpc_headers(ods, asid(ods), **headers)
    )


def outcome(resp: httpx.Response) -> tuple[int, str, str]:
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    coding = issue["details"]["coding"][0]
    assert coding["system"] in (SPINE, SSP)
    return resp.status_code, coding["code"], issue["code"]


def lists(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        e["resource"]["code"]["coding"][0]["code"]: e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "List" and "id" not in e["resource"]
    }


def types(bundle: dict[str, Any]) -> Counter[str]:
    return Counter(e["resource"]["resourceType"] for e in bundle["entry"])


async def test_full_record(client: httpx.AsyncClient) -> None:
    resp = await post(client, "9000000009", *ALL_AREAS)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/fhir+json;charset=utf-8"
    assert resp.headers["cache-control"] == "no-store"
    bundle = resp.json()
    assert bundle["type"] == "collection"
    assert bundle["meta"]["profile"] == [
        "https://fhir.nhs.uk/STU3/StructureDefinition/GPConnect-StructuredRecord-Bundle-1"
    ]
    assert all(set(e) == {"resource"} for e in bundle["entry"]), "real bundles carry no fullUrl"
    found = lists(bundle)
    for code in (
        "886921000000105",
        "1103671000000101",
        "933361000000108",
        "717711000000103",
        "1102181000000102",
        "1149501000000101",
        "826501000000100",
        "887191000000108",
        "792931000000107",
        "714311000000108",
    ):
        assert code in found, code
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    assert patient["identifier"][0]["value"] == "9000000009"
    assert {
        "Organization",
        "Practitioner",
        "PractitionerRole",
        "MedicationRequest",
        "Encounter",
    } <= set(types(bundle))


async def test_bundle_id_is_the_trace_id(client: httpx.AsyncClient) -> None:
    resp = await post(client, "9000000009", Ssp_TraceID="4f1c1d0e-5b1f-4c53-9a59-3c8f8a7e0d11")
    assert resp.json()["id"] == "4f1c1d0e-5b1f-4c53-9a59-3c8f8a7e0d11"


async def test_no_area_gives_only_the_core_resources(client: httpx.AsyncClient) -> None:
    bundle = (await post(client, "9000000009")).json()
    assert set(types(bundle)) <= {
        "Patient",
        "Organization",
        "Practitioner",
        "PractitionerRole",
        "Location",
    }


async def test_allergies_with_and_without_resolved(client: httpx.AsyncClient) -> None:
    def allergies(resolved: bool) -> dict[str, Any]:
        return {
            "name": "includeAllergies",
            "part": [{"name": "includeResolvedAllergies", "valueBoolean": resolved}],
        }

    with_resolved = lists((await post(client, "9000000009", allergies(True))).json())
    assert set(with_resolved) == {"886921000000105", "1103671000000101"}
    ended = with_resolved["1103671000000101"]
    for entry in ended.get("entry", []):
        assert entry["item"]["reference"].startswith("#")
    assert all(r["clinicalStatus"] == "resolved" for r in ended.get("contained", []))
    without = lists((await post(client, "9000000009", allergies(False))).json())
    assert set(without) == {"886921000000105"}


async def test_medication_issues_and_search_date(client: httpx.AsyncClient) -> None:
    def meds(issues: bool, since: str | None = None) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [
            {"name": "includePrescriptionIssues", "valueBoolean": issues}
        ]
        if since:
            parts.append({"name": "medicationSearchFromDate", "valueDate": since})
        return {"name": "includeMedication", "part": parts}

    full = (await post(client, "9000000009", meds(True))).json()
    intents = Counter(
        e["resource"].get("intent")
        for e in full["entry"]
        if e["resource"]["resourceType"] == "MedicationRequest"
    )
    assert intents["plan"] >= 1 and intents["order"] >= 1
    no_issues = (await post(client, "9000000009", meds(False))).json()
    intents = Counter(
        e["resource"].get("intent")
        for e in no_issues["entry"]
        if e["resource"]["resourceType"] == "MedicationRequest"
    )
    assert intents["order"] == 0 and intents["plan"] >= 1
    recent = (await post(client, "9000000009", meds(True, "2025-01-01"))).json()
    assert types(recent)["MedicationStatement"] <= types(full)["MedicationStatement"]


async def test_consultations_most_recent_and_period(client: httpx.AsyncClient) -> None:
    one = {
        "name": "includeConsultations",
        "part": [{"name": "includeNumberOfMostRecent", "valuePositiveInt": 1}],
    }
    bundle = (await post(client, "9000000009", one)).json()
    assert types(bundle)["Encounter"] == 1
    consultation_list = lists(bundle)["1149501000000101"]
    assert len(consultation_list["entry"]) == 1
    structure = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "List" and "id" in e["resource"]
    ]
    codes = {r["code"]["coding"][0]["code"] for r in structure}
    assert {"325851000000107", "25851000000105", "24781000000107"} <= codes
    period = {
        "name": "includeConsultations",
        "part": [
            {
                "name": "consultationSearchPeriod",
                "valuePeriod": {"start": "2000-01-01", "end": "2000-12-31"},
            }
        ],
    }
    assert types((await post(client, "9000000009", period)).json())["Encounter"] == 0


async def test_problems_filter_and_linked_items(client: httpx.AsyncClient) -> None:
    active = {"name": "includeProblems", "part": [{"name": "filterStatus", "valueCode": "active"}]}
    bundle = (await post(client, "9000000009", active)).json()
    conditions = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Condition"
    ]
    problem_list = lists(bundle)["717711000000103"]
    listed = {e["item"]["reference"] for e in problem_list.get("entry", [])}
    assert all(
        next(c for c in conditions if f"Condition/{c['id']}" == ref)["clinicalStatus"] == "active"
        for ref in listed
    )
    secondary = [
        e["resource"]["code"]["coding"][0]["code"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "List"
        and e["resource"]["code"]["coding"][0]["system"].endswith("GPConnect-SecondaryListValues-1")
    ]
    assert "problems-uncategorised-data-related-to-problems" in secondary


async def test_immunisations_not_given_excluded_by_default(client: httpx.AsyncClient) -> None:
    default = (await post(client, "9000000009", {"name": "includeImmunisations"})).json()
    assert all(
        not e["resource"].get("notGiven")
        for e in default["entry"]
        if e["resource"]["resourceType"] == "Immunization"
    )
    everything = {
        "name": "includeImmunisations",
        "part": [{"name": "includeNotGiven", "valueBoolean": True}],
    }
    assert (await post(client, "9000000009", everything)).status_code == 200


async def test_warnings_and_empty_record(client: httpx.AsyncClient) -> None:
    warned = lists((await post(client, "9000000017", *ALL_AREAS, ods="B82617")).json())
    for lst in warned.values():
        codes = {e.get("valueCode") for e in lst["extension"]}
        assert {"confidential-items", "data-in-transit"} <= codes
        assert any("transfer from previous GP practice" in n["text"] for n in lst["note"])
    empty = lists((await post(client, "9000000033", *ALL_AREAS, ods="A20047")).json())
    assert len(empty) == 10
    for lst in empty.values():
        assert "entry" not in lst
        assert lst["emptyReason"]["coding"][0]["code"] == "no-content-recorded"
        assert {"text": "Information not available"} in lst["note"]


async def test_unknown_parameters_give_a_warning_outcome(client: httpx.AsyncClient) -> None:
    bundle = (
        await post(
            client,
            "9000000009",
            {"name": "includeEverything"},
            {
                "name": "includeAllergies",
                "part": [
                    {"name": "includeResolvedAllergies", "valueBoolean": False},
                    {"name": "colour", "valueString": "blue"},
                ],
            },
        )
    ).json()
    outcomes = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "OperationOutcome"
    ]
    assert len(outcomes) == 1
    issues = outcomes[0]["issue"]
    assert {i["severity"] for i in issues} == {"warning"}
    assert {i["code"] for i in issues} == {"not-supported"}
    assert {i["details"]["coding"][0]["code"] for i in issues} == {"NOT_IMPLEMENTED"}
    assert "includeEverything is an unrecognised parameter" in [i["diagnostics"] for i in issues]


@pytest.mark.parametrize(
    ("nhs", "ods", "expected"),
    [
        ("9000000025", "A20047", (404, "PATIENT_NOT_FOUND", "not-found")),  # restricted
        ("9000000084", "Y12345", (404, "PATIENT_NOT_FOUND", "not-found")),  # deceased
        ("9000000041", "B82617", (404, "PATIENT_NOT_FOUND", "not-found")),  # superseded number
        ("9000000076", "Y12345", (404, "PATIENT_NOT_FOUND", "not-found")),  # invalidated
        ("9111231130", "Y12345", (404, "PATIENT_NOT_FOUND", "not-found")),  # unknown
        ("9000000017", "Y12345", (404, "PATIENT_NOT_FOUND", "not-found")),  # registered elsewhere
        ("9000000092", "Y12345", (404, "PATIENT_NOT_FOUND", "not-found")),  # no GP
        ("9000000130", "A20047", (403, "NO_PATIENT_CONSENT", "forbidden")),
        ("9000000165", "Y12345", (403, "NO_RELATIONSHIP", "forbidden")),
        ("9000000149", "Y90003", (403, "ACCESS DENIED", "forbidden")),
    ],
)
async def test_patient_outcomes(
    client: httpx.AsyncClient, nhs: str, ods: str, expected: tuple[int, str, str]
) -> None:
    assert outcome(await post(client, nhs, *ALL_AREAS, ods=ods)) == expected


async def test_superseded_patient_retrieved_by_new_number(client: httpx.AsyncClient) -> None:
    assert (await post(client, "9000000068", *ALL_AREAS, ods="B82617")).status_code == 200


async def test_unregistered_practice_is_refused_by_the_proxy(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        url("Y90004"), json=parameters("9000000157"), headers=gpc_headers("Y90004", "918999199004")
    )
    assert outcome(resp)[0] == 400
    resp = await client.post(
        url("ZZ999"), json=parameters("9000000157"), headers=gpc_headers("ZZ999", "1")
    )
    assert outcome(resp)[0] == 400


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Ssp_TraceID": None}, (400, "BAD_REQUEST", "invalid")),
        ({"Ssp_TraceID": "not-a-uuid"}, (400, "BAD_REQUEST", "invalid")),
        ({"Ssp_From": None}, (400, "BAD_REQUEST", "invalid")),
        ({"Ssp_To": None}, (400, "BAD_REQUEST", "invalid")),
        ({"Ssp_InteractionID": None}, (400, "BAD_REQUEST", "invalid")),
        (
            {"Ssp_InteractionID": "urn:nhs:names:services:gpconnect:fhir:rest:read:metadata-1"},
            (400, "BAD_REQUEST", "invalid"),
        ),
        ({"Ssp_From": "100000000001"}, (403, "403", "forbidden")),
        ({"Ssp_To": "918999198738"}, (403, "403", "forbidden")),
        ({"Content_Type": "application/xml"}, (415, "415", "not-supported")),
        ({"Authorization": None}, (400, "BAD_REQUEST", "invalid")),
        ({"Authorization": "Basic abc"}, (400, "BAD_REQUEST", "invalid")),
        ({"Authorization": "Bearer not.a.jwt.at.all"}, (400, "BAD_REQUEST", "invalid")),
    ],
)
async def test_header_errors(
    client: httpx.AsyncClient, headers: dict[str, str | None], expected: Any
) -> None:
    assert outcome(await post(client, "9000000009", **headers)) == expected


async def test_ssp_sender_error_names_the_asid(client: httpx.AsyncClient) -> None:
    resp = await post(client, "9000000009", Ssp_From="100000000001")
    assert resp.json()["issue"][0]["diagnostics"] == "ASID_CHECK_FAILED_MESSAGESENDER_100000000001"


AUD = f"{TEST_BASE}/gpconnect/Y12345/STU3/1/gpconnect/structured/fhir"


def _bearer(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    return f"Bearer {gpc_jwt(claims, header)}"


def _without(name: str) -> dict[str, Any]:
    claims = gpc_claims(AUD)
    del claims[name]
    return claims


@pytest.mark.parametrize(
    ("authorization", "expected", "diagnostics"),
    [
        (
            _bearer(gpc_claims(AUD), {"alg": "RS512", "typ": "JWT"}),
            (400, "BAD_REQUEST", "invalid"),
            "unsigned",
        ),
        (_bearer(gpc_claims(AUD), {"alg": "none"}), (400, "BAD_REQUEST", "invalid"), "typ"),
        (_bearer(gpc_claims(AUD)) + "signature", (400, "BAD_REQUEST", "invalid"), "unsigned"),
        (_bearer(_without("aud")), (400, "BAD_REQUEST", "invalid"), "Empty JWT aud claim"),
        (_bearer(_without("iss")), (400, "BAD_REQUEST", "invalid"), "Empty JWT iss claim"),
        (
            _bearer(_without("requesting_device")),
            (400, "BAD_REQUEST", "invalid"),
            "Empty JWT requesting_device claim",
        ),
        (
            _bearer(
                gpc_claims("https://orange.testlab.nhs.uk/B82617/STU3/1/gpconnect/structured/fhir")
            ),
            (400, "BAD_REQUEST", "invalid"),
            "aud",
        ),
        (
            _bearer(gpc_claims(AUD, exp=int(time.time()) - 10, iat=int(time.time()) - 310)),
            (400, "BAD_REQUEST", "invalid"),
            "expired",
        ),
        (
            _bearer(gpc_claims(AUD, exp=int(time.time()) + 600)),
            (400, "BAD_REQUEST", "invalid"),
            "iat + 300",
        ),
        (_bearer(gpc_claims(AUD, exp="soon")), (400, "BAD_REQUEST", "invalid"), "integers"),
        (
            _bearer(gpc_claims(AUD, reason_for_request="migration")),
            (400, "BAD_REQUEST", "invalid"),
            "directcare",
        ),
        (
            _bearer(gpc_claims(AUD, requested_scope="patient/*.write")),
            (400, "BAD_REQUEST", "invalid"),
            "requested_scope",
        ),
        (_bearer(gpc_claims(AUD, sub="someone-else")), (400, "BAD_REQUEST", "invalid"), "sub"),
        (
            _bearer(gpc_claims(AUD, requesting_device={"resourceType": "Device"})),
            (422, "INVALID_RESOURCE", "invalid"),
            "Device",
        ),
        (
            _bearer(
                gpc_claims(
                    AUD, requesting_organization={"resourceType": "Organization", "name": "X"}
                )
            ),
            (422, "INVALID_RESOURCE", "invalid"),
            "ODS",
        ),
        (
            _bearer(
                gpc_claims(
                    AUD,
                    requesting_practitioner={
                        "resourceType": "Practitioner",
                        "id": "practitioner-1",
                        "name": [{"family": "Cone"}],
                    },
                )
            ),
            (422, "INVALID_RESOURCE", "invalid"),
            "sds-user-id",
        ),
    ],
)
async def test_jwt_errors(
    client: httpx.AsyncClient, authorization: str, expected: Any, diagnostics: str
) -> None:
    resp = await post(client, "9000000009", Authorization=authorization)
    assert outcome(resp) == expected
    assert diagnostics in resp.json()["issue"][0]["diagnostics"]


async def test_scope_with_confidentiality_is_accepted(client: httpx.AsyncClient) -> None:
    auth = _bearer(gpc_claims(AUD, requested_scope="patient/*.read conf/N"))
    assert (await post(client, "9000000009", Authorization=auth)).status_code == 200


TOMORROW = (dt.date.today() + dt.timedelta(days=1)).isoformat()
YESTERDAY = (dt.date.today() - dt.timedelta(days=1)).isoformat()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", (422, "INVALID_RESOURCE", "invalid")),
        (json.dumps({"resourceType": "Patient"}).encode(), (422, "INVALID_RESOURCE", "invalid")),
        (
            json.dumps({"resourceType": "Parameters", "parameter": "x"}).encode(),
            (422, "INVALID_RESOURCE", "invalid"),
        ),
        (
            json.dumps({"resourceType": "Parameters", "parameter": []}).encode(),
            (422, "INVALID_PARAMETER", "invalid"),
        ),
        (
            json.dumps(
                {
                    "resourceType": "Parameters",
                    "parameter": [
                        {
                            "name": "patientNHSNumber",
                            "valueIdentifier": {
                                "system": "https://fhir.nhs.uk/Id/nhs-number",
                                "value": "9000000009",
                            },
                        },
                        {
                            "name": "patientNHSNumber",
                            "valueIdentifier": {
                                "system": "https://fhir.nhs.uk/Id/nhs-number",
                                "value": "9000000009",
                            },
                        },
                    ],
                }
            ).encode(),
            (422, "INVALID_PARAMETER", "invalid"),
        ),
        (
            json.dumps(
                {
                    "resourceType": "Parameters",
                    "parameter": [
                        {
                            "name": "patientNHSNumber",
                            "valueIdentifier": {
                                "system": "https://example.org/id",
                                "value": "9000000009",
                            },
                        }
                    ],
                }
            ).encode(),
            (400, "INVALID_IDENTIFIER_SYSTEM", "value"),
        ),
        (json.dumps(parameters("9432003812")).encode(), (400, "INVALID_NHS_NUMBER", "value")),
        (json.dumps(parameters("900000000")).encode(), (400, "INVALID_NHS_NUMBER", "value")),
        (
            json.dumps(parameters("9000000009", {"name": "includeAllergies"})).encode(),
            (422, "INVALID_PARAMETER", "invalid"),
        ),
        (
            json.dumps(
                parameters(
                    "9000000009",
                    {
                        "name": "includeAllergies",
                        "part": [{"name": "includeResolvedAllergies", "valueString": "yes"}],
                    },
                )
            ).encode(),
            (422, "INVALID_PARAMETER", "invalid"),
        ),
        (
            json.dumps(
                parameters(
                    "9000000009", {"name": "includeImmunisations"}, {"name": "includeImmunisations"}
                )
            ).encode(),
            (422, "INVALID_PARAMETER", "invalid"),
        ),
        (
            json.dumps(
                parameters(
                    "9000000009",
                    {
                        "name": "includeMedication",
                        "part": [{"name": "medicationSearchFromDate", "valueDate": TOMORROW}],
                    },
                )
            ).encode(),
            (422, "INVALID_PARAMETER", "invalid"),
        ),
        (
            json.dumps(
                parameters(
                    "9000000009",
                    {
                        "name": "includeMedication",
                        "part": [{"name": "medicationSearchFromDate", "valueDate": "2017-02"}],
                    },
                )
            ).encode(),
            (422, "INVALID_PARAMETER", "invalid"),
        ),
        (
            json.dumps(
                parameters(
                    "9000000009",
                    {
                        "name": "includeConsultations",
                        "part": [
                            {
                                "name": "consultationSearchPeriod",
                                "valuePeriod": {"start": "2019-01-01"},
                            },
                            {"name": "includeNumberOfMostRecent", "valuePositiveInt": 3},
                        ],
                    },
                )
            ).encode(),
            (422, "INVALID_RESOURCE", "invalid"),
        ),
        (
            json.dumps(
                parameters(
                    "9000000009",
                    {
                        "name": "includeConsultations",
                        "part": [
                            {
                                "name": "consultationSearchPeriod",
                                "valuePeriod": {"start": "2019-01-01", "end": "2018-01-01"},
                            }
                        ],
                    },
                )
            ).encode(),
            (422, "INVALID_PARAMETER", "invalid"),
        ),
        (
            json.dumps(
                parameters(
                    "9000000009",
                    {
                        "name": "includeConsultations",
                        "part": [{"name": "includeNumberOfMostRecent", "valuePositiveInt": 0}],
                    },
                )
            ).encode(),
            (422, "INVALID_PARAMETER", "invalid"),
        ),
        (
            json.dumps(
                parameters(
                    "9000000009",
                    {
                        "name": "includeProblems",
                        "part": [{"name": "filterStatus", "valueCode": "resolved"}],
                    },
                )
            ).encode(),
            (422, "INVALID_PARAMETER", "invalid"),
        ),
        (
            json.dumps(
                parameters(
                    "9000000009",
                    {
                        "name": "includeDiaryEntries",
                        "part": [{"name": "diaryEntriesSearchDate", "valueDate": YESTERDAY}],
                    },
                )
            ).encode(),
            (422, "INVALID_PARAMETER", "invalid"),
        ),
        (
            json.dumps(
                parameters(
                    "9000000009",
                    {"name": "includeProblems"},
                    {
                        "name": "includeMedication",
                        "part": [{"name": "medicationSearchFromDate", "valueDate": "2020-01-01"}],
                    },
                )
            ).encode(),
            (422, "INVALID_PARAMETER", "invalid"),
        ),
        (
            json.dumps(
                parameters(
                    "9000000009",
                    {
                        "name": "includeUncategorisedData",
                        "part": [
                            {
                                "name": "uncategorisedDataSearchPeriod",
                                "valuePeriod": {"start": TOMORROW},
                            }
                        ],
                    },
                )
            ).encode(),
            (422, "INVALID_PARAMETER", "invalid"),
        ),
        (
            json.dumps(
                parameters(
                    "9000000009",
                    {
                        "name": "includeAllergies",
                        "part": [
                            {"name": "includeResolvedAllergies", "valueBoolean": True},
                            {"name": "includeResolvedAllergies", "valueBoolean": True},
                        ],
                    },
                )
            ).encode(),
            (422, "INVALID_RESOURCE", "invalid"),
        ),
    ],
)
async def test_parameter_errors(
    client: httpx.AsyncClient, body: bytes, expected: tuple[int, str, str]
) -> None:
    assert outcome(await post(client, "9000000009", body=body)) == expected


async def test_problems_may_filter_their_own_status(client: httpx.AsyncClient) -> None:
    params = (
        {"name": "includeProblems", "part": [{"name": "filterStatus", "valueCode": "inactive"}]},
        {"name": "includeProblems", "part": [{"name": "filterSignificance", "valueCode": "major"}]},
    )
    assert (await post(client, "9000000009", *params)).status_code == 200


async def test_huge_record_over_a_real_socket(live_sandbox: tuple[LiveServer, Any]) -> None:
    server, _settings = live_sandbox
    body = json.dumps(parameters("9000000106", *ALL_AREAS))
    headers = gpc_headers("Y12345", asid("Y12345"), base=server.url)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        resp = await c.post(url("Y12345"), content=body, headers=headers)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["entry"]) > 4500
