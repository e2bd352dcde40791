"""GetStructuredRecord and LookupEndpoint against the sandbox (with real pds- and token-service)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import grpc
import pytest
from fhirclient.models.fhirelementfactory import FHIRElementFactory
from gpc_testkit import (
    CONSUMER_ASID,
    CertSet,
    FakeSsp,
    RunningAdapter,
    Sandbox,
    record_request,
    request_context,
    rpc_error,
    run_adapter,
    via_ssp,
)

from xcagw.gpconnect.v1 import gpconnect_adapter_pb2

STRUCTURED = "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1"


def _lookup(ods: str) -> gpconnect_adapter_pb2.LookupEndpointRequest:
    return gpconnect_adapter_pb2.LookupEndpointRequest(context=request_context(), ods_code=ods)


async def test_gpc_normal_record(adapter: RunningAdapter, sandbox: Sandbox) -> None:
    response = await adapter.stub.GetStructuredRecord(record_request("9000000009"), timeout=30)
    bundle = json.loads(response.bundle_json)
    assert bundle["resourceType"] == "Bundle"
    assert response.ods_code == "Y12345"
    assert response.nhs_number == "9000000009"
    # Counts are per resource type over the entries plus the Lists' contained resources.
    entry_counts: dict[str, int] = {}
    for entry in bundle["entry"]:
        rtype = entry["resource"]["resourceType"]
        entry_counts[rtype] = entry_counts.get(rtype, 0) + 1
        for inner in entry["resource"].get("contained", []):
            entry_counts[inner["resourceType"]] = entry_counts.get(inner["resourceType"], 0) + 1
    assert dict(response.resource_counts) == entry_counts
    for area in ("AllergyIntolerance", "MedicationStatement", "Condition", "Immunization"):
        assert response.resource_counts[area] > 0, area
    assert sandbox.requests("gpconnect") == 1
    assert sandbox.requests("sds") == 2


async def test_gpc_request_headers_and_parameters_through_the_ssp(
    adapter_settings: dict[str, Any], sandbox: Sandbox, ssp: FakeSsp, ssp_certs: CertSet
) -> None:
    async with run_adapter({**adapter_settings, **via_ssp(ssp, ssp_certs)}) as running:
        endpoint = await running.stub.LookupEndpoint(_lookup("Y12345"), timeout=10)
        response = await running.stub.GetStructuredRecord(record_request("9000000009"), timeout=30)
    assert json.loads(response.bundle_json)["resourceType"] == "Bundle"
    # GP Connect "absolute request": https://[proxy]/https://[provider]/[fhir_base]/Patient/$...
    assert ssp.seen_paths == [f"/{endpoint.address}/Patient/$gpc.getstructuredrecord"]
    headers = ssp.seen_headers[0]
    assert uuid.UUID(headers["ssp-traceid"])
    assert headers["ssp-from"] == CONSUMER_ASID
    assert headers["ssp-to"] == endpoint.asid == "918999198001"
    assert headers["ssp-interactionid"] == STRUCTURED
    assert headers["accept"] == headers["content-type"] == "application/fhir+json;charset=utf-8"
    scheme, _, jwt = headers["authorization"].partition(" ")
    assert scheme == "Bearer" and jwt.endswith(".")
    header_b64, claims_b64, _ = jwt.split(".")
    claims = json.loads(base64.urlsafe_b64decode(claims_b64 + "=" * (-len(claims_b64) % 4)))
    assert json.loads(base64.urlsafe_b64decode(header_b64 + "==="))["alg"] == "none"
    # The JWT audience is the provider's service root, not the SSP-prefixed URL.
    assert claims["aud"] == endpoint.address
    params = {p["name"]: p for p in json.loads(ssp.seen_bodies[0])["parameter"]}
    assert params["patientNHSNumber"]["valueIdentifier"] == {
        "system": "https://fhir.nhs.uk/Id/nhs-number",
        "value": "9000000009",
    }
    assert params["includeAllergies"]["part"] == [
        {"name": "includeResolvedAllergies", "valueBoolean": True}
    ]
    assert params["includeMedication"]["part"] == [
        {"name": "includePrescriptionIssues", "valueBoolean": True}
    ]
    assert {
        "includeProblems",
        "includeImmunisations",
        "includeConsultations",
        "includeInvestigations",
        "includeReferrals",
        "includeUncategorisedData",
    } <= set(params)


async def test_gpc_each_retry_reuses_the_trace_id(
    adapter_settings: dict[str, Any], sandbox: Sandbox, ssp: FakeSsp, ssp_certs: CertSet
) -> None:
    sandbox.set_faults({"gpconnect": {"burst_429": 1, "retry_after_seconds": 0}})
    async with run_adapter({**adapter_settings, **via_ssp(ssp, ssp_certs)}) as running:
        await running.stub.GetStructuredRecord(record_request("9000000009"), timeout=30)
    assert sandbox.requests("gpconnect") == 2
    trace_ids = {h["ssp-traceid"] for h in ssp.seen_headers}
    assert len(ssp.seen_headers) == 2 and len(trace_ids) == 1


async def test_gpc_list_warnings_are_reported(adapter: RunningAdapter, sandbox: Sandbox) -> None:
    response = await adapter.stub.GetStructuredRecord(record_request("9000000017"), timeout=30)
    codes = {w.code for w in response.warnings}
    assert codes == {"confidential-items", "data-in-transit"}
    assert all(w.list_code for w in response.warnings)


async def test_gpc_clinical_areas_are_switchable(adapter: RunningAdapter, sandbox: Sandbox) -> None:
    options = gpconnect_adapter_pb2.RecordOptions(allergies=True, resolved_allergies=False)
    response = await adapter.stub.GetStructuredRecord(
        record_request("9000000009", options), timeout=30
    )
    counts = dict(response.resource_counts)
    assert counts.get("AllergyIntolerance", 0) > 0
    for absent in ("MedicationStatement", "Immunization", "Encounter"):
        assert absent not in counts, absent


async def test_gpc_superseded_number_uses_the_new_one(
    adapter: RunningAdapter, sandbox: Sandbox
) -> None:
    response = await adapter.stub.GetStructuredRecord(record_request("9000000041"), timeout=30)
    assert response.nhs_number == "9000000068"
    bundle = json.loads(response.bundle_json)
    resources = [e["resource"] for e in bundle["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    assert {i["value"] for i in patient["identifier"]} >= {"9000000068"}


async def test_gpc_restricted_patient_never_reaches_gp_connect(
    adapter: RunningAdapter, sandbox: Sandbox
) -> None:
    failure = await rpc_error(adapter.stub.GetStructuredRecord(record_request("9000000025")))
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESTRICTED_PATIENT",
    )
    assert sandbox.requests("pds") >= 1
    assert sandbox.requests("sds") == 0
    assert sandbox.requests("gpconnect") == 0


async def test_gpc_patient_without_gp(adapter: RunningAdapter, sandbox: Sandbox) -> None:
    failure = await rpc_error(adapter.stub.GetStructuredRecord(record_request("9000000092")))
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NO_REGISTERED_GP",
    )
    assert sandbox.requests("gpconnect") == 0


async def test_gpc_pds_errors_pass_through(adapter: RunningAdapter, sandbox: Sandbox) -> None:
    failure = await rpc_error(adapter.stub.GetStructuredRecord(record_request("9000000076")))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.reason == "INVALIDATED_RESOURCE"
    assert failure.metadata["dependency"] == "pds-adapter"
    assert sandbox.requests("gpconnect") == 0


@pytest.mark.parametrize("nhs", ["9000000008", "123", "90000000O9", ""])
async def test_gpc_invalid_nhs_number_is_refused_before_any_call(
    adapter: RunningAdapter, sandbox: Sandbox, nhs: str
) -> None:
    failure = await rpc_error(adapter.stub.GetStructuredRecord(record_request(nhs)))
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_NHS_NUMBER",
    )
    assert sum(sandbox.stats()["requests"].values()) == 0


async def test_gpc_invalid_options_are_refused_before_any_call(
    adapter: RunningAdapter, sandbox: Sandbox
) -> None:
    options = gpconnect_adapter_pb2.RecordOptions(all=True, medication_search_from="2020-01-01")
    failure = await rpc_error(
        adapter.stub.GetStructuredRecord(record_request("9000000009", options))
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMETER")
    assert sum(sandbox.stats()["requests"].values()) == 0


async def test_gpc_lookup_endpoint_is_cached(adapter: RunningAdapter, sandbox: Sandbox) -> None:
    first = await adapter.stub.LookupEndpoint(_lookup("b82617"), timeout=10)
    assert (first.ods_code, first.asid, first.party_key) == (
        "B82617",
        "918999198738",
        "B82617-0000806",
    )
    assert first.address.endswith("/gpconnect/B82617/STU3/1/gpconnect/structured/fhir")
    assert not first.from_cache
    second = await adapter.stub.LookupEndpoint(_lookup("B82617"), timeout=10)
    assert second.from_cache and second.address == first.address
    assert sandbox.requests("sds") == 2


async def test_gpc_concurrent_requests_share_one_sds_lookup(
    adapter: RunningAdapter, sandbox: Sandbox
) -> None:
    responses = await asyncio.gather(
        *(
            adapter.stub.GetStructuredRecord(record_request("9000000009"), timeout=30)
            for _ in range(8)
        )
    )
    assert {r.ods_code for r in responses} == {"Y12345"}
    assert sandbox.requests("sds") == 2
    assert sandbox.requests("gpconnect") == 8


async def test_gpc_sds_miss_is_not_found_and_not_cached(
    adapter: RunningAdapter, sandbox: Sandbox
) -> None:
    for _ in range(2):
        failure = await rpc_error(adapter.stub.LookupEndpoint(_lookup("Y90004")))
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "SDS_NOT_FOUND")
    assert sandbox.requests("sds") == 2  # one Device search per call: errors are not cached
    failure = await rpc_error(adapter.stub.GetStructuredRecord(record_request("9000000157")))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "SDS_NOT_FOUND")
    assert sandbox.requests("gpconnect") == 0


async def test_gpc_invalid_ods_code(adapter: RunningAdapter, sandbox: Sandbox) -> None:
    failure = await rpc_error(adapter.stub.LookupEndpoint(_lookup("Y1 2345; DROP")))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ODS_CODE")
    assert sandbox.requests("sds") == 0


def _parse_entry_by_entry(bundle: dict[str, Any]) -> int:
    """fhirclient 3.2.0 STU3 models, one entry at a time (nhs-apis.md section 6.1)."""
    parsed = 0
    for index, entry in enumerate(bundle["entry"]):
        resource = entry["resource"]
        try:
            FHIRElementFactory.instantiate(resource["resourceType"], resource)
        except Exception as exc:  # noqa: BLE001 - report which entry failed
            raise AssertionError(f"entry {index} ({resource.get('resourceType')}): {exc}") from exc
        parsed += 1
    return parsed


async def test_gpc_every_panel_record_parses_with_fhirclient(
    adapter: RunningAdapter, sandbox: Sandbox
) -> None:
    panel = sandbox.panel()
    practices = {p["ods"]: p for p in panel["practices"]}
    with_record = [
        p["nhs_number"]
        for p in panel["patients"]
        if p["gp_ods"]
        and p["security"] == "U"
        and not p["superseded_by"]
        and not p["invalidated"]
        and not p["deceased"]
        and not p["gpconnect_outcome"]
        and practices[p["gp_ods"]]["in_sds"]
        and practices[p["gp_ods"]]["structured_enabled"]
    ]
    assert len(with_record) >= 6
    for nhs in with_record:
        response = await adapter.stub.GetStructuredRecord(record_request(nhs), timeout=60)
        bundle = json.loads(response.bundle_json)
        assert _parse_entry_by_entry(bundle) == len(bundle["entry"]), nhs
        assert response.nhs_number == nhs
