"""NHS sandbox faults through the whole stack: latency past deadlines, 5xx storms and 429 bursts.

Each test injects a fault with the sandbox's `PUT /_admin/faults` and counts what reached the
"NHS" with `GET /_admin/stats`: the errors partners see must be the right IHE ones (in the body,
HTTP 200), breakers must open, and retries must stay bounded (no retry storm).

Resilience settings these numbers follow (defaults, see the adapters' config.py): 3 attempts per
upstream read, breakers open after 5 consecutive failed reads, soap-edge gRPC deadlines
pds 5 s / gpconnect 9 s. The module leaves the stack as it found it: faults cleared, and the
two adapters restarted so that no breaker stays open for the tests after it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from xcagw_devstack.launcher import Stack
from xcagw_devstack.partner import PartnerClient, Reply

# Panel patients registered at B82617 (one GP Connect breaker); never 9000000017, whose first
# ITI-38 must stay a cache miss for test_e2e_traces.
B82617 = ("9000000068", "9000000114", "9000000122")
ATTEMPTS = 3
BREAKER_THRESHOLD = 5
# An initiating gateway gives up after 15 s (oehf/ipf#188): every answer must come before that.
PARTNER_TIMEOUT = 14.0


@pytest.fixture(scope="module")
def faulty(stack: Stack) -> Iterator[Stack]:
    """The session stack; afterwards faults are cleared and breakers reset by a restart."""
    admin(stack, "DELETE", "/_admin/faults")
    try:
        yield stack
    finally:
        admin(stack, "DELETE", "/_admin/faults")
        for name in ("pds-adapter", "gpconnect-adapter"):
            stack.restart(name, timeout=90)
        wait_ready(stack)


def admin(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    resp = httpx.request(method, f"{stack.sandbox_url}{path}", json=body, timeout=10)
    resp.raise_for_status()
    return resp.json()


def upstream_requests(stack: Stack) -> dict[str, int]:
    counts: dict[str, int] = admin(stack, "GET", "/_admin/stats")["requests"]
    return counts


def forget(stack: Stack, *nhs_numbers: str) -> None:
    """Drop soap-edge's stored document pointer and pds-adapter's cached read: a cold miss."""
    client = redis.Redis.from_url(stack.redis_url)
    try:
        for nhs in nhs_numbers:
            client.delete(f"xcagw:soap-edge:patient-doc:{nhs}", f"xcagw:pds:patient:v1:{nhs}")
    finally:
        client.close()


def wait_ready(stack: Stack, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{stack.management_url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("soap-edge did not become ready again")


def breaker_state(stack: Stack, service: str, name: str) -> float | None:
    text = httpx.get(
        f"http://127.0.0.1:{stack.ports[f'{service}-metrics']}/metrics", timeout=5
    ).text
    match = re.search(
        rf'^xcagw_circuit_breaker_state\{{name="{re.escape(name)}"\}} (\S+)$', text, re.M
    )
    return float(match.group(1)) if match else None


def registry_errors(reply: Reply) -> list[str]:
    return [str(c) for c in reply.xpath("//rs:RegistryError/@errorCode")]


def query_status(reply: Reply) -> str:
    (status,) = reply.xpath("//query:AdhocQueryResponse/@status")
    return str(status).rsplit(":", 1)[-1]


def hl7_ack(reply: Reply) -> tuple[str, str]:
    ack = reply.xpath("//hl7:acknowledgement/hl7:typeCode/@code")
    qr = reply.xpath("//hl7:queryAck/hl7:queryResponseCode/@code")
    return (str(ack[0]) if ack else "", str(qr[0]) if qr else "")


def partner(stack: Stack) -> PartnerClient:
    return PartnerClient(stack.soap_edge_url, client=httpx.AsyncClient(timeout=PARTNER_TIMEOUT))


async def test_gpconnect_latency_past_the_deadline_is_a_clean_unavailable_community(
    faulty: Stack,
) -> None:
    nhs = B82617[0]
    forget(faulty, nhs)
    admin(faulty, "PUT", "/_admin/faults", {"gpconnect": {"latency_ms": 12_000}})
    before = upstream_requests(faulty)
    client = partner(faulty)
    try:
        reply = await client.find_documents(nhs)
    finally:
        await client.aclose()
        admin(faulty, "DELETE", "/_admin/faults")
    assert reply.status_code == 200
    assert query_status(reply) == "Failure"
    assert registry_errors(reply) == ["XDSUnavailableCommunity"]
    # The 9 s deadline left no time for a second attempt: one request reached GP Connect.
    assert upstream_requests(faulty)["gpconnect"] - before["gpconnect"] == 1


async def test_concurrent_identical_misses_share_one_failed_fetch(faulty: Stack) -> None:
    """Single-flight must hold on failure too: waiters get the same failure, in time."""
    nhs = "9000000009"
    forget(faulty, nhs)
    admin(faulty, "PUT", "/_admin/faults", {"gpconnect": {"latency_ms": 12_000}})
    before = upstream_requests(faulty)
    clients = [partner(faulty) for _ in range(3)]
    try:
        replies = await asyncio.gather(
            *(c.find_documents(nhs) for c in clients), return_exceptions=True
        )
    finally:
        for c in clients:
            await c.aclose()
        admin(faulty, "DELETE", "/_admin/faults")
    timed_out = [r for r in replies if isinstance(r, httpx.TimeoutException)]
    assert not timed_out, f"{len(timed_out)} of 3 partners gave up after {PARTNER_TIMEOUT} s"
    for reply in replies:
        assert isinstance(reply, Reply)
        assert registry_errors(reply) == ["XDSUnavailableCommunity"]
    assert upstream_requests(faulty)["gpconnect"] - before["gpconnect"] == 1


async def test_pds_latency_past_the_deadline_is_an_hl7_application_error(faulty: Stack) -> None:
    nhs = B82617[1]
    forget(faulty, nhs)
    admin(faulty, "PUT", "/_admin/faults", {"pds": {"latency_ms": 8_000}})
    before = upstream_requests(faulty)
    client = partner(faulty)
    try:
        reply = await client.pdq(nhs_number=nhs)
    finally:
        await client.aclose()
        admin(faulty, "DELETE", "/_admin/faults")
    assert reply.status_code == 200
    assert hl7_ack(reply) == ("AE", "AE")
    assert reply.xpath("//hl7:acknowledgementDetail/hl7:code/@code") == ["INTERR"]
    assert upstream_requests(faulty)["pds"] - before["pds"] <= 2


async def test_pds_429_burst_is_retried_a_bounded_number_of_times(faulty: Stack) -> None:
    """A 429 is the NHS protecting itself: retried (honouring Retry-After), never a breaker trip."""
    nhs = "9000000009"
    forget(faulty, nhs)
    admin(
        faulty,
        "PUT",
        "/_admin/faults",
        {"pds": {"burst_429": ATTEMPTS, "retry_after_seconds": 1}},
    )
    client = partner(faulty)
    try:
        before = upstream_requests(faulty)
        throttled = await client.pdq(nhs_number=nhs)
        during = upstream_requests(faulty)
        recovered = await client.pdq(nhs_number=nhs)
        after = upstream_requests(faulty)
    finally:
        await client.aclose()
        admin(faulty, "DELETE", "/_admin/faults")
    # Every attempt was throttled: a clean AE, after exactly the allowed number of attempts.
    assert throttled.status_code == 200
    assert hl7_ack(throttled) == ("AE", "AE")
    assert during["pds"] - before["pds"] == ATTEMPTS
    # The burst is over: the next query is answered with one PDS call.
    assert hl7_ack(recovered) == ("AA", "OK")
    assert after["pds"] - during["pds"] == 1


async def test_gpconnect_5xx_storm_opens_the_breaker_without_a_retry_storm(faulty: Stack) -> None:
    forget(faulty, *B82617)
    admin(faulty, "PUT", "/_admin/faults", {"gpconnect": {"error_rate": 1, "error_status": 500}})
    before = upstream_requests(faulty)
    requests = 2 * BREAKER_THRESHOLD
    client = partner(faulty)
    replies: list[Reply] = []
    try:
        for i in range(requests):
            replies.append(await client.find_documents(B82617[i % len(B82617)]))
    finally:
        await client.aclose()
        admin(faulty, "DELETE", "/_admin/faults")
    for reply in replies:
        assert reply.status_code == 200
        assert query_status(reply) == "Failure"
        assert registry_errors(reply) == ["XDSUnavailableCommunity"]
    sent = upstream_requests(faulty)["gpconnect"] - before["gpconnect"]
    # Retries only until the breaker opens, then nothing: at most attempts x threshold calls,
    # where retrying every request would have cost attempts x requests.
    assert 0 < sent <= ATTEMPTS * BREAKER_THRESHOLD, sent
    assert breaker_state(faulty, "gpconnect-adapter", "gpconnect:B82617") == 1.0


async def test_pds_5xx_storm_opens_the_breaker_without_a_retry_storm(faulty: Stack) -> None:
    nhs = B82617[2]
    forget(faulty, nhs)
    admin(faulty, "PUT", "/_admin/faults", {"pds": {"error_rate": 1, "error_status": 500}})
    before = upstream_requests(faulty)
    requests = 2 * BREAKER_THRESHOLD
    client = partner(faulty)
    replies: list[Reply] = []
    try:
        for _ in range(requests):
            replies.append(await client.pdq(nhs_number=nhs))
    finally:
        await client.aclose()
        admin(faulty, "DELETE", "/_admin/faults")
    for reply in replies:
        assert reply.status_code == 200
        assert hl7_ack(reply) == ("AE", "AE")
        # Never a patient in an error answer.
        assert not reply.xpath("//hl7:subject1")
    sent = upstream_requests(faulty)["pds"] - before["pds"]
    assert 0 < sent <= ATTEMPTS * BREAKER_THRESHOLD, sent
    assert breaker_state(faulty, "pds-adapter", "pds") == 1.0
