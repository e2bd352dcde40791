"""NHSD-End-User-Organisation-ODS per request, as received by the sandbox over real HTTP.

nhs-apis.md §1.3: apps serving several end-user organisations send the REQUESTING organisation's
ODS code (the Xhuma prior art sent one fixed code for everyone). The code comes from
RequestContext.organization_id: the configured map, else the id itself when it is an ODS code,
else PDS_ADAPTER_END_USER_ORG_ODS; with none of them the header is left out.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from xcagw.common.v1 import common_pb2
from xcagw.pds.v1 import pds_adapter_pb2

if TYPE_CHECKING:  # fixtures' types; conftest is not importable under --import-mode=importlib
    from conftest import AdapterFactory, Sandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")

HEADER = "nhsd-end-user-organisation-ods"
MAPPED_OID = "urn:oid:2.16.840.1.113883.2.1.3.9.1"
ODS_MAP = {MAPPED_OID: "RXX01"}


def context(correlation_id: str, organization_id: str) -> common_pb2.RequestContext:
    return common_pb2.RequestContext(
        correlation_id=correlation_id,
        partner_id=f"partner-{correlation_id}",
        organization_id=organization_id,
        transaction="ITI-47",
    )


def get(correlation_id: str, organization_id: str, nhs: str) -> pds_adapter_pb2.GetPatientRequest:
    return pds_adapter_pb2.GetPatientRequest(
        context=context(correlation_id, organization_id), nhs_number=nhs
    )


def sent_by_correlation(sandbox: Sandbox) -> dict[str, list[str]]:
    """X-Correlation-ID -> every NHSD-End-User-Organisation-ODS value that request carried."""
    sent: dict[str, list[str]] = {}
    for heads in sandbox.recorder.pds_requests:
        correlation = [v for k, v in heads if k == "x-correlation-id"]
        assert len(correlation) == 1, heads
        sent[correlation[0]] = [v for k, v in heads if k == HEADER]
    return sent


async def test_each_request_carries_its_own_organisations_ods_code(
    start_adapter: AdapterFactory, sandbox: Sandbox
) -> None:
    # No cache: every read reaches PDS, so each request's header can be seen.
    async with start_adapter(
        end_user_org_ods="Y12345", end_user_org_ods_map=ODS_MAP, cache_ttl_seconds=0
    ) as adapter:
        # Concurrent calls from different organisations: nothing of one leaks into the other.
        # Different patients, since concurrent reads of one patient share one PDS request.
        responses = await asyncio.gather(
            adapter.stub.GetPatient(get("mapped", MAPPED_OID, "9000000009"), timeout=10),
            adapter.stub.GetPatient(get("ods-itself", "A81001", "9000000017"), timeout=10),
            adapter.stub.GetPatient(get("unmapped", "urn:oid:1.2.3.4", "9000000033"), timeout=10),
        )
        # Not ODS codes (lower case; blank): the default, as in the GP Connect JWT.
        responses.append(
            await adapter.stub.GetPatient(get("lower-case", "a81001", "9000000009"), timeout=10)
        )
        responses.append(await adapter.stub.GetPatient(get("none", "", "9000000009"), timeout=10))
        found = await adapter.stub.SearchPatients(
            pds_adapter_pb2.SearchPatientsRequest(
                context=context("search", MAPPED_OID),
                family="Smith",
                birth_date_from="2010-10-22",
                birth_date_to="2010-10-22",
            ),
            timeout=10,
        )
    assert [r.patient.nhs_number for r in responses] == [
        "9000000009",
        "9000000017",
        "9000000033",
        "9000000009",
        "9000000009",
    ]
    assert [p.nhs_number for p in found.patients] == ["9000000009"]
    assert sent_by_correlation(sandbox) == {
        "mapped": ["RXX01"],
        "ods-itself": ["A81001"],
        "unmapped": ["Y12345"],
        "lower-case": ["Y12345"],
        "none": ["Y12345"],
        "search": ["RXX01"],
    }


async def test_without_a_default_an_unresolved_organisation_sends_no_header(
    start_adapter: AdapterFactory, sandbox: Sandbox
) -> None:
    async with start_adapter(
        end_user_org_ods="", end_user_org_ods_map=ODS_MAP, cache_ttl_seconds=0
    ) as adapter:
        for correlation, organization in (
            ("unmapped", "urn:oid:1.2.3.4"),
            ("none", ""),
            ("mapped", MAPPED_OID),
            ("ods-itself", "RR8"),
        ):
            await adapter.stub.GetPatient(get(correlation, organization, "9000000009"), timeout=10)
    assert sent_by_correlation(sandbox) == {
        "unmapped": [],
        "none": [],
        "mapped": ["RXX01"],
        "ods-itself": ["RR8"],
    }


async def test_a_cached_read_serves_another_organisation(
    start_adapter: AdapterFactory, sandbox: Sandbox
) -> None:
    # By design (cache.py): PDS's answer does not depend on the requesting organisation, so the
    # cache is per patient only; the second organisation's read never reaches PDS.
    async with start_adapter(end_user_org_ods_map=ODS_MAP) as adapter:
        first = await adapter.stub.GetPatient(get("first", MAPPED_OID, "9000000009"), timeout=10)
        second = await adapter.stub.GetPatient(get("second", "A81001", "9000000009"), timeout=10)
    assert second == first
    assert await sandbox.pds_requests() == 1
    assert sent_by_correlation(sandbox) == {"first": ["RXX01"]}
