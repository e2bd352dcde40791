"""Deadlines, retries and the per-provider circuit breaker, with faults injected in the sandbox."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from gpc_testkit import (
    RunningAdapter,
    Sandbox,
    record_request,
    request_context,
    rpc_error,
    run_adapter,
)

from xcagw.gpconnect.v1 import gpconnect_adapter_pb2
from xcagw_common.testing import free_port

C = grpc.StatusCode


async def test_gpc_slow_provider_times_out_per_attempt(
    adapter_settings: dict[str, Any], sandbox: Sandbox
) -> None:
    sandbox.set_faults({"gpconnect": {"latency_ms": 3000}})
    settings = {**adapter_settings, "gpconnect_timeout_seconds": 0.3, "gpconnect_max_attempts": 2}
    async with run_adapter(settings) as running:
        failure = await rpc_error(running.stub.GetStructuredRecord(record_request("9000000009")))
    assert (failure.code, failure.reason) == (C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT")
    assert failure.metadata["attempts"] == "2"
    assert sandbox.requests("gpconnect") == 2


async def test_gpc_slow_provider_hits_the_overall_deadline(
    adapter_settings: dict[str, Any], sandbox: Sandbox
) -> None:
    sandbox.set_faults({"gpconnect": {"latency_ms": 3000}})
    settings = {**adapter_settings, "request_deadline_seconds": 0.8}
    async with run_adapter(settings) as running:
        failure = await rpc_error(running.stub.GetStructuredRecord(record_request("9000000009")))
    assert (failure.code, failure.reason) == (C.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED")
    # The deadline left no room for a second attempt.
    assert sandbox.requests("gpconnect") == 1


async def test_gpc_caller_deadline_is_honoured(adapter: RunningAdapter, sandbox: Sandbox) -> None:
    sandbox.set_faults({"gpconnect": {"latency_ms": 3000}})
    failure = await rpc_error(
        adapter.stub.GetStructuredRecord(record_request("9000000009"), timeout=1.0)
    )
    assert failure.code == C.DEADLINE_EXCEEDED
    assert sandbox.requests("gpconnect") == 1


async def test_gpc_provider_5xx_is_retried_then_reported(
    adapter: RunningAdapter, sandbox: Sandbox
) -> None:
    sandbox.set_faults({"gpconnect": {"error_rate": 1.0, "error_status": 500}})
    failure = await rpc_error(adapter.stub.GetStructuredRecord(record_request("9000000009")))
    assert (failure.code, failure.reason) == (C.UNAVAILABLE, "INTERNAL_SERVER_ERROR")
    assert failure.metadata["attempts"] == "3"
    assert sandbox.requests("gpconnect") == adapter.settings.gpconnect_max_attempts == 3


async def test_gpc_ssp_502_is_retried(adapter: RunningAdapter, sandbox: Sandbox) -> None:
    sandbox.set_faults({"gpconnect": {"error_rate": 1.0, "error_status": 502}})
    failure = await rpc_error(adapter.stub.GetStructuredRecord(record_request("9000000009")))
    assert (failure.code, failure.reason) == (C.UNAVAILABLE, "ERROR_COMMUNICATING_TO_ENDPOINT_URL")
    assert sandbox.requests("gpconnect") == 3


async def test_gpc_transient_429_then_success(adapter: RunningAdapter, sandbox: Sandbox) -> None:
    sandbox.set_faults({"gpconnect": {"burst_429": 2, "retry_after_seconds": 0}})
    response = await adapter.stub.GetStructuredRecord(record_request("9000000009"), timeout=30)
    assert response.resource_counts["Patient"] == 1
    assert sandbox.requests("gpconnect") == 3


async def test_gpc_malformed_record_is_refused_without_retry(
    adapter: RunningAdapter, sandbox: Sandbox
) -> None:
    sandbox.set_faults({"gpconnect": {"malformed_rate": 1.0}})
    failure = await rpc_error(adapter.stub.GetStructuredRecord(record_request("9000000009")))
    assert (failure.code, failure.reason) == (C.INTERNAL, "INVALID_PROVIDER_RESPONSE")
    assert sandbox.requests("gpconnect") == 1


async def test_gpc_oversized_record_is_refused(
    adapter_settings: dict[str, Any], sandbox: Sandbox
) -> None:
    async with run_adapter({**adapter_settings, "max_record_bytes": 2000}) as running:
        failure = await rpc_error(running.stub.GetStructuredRecord(record_request("9000000009")))
    assert (failure.code, failure.reason) == (C.RESOURCE_EXHAUSTED, "RECORD_TOO_LARGE")
    assert sandbox.requests("gpconnect") == 1


async def test_gpc_unreachable_provider(adapter_settings: dict[str, Any], sandbox: Sandbox) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with run_adapter(
        {**adapter_settings, "ssp_prefix": dead, "gpconnect_max_attempts": 2}
    ) as running:
        failure = await rpc_error(running.stub.GetStructuredRecord(record_request("9000000009")))
    assert (failure.code, failure.reason) == (C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert sandbox.requests("gpconnect") == 0


async def test_gpc_breaker_is_per_provider_endpoint(
    adapter_settings: dict[str, Any], sandbox: Sandbox
) -> None:
    settings = {
        **adapter_settings,
        "gpconnect_max_attempts": 1,
        "breaker_failure_threshold": 2,
        "breaker_reset_seconds": 0.5,
    }
    async with run_adapter(settings) as running:
        # Warm the SDS cache for both practices so only GP Connect calls are counted below.
        await running.stub.GetStructuredRecord(record_request("9000000009"), timeout=30)
        await running.stub.GetStructuredRecord(record_request("9000000068"), timeout=30)
        sandbox.set_faults({"gpconnect": {"error_rate": 1.0, "error_status": 503}})
        sandbox.reset_stats()
        for _ in range(2):
            failure = await rpc_error(
                running.stub.GetStructuredRecord(record_request("9000000009"))
            )
            assert (failure.code, failure.reason) == (C.UNAVAILABLE, "INTERNAL_SERVER_ERROR")
        failure = await rpc_error(running.stub.GetStructuredRecord(record_request("9000000009")))
        assert (failure.code, failure.reason) == (C.UNAVAILABLE, "CIRCUIT_OPEN")
        assert sandbox.requests("gpconnect") == 2  # the open breaker failed fast
        sandbox.clear_faults()
        # B82617 (another provider endpoint) is not affected by Y12345's breaker.
        other = await running.stub.GetStructuredRecord(record_request("9000000068"), timeout=30)
        assert other.ods_code == "B82617"
        failure = await rpc_error(running.stub.GetStructuredRecord(record_request("9000000009")))
        assert failure.reason == "CIRCUIT_OPEN"
        # After the reset timeout one probe goes through and, succeeding, closes the breaker.
        await asyncio.sleep(0.6)
        response = await running.stub.GetStructuredRecord(record_request("9000000009"), timeout=30)
        assert response.ods_code == "Y12345"


async def test_gpc_sds_failure_is_retried_and_not_cached(
    adapter_settings: dict[str, Any], sandbox: Sandbox
) -> None:
    # Retry-After 0: the sandbox's default (1 s) is beyond retry_after_max_seconds, and a
    # Retry-After beyond the cap ends the retries (xcagw_common.resilience.RetryPolicy).
    sandbox.set_faults({"sds": {"error_rate": 1.0, "error_status": 503, "retry_after_seconds": 0}})
    lookup = gpconnect_adapter_pb2.LookupEndpointRequest(
        context=request_context(), ods_code="Y12345"
    )
    async with run_adapter({**adapter_settings, "sds_max_attempts": 2}) as running:
        failure = await rpc_error(running.stub.LookupEndpoint(lookup))
        assert (failure.code, failure.reason) == (C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
        assert sandbox.requests("sds") == 2
        sandbox.clear_faults()
        response = await running.stub.LookupEndpoint(lookup, timeout=10)
        assert not response.from_cache


@pytest.mark.parametrize(
    ("api", "fault", "code", "reason", "retry_after"),
    [
        # The sandbox's injected 429 carries a BAD_REQUEST OperationOutcome, and a provider's
        # Spine code decides the status (outcomes.from_http); the Retry-After is passed on.
        ("gpconnect", {"burst_429": 10, "retry_after_seconds": 7}, C.INVALID_ARGUMENT,
         "BAD_REQUEST", "7.0"),
        ("gpconnect", {"error_rate": 1.0, "error_status": 503, "retry_after_seconds": 3},
         C.UNAVAILABLE, "INTERNAL_SERVER_ERROR", "3.0"),
        # The sandbox sends Retry-After with 429 and 503 only: nothing to pass on for a 500.
        ("gpconnect", {"error_rate": 1.0, "error_status": 500}, C.UNAVAILABLE,
         "INTERNAL_SERVER_ERROR", None),
        ("sds", {"burst_429": 10, "retry_after_seconds": 7}, C.RESOURCE_EXHAUSTED,
         "RATE_LIMITED", "7.0"),
        ("sds", {"error_rate": 1.0, "error_status": 503, "retry_after_seconds": 3},
         C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", "3.0"),
    ],
)  # fmt: skip
async def test_gpc_final_retry_after_is_passed_on(
    adapter: RunningAdapter,
    sandbox: Sandbox,
    api: str,
    fault: dict[str, Any],
    code: C,
    reason: str,
    retry_after: str | None,
) -> None:
    # We wait at most retry_after_max_seconds (0.1 s) between our own attempts; the caller
    # learns what the upstream asked for and can wait that long before trying again.
    sandbox.set_faults({api: fault})
    failure = await rpc_error(adapter.stub.GetStructuredRecord(record_request("9000000009")))
    assert (failure.code, failure.reason) == (code, reason)
    assert failure.metadata["http_status"] == str(fault.get("error_status", 429))
    assert failure.metadata.get("retry_after_seconds") == retry_after
