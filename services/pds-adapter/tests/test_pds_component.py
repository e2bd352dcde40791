"""pds-adapter over real gRPC against the NHS sandbox, the real token-service and real Redis."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from xcagw.common.v1 import common_pb2
from xcagw.pds.v1 import pds_adapter_pb2
from xcagw_common.errors import error_info, error_reason
from xcagw_common.grpc_client import check_health
from xcagw_common.logging import EcsJsonFormatter

if TYPE_CHECKING:  # fixtures' types; conftest is not importable under --import-mode=importlib
    from conftest import Adapter, AdapterFactory, Sandbox, Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

CONTEXT = common_pb2.RequestContext(
    correlation_id="urn:uuid:6c1e7b7e-3f0d-4f8e-9d36-0c8c3b9d2a11",
    partner_id="partner-1",
    transaction="ITI-47",
)


def get(nhs: str) -> pds_adapter_pb2.GetPatientRequest:
    return pds_adapter_pb2.GetPatientRequest(context=CONTEXT, nhs_number=nhs)


async def expect_error(call: object, code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    assert error_reason(info.value) == reason
    return info.value


def cache_count(result: str) -> float:
    labels = {"cache": "pds_patient", "result": result}
    return REGISTRY.get_sample_value("xcagw_cache_requests_total", labels) or 0.0


def breaker_state() -> float | None:
    return REGISTRY.get_sample_value("xcagw_circuit_breaker_state", {"name": "pds"})


# ------------------------------------------------------------------------------ reads


async def test_found_patient_is_normalised_and_then_served_from_cache(
    adapter: Adapter, sandbox: Sandbox
) -> None:
    hits, misses = cache_count("hit"), cache_count("miss")
    response = await adapter.stub.GetPatient(get("900 000 0009"), timeout=10)
    patient = response.patient
    assert patient.nhs_number == "9000000009" and patient.superseded_from == ""
    assert [(n.use, n.family, list(n.given), list(n.prefix)) for n in patient.names] == [
        ("usual", "SMITH", ["Jane"], ["Miss"])
    ]
    assert (patient.gender, patient.birth_date) == ("female", "2010-10-22")
    assert patient.security_label == "U" and not patient.restricted
    assert patient.gp_ods_code == "Y12345"
    assert patient.verification_status == "01" and patient.version_id == "2"
    assert patient.addresses[0].postal_code == "LS1 6AE"
    assert {(t.system, t.value) for t in patient.telecoms} == {
        ("phone", "01632960587"),
        ("email", "jane.smith@example.com"),
    }
    assert patient.deceased_date_time == ""
    assert json.loads(response.fhir_json)["id"] == "9000000009"
    assert await sandbox.pds_requests() == 1
    assert cache_count("miss") == misses + 1

    again = await adapter.stub.GetPatient(get("9000000009"), timeout=10)
    assert again == response
    assert await sandbox.pds_requests() == 1  # served from Redis
    assert cache_count("hit") == hits + 1


async def test_not_found_and_invalidated_are_not_found_and_never_cached(
    adapter: Adapter, sandbox: Sandbox
) -> None:
    error = await expect_error(
        adapter.stub.GetPatient(get("9111231130"), timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "PATIENT_NOT_FOUND",
    )
    info = error_info(error)
    assert info is not None and info.metadata["pds_code"] == "RESOURCE_NOT_FOUND"
    assert "9111231130" not in (error.details() or "")
    await expect_error(
        adapter.stub.GetPatient(get("9111231130"), timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "PATIENT_NOT_FOUND",
    )
    await expect_error(
        adapter.stub.GetPatient(get("9000000076"), timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "INVALIDATED_RESOURCE",
    )
    assert await sandbox.pds_requests() == 3  # errors are never cached


@pytest.mark.parametrize("value", ["9000000001", "900000000", "abcdefghij", ""])
async def test_invalid_nhs_number_is_rejected_before_any_call(
    adapter: Adapter, sandbox: Sandbox, value: str
) -> None:
    error = await expect_error(
        adapter.stub.GetPatient(get(value), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_NHS_NUMBER",
    )
    assert "Modulus 11" in (error.details() or "")
    assert await sandbox.pds_requests() == 0


async def test_restricted_patient_is_flagged_without_location_and_not_cached(
    adapter: Adapter, sandbox: Sandbox, stack: Stack
) -> None:
    response = await adapter.stub.GetPatient(get("9000000025"), timeout=10)
    patient = response.patient
    assert patient.restricted and patient.security_label == "R"
    assert not patient.addresses and not patient.telecoms and patient.gp_ods_code == ""
    assert patient.names[0].family == "SMYTHE"
    raw = json.loads(response.fhir_json)
    assert "address" not in raw and "generalPractitioner" not in raw
    await adapter.stub.GetPatient(get("9000000025"), timeout=10)
    assert await sandbox.pds_requests() == 2
    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        assert await client.exists("xcagw:pds:patient:v1:9000000025") == 0
        assert await client.ttl("xcagw:pds:patient:v1:9000000025") == -2
    finally:
        await client.aclose()


async def test_concurrent_misses_for_one_patient_share_one_pds_request(
    adapter: Adapter, sandbox: Sandbox
) -> None:
    # A slow PDS makes the calls overlap however busy the machine is (single-flight only joins
    # reads that are still in flight).
    await sandbox.set_pds_faults(latency_ms=400)
    responses = await asyncio.gather(
        *(adapter.stub.GetPatient(get("9000000009"), timeout=10) for _ in range(10))
    )
    assert {r.patient.nhs_number for r in responses} == {"9000000009"}
    assert len({r.fhir_json for r in responses}) == 1
    assert await sandbox.pds_requests() == 1
    # Once the shared read is over, the next miss reads PDS again (nothing stays in flight).
    await adapter.stub.GetPatient(get("9000000017"), timeout=10)
    assert await sandbox.pds_requests() == 2


async def test_concurrent_misses_share_the_failure_too(adapter: Adapter, sandbox: Sandbox) -> None:
    await sandbox.set_pds_faults(latency_ms=400)
    results = await asyncio.gather(
        *(adapter.stub.GetPatient(get("9111231130"), timeout=10) for _ in range(5)),
        return_exceptions=True,
    )
    for result in results:
        assert isinstance(result, grpc.aio.AioRpcError), result
        assert result.code() == grpc.StatusCode.NOT_FOUND
        assert error_reason(result) == "PATIENT_NOT_FOUND"
    assert await sandbox.pds_requests() == 1


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """pds-adapter's log lines as the service writes them (ECS JSON, log context included)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EcsJsonFormatter("pds-adapter"))
    logger = logging.getLogger("pds_adapter")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _context(name: str) -> common_pb2.RequestContext:
    return common_pb2.RequestContext(
        correlation_id=f"corr-{name}", partner_id=f"partner-{name}", transaction="ITI-47"
    )


async def test_shared_read_serves_each_caller_within_its_own_deadline(
    adapter: Adapter, sandbox: Sandbox, json_logs: io.StringIO
) -> None:
    # A token in hand first, so the short caller's read reaches PDS at once.
    await adapter.stub.GetPatient(get("9000000017"), timeout=10)
    await sandbox.reset_stats()
    json_logs.seek(0)
    json_logs.truncate()
    await sandbox.set_pds_faults(latency_ms=1500)
    request = pds_adapter_pb2.GetPatientRequest
    short = adapter.stub.GetPatient(
        request(context=_context("short"), nhs_number="9000000009"), timeout=0.6
    )
    # The long caller joins only once the short caller's read is at PDS (the sandbox counts a
    # request on arrival), so the short caller is the one that started the shared read.
    while await sandbox.pds_requests() == 0:
        assert not short.done(), "the short call ended before its read reached PDS"
        await asyncio.sleep(0.01)
    long = await adapter.stub.GetPatient(
        request(context=_context("long"), nhs_number="9000000009"), timeout=10
    )
    assert long.patient.nhs_number == "9000000009"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await short
    # The client's deadline and the adapter's wait end together: either may report it.
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await sandbox.pds_requests() == 1

    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    reads = [line for line in lines if line["message"].startswith("PDS patient read")]
    # The long caller's access is logged under its own ids, though the read was not its own.
    assert [
        (r["labels.correlation_id"], r["labels.partner_id"], r["labels.shared_read"]) for r in reads
    ] == [("corr-long", "partner-long", True)]
    failures = [line for line in lines if line["message"].startswith("GetPatient failed")]
    assert {(f["labels.correlation_id"], f["labels.partner_id"]) for f in failures} <= {
        ("corr-short", "partner-short")
    }


async def test_superseded_number_returns_the_current_record_and_both_numbers(
    adapter: Adapter,
) -> None:
    response = await adapter.stub.GetPatient(get("9000000041"), timeout=10)
    assert response.patient.nhs_number == "9000000068"
    assert response.patient.superseded_from == "9000000041"
    # A cached superseded read still reports both numbers.
    cached = await adapter.stub.GetPatient(get("9000000041"), timeout=10)
    assert cached.patient.superseded_from == "9000000041"
    current = await adapter.stub.GetPatient(get("9000000068"), timeout=10)
    assert current.patient.superseded_from == ""


async def test_deceased_patient(adapter: Adapter) -> None:
    response = await adapter.stub.GetPatient(get("9000000084"), timeout=10)
    assert response.patient.deceased_date_time == "2023-11-02T00:00:00+00:00"
    assert [n.given for n in response.patient.names] == [["Arthur", "John"]]


async def test_patient_without_gp(adapter: Adapter) -> None:
    response = await adapter.stub.GetPatient(get("9000000092"), timeout=10)
    assert response.patient.gp_ods_code == "" and not response.patient.restricted


# ------------------------------------------------------------------------------ search


def search(**fields: object) -> pds_adapter_pb2.SearchPatientsRequest:
    return pds_adapter_pb2.SearchPatientsRequest(context=CONTEXT, **fields)  # type: ignore[arg-type]


async def test_search_single_match(adapter: Adapter) -> None:
    response = await adapter.stub.SearchPatients(
        search(family="Smith", birth_date_from="2010-10-22", birth_date_to="2010-10-22"),
        timeout=10,
    )
    assert [p.nhs_number for p in response.patients] == ["9000000009"]
    assert list(response.scores) == [1.0]
    assert json.loads(response.fhir_json)["resourceType"] == "Bundle"


async def test_search_too_many_matches_then_refined(adapter: Adapter) -> None:
    await expect_error(
        adapter.stub.SearchPatients(
            search(family="JONES", birth_date_from="1980-04-12", birth_date_to="1980-04-12"),
            timeout=10,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOO_MANY_MATCHES",
    )
    refined = await adapter.stub.SearchPatients(
        search(
            family="JONES", given=["Alex"], birth_date_from="1980-04-12", birth_date_to="1980-04-12"
        ),
        timeout=10,
    )
    assert [p.nhs_number for p in refined.patients] == ["9000000114"]


async def test_search_restricted_and_no_match(adapter: Adapter) -> None:
    restricted = await adapter.stub.SearchPatients(
        search(family="Smythe", given=["Janet"], gender="female", birth_date_from="2005-06-16",
               birth_date_to="2005-06-16"),
        timeout=10,
    )  # fmt: skip
    assert restricted.patients[0].restricted and not restricted.patients[0].addresses
    empty = await adapter.stub.SearchPatients(
        search(family="Nobody", birth_date_from="1900-01-01", birth_date_to="1900-01-01"),
        timeout=10,
    )
    assert list(empty.patients) == [] and list(empty.scores) == []


async def test_search_invalid_request_is_rejected_before_any_call(
    adapter: Adapter, sandbox: Sandbox
) -> None:
    error = await expect_error(
        adapter.stub.SearchPatients(search(family="Smith"), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_SEARCH",
    )
    assert "birth date" in (error.details() or "")
    assert await sandbox.pds_requests() == 0


# ------------------------------------------------------------------------------ resilience


async def test_429_then_success_with_the_same_request(adapter: Adapter, sandbox: Sandbox) -> None:
    await sandbox.set_pds_faults(burst_429=2, retry_after_seconds=0)
    response = await adapter.stub.GetPatient(get("9000000017"), timeout=10)
    assert response.patient.nhs_number == "9000000017"
    assert await sandbox.pds_responses() == {"429": 2, "200": 1}


async def test_429_that_persists_is_resource_exhausted(adapter: Adapter, sandbox: Sandbox) -> None:
    await sandbox.set_pds_faults(burst_429=10, retry_after_seconds=0)
    await expect_error(
        adapter.stub.GetPatient(get("9000000017"), timeout=10),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "TOO_MANY_REQUESTS",
    )
    assert await sandbox.pds_responses() == {"429": 3}  # retry_max_attempts


@pytest.mark.parametrize(
    ("fault", "code", "reason", "retry_after"),
    [
        ({"burst_429": 10, "retry_after_seconds": 7}, "RESOURCE_EXHAUSTED",
         "TOO_MANY_REQUESTS", "7.0"),
        ({"error_rate": 1.0, "error_status": 503, "retry_after_seconds": 3}, "UNAVAILABLE",
         "UPSTREAM_UNAVAILABLE", "3.0"),
        # The sandbox sends Retry-After with 429 and 503 only: nothing to pass on for a 500.
        ({"error_rate": 1.0, "error_status": 500}, "UNAVAILABLE", "UPSTREAM_UNAVAILABLE", None),
    ],
)  # fmt: skip
async def test_final_retry_after_is_passed_on(
    start_adapter: AdapterFactory,
    sandbox: Sandbox,
    fault: dict[str, object],
    code: str,
    reason: str,
    retry_after: str | None,
) -> None:
    # We wait at most 0.1 s between our own attempts; the caller learns what PDS asked for.
    async with start_adapter(retry_max_attempts=2, retry_after_cap_seconds=0.1) as adapter:
        await sandbox.set_pds_faults(**fault)
        error = await expect_error(
            adapter.stub.GetPatient(get("9000000017"), timeout=10),
            grpc.StatusCode[code],
            reason,
        )
    info = error_info(error)
    assert info is not None
    assert info.metadata["http_status"] == str(fault.get("error_status", 429))
    assert info.metadata.get("retry_after_seconds") == retry_after


async def test_pds_down_opens_the_breaker_which_then_recovers(
    start_adapter: AdapterFactory, sandbox: Sandbox
) -> None:
    async with start_adapter(
        retry_max_attempts=2, breaker_failure_threshold=2, breaker_reset_timeout_seconds=1.0
    ) as adapter:
        await sandbox.set_pds_faults(error_rate=1.0, error_status=503, retry_after_seconds=0)
        for _ in range(2):
            await expect_error(
                adapter.stub.GetPatient(get("9000000009"), timeout=10),
                grpc.StatusCode.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
            )
        assert await sandbox.pds_responses() == {"503": 4}
        assert breaker_state() == 1.0
        error = await expect_error(
            adapter.stub.GetPatient(get("9000000009"), timeout=10),
            grpc.StatusCode.UNAVAILABLE,
            "CIRCUIT_OPEN",
        )
        assert await sandbox.pds_requests() == 4  # failed fast, PDS not called
        info = error_info(error)
        assert info is not None and float(info.metadata["retry_after_seconds"]) <= 1.0

        await sandbox.clear_faults()
        deadline = time.monotonic() + 10
        while True:
            try:
                response = await adapter.stub.GetPatient(get("9000000009"), timeout=10)
                break
            except grpc.aio.AioRpcError as exc:
                assert error_reason(exc) == "CIRCUIT_OPEN"
                assert time.monotonic() < deadline, "breaker never let a probe through"
                await asyncio.sleep(0.2)
        assert response.patient.nhs_number == "9000000009"
        assert breaker_state() == 0.0
        assert await sandbox.pds_requests() == 5  # exactly one probe, which closed it


async def test_token_refresh_after_expiry(adapter: Adapter, sandbox: Sandbox) -> None:
    await adapter.stub.GetPatient(get("9000000009"), timeout=10)
    oauth_before = await sandbox.oauth_requests()
    assert await sandbox.expire_tokens() >= 1
    response = await adapter.stub.GetPatient(get("9000000017"), timeout=10)
    assert response.patient.nhs_number == "9000000017"
    assert await sandbox.pds_responses() == {"200": 2, "401": 1}
    assert await sandbox.oauth_requests() == oauth_before + 1  # token-service fetched a new one


async def test_caller_deadline_is_honoured(adapter: Adapter, sandbox: Sandbox) -> None:
    await sandbox.set_pds_faults(latency_ms=3000)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await adapter.stub.GetPatient(get("9000000033"), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_adapter_deadline_gives_deadline_exceeded(
    start_adapter: AdapterFactory, sandbox: Sandbox
) -> None:
    async with start_adapter(deadline_seconds=0.5) as adapter:
        await sandbox.set_pds_faults(latency_ms=3000)
        await expect_error(
            adapter.stub.GetPatient(get("9000000033"), timeout=10),
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "DEADLINE_EXCEEDED",
        )


async def test_malformed_pds_body_is_a_clear_error(adapter: Adapter, sandbox: Sandbox) -> None:
    await sandbox.set_pds_faults(malformed_rate=1.0)
    await expect_error(
        adapter.stub.GetPatient(get("9000000033"), timeout=10),
        grpc.StatusCode.INTERNAL,
        "UPSTREAM_BAD_RESPONSE",
    )


# ------------------------------------------------------------------------------ operations


async def test_readiness_reports_serving(adapter: Adapter) -> None:
    async with grpc.aio.insecure_channel(adapter.addr) as channel:
        deadline = time.monotonic() + 10
        while not await check_health(channel, "xcagw.pds.v1.PdsAdapterService"):
            assert time.monotonic() < deadline, "pds-adapter never became SERVING"
            await asyncio.sleep(0.05)


async def test_logs_never_carry_nhs_numbers(
    adapter: Adapter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await adapter.stub.GetPatient(get("9000000009"), timeout=10)
    await adapter.stub.GetPatient(get("9000000041"), timeout=10)
    await adapter.stub.SearchPatients(
        search(family="Smith", birth_date_from="2010-10-22", birth_date_to="2010-10-22"),
        timeout=10,
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await adapter.stub.GetPatient(get("9111231130"), timeout=10)
    # Our loggers only: the sandbox's uvicorn access log and httpx's INFO line (silenced by
    # xcagw_common.logging.setup_logging in a real process) are not pds-adapter's output.
    ours = [r for r in caplog.records if r.name.startswith(("pds_adapter", "xcagw_common"))]
    assert ours
    for record in ours:
        text = record.getMessage() + repr(getattr(record, "ecs", ""))
        for nhs in ("9000000009", "9000000041", "9000000068", "9111231130"):
            assert nhs not in text, record.getMessage()
