"""Process faults in the real stack: Redis SIGKILL mid-burst, adapters killed, soap-edge SIGTERM.

Every test leaves the session stack healthy (all processes back, faults cleared, soap-edge
ready), so the e2e tests after it run on a normal stack.

Durability contract checked here: the launcher runs Redis with AOF `appendfsync everysec`, so a
document acknowledged (ITI-38 Success) more than a second before a SIGKILL must survive the
restart. Writes acknowledged in the last second before the kill may be lost by design (the
fsync window); the test therefore waits 1.5 s after the last acknowledgement before it kills.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import time
from dataclasses import dataclass

import httpx
import pytest
import redis

from xcagw_devstack.launcher import Stack
from xcagw_devstack.partner import (
    DocumentRef,
    PartnerClient,
    Reply,
    documents_in,
    retrieved_documents,
)

# Normal panel patients with a GP record; never 9000000017 (test_e2e_traces needs its miss).
PATIENTS = ("9000000009", "9000000068", "9000000114", "9000000122")
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
RIM = {"rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"}


@dataclass
class Acked:
    """A document whose ITI-38 Success the partner received, with its advertised hash and size."""

    nhs: str
    ref: DocumentRef
    sha1: str
    size: int


def forget(stack: Stack, *nhs_numbers: str) -> None:
    """Drop soap-edge's stored document pointer and pds-adapter's cached read: a cold miss."""
    client = redis.Redis.from_url(stack.redis_url)
    try:
        for nhs in nhs_numbers:
            client.delete(f"xcagw:soap-edge:patient-doc:{nhs}", f"xcagw:pds:patient:v1:{nhs}")
    finally:
        client.close()


def sandbox(stack: Stack, method: str, path: str, body: object = None) -> dict[str, object]:
    resp = httpx.request(method, f"{stack.sandbox_url}{path}", json=body, timeout=10)
    resp.raise_for_status()
    result: dict[str, object] = resp.json()
    return result


def gpconnect_requests(stack: Stack) -> int:
    return int(sandbox(stack, "GET", "/_admin/stats")["requests"]["gpconnect"])  # type: ignore[index]


def ready_status(stack: Stack) -> int:
    try:
        return httpx.get(f"{stack.management_url}/health/ready", timeout=2).status_code
    except httpx.HTTPError:
        return -1


async def wait_status(stack: Stack, expected: int, within: float = 60.0) -> int:
    deadline = time.monotonic() + within
    status = -1
    while time.monotonic() < deadline:
        status = await asyncio.to_thread(ready_status, stack)
        if status == expected:
            return status
        await asyncio.sleep(0.3)
    return status


def ensure_running(stack: Stack, *names: str) -> None:
    for name in names:
        comp = stack.components[name]
        if comp.process is None or comp.process.poll() is not None:
            stack.start_component(comp, timeout=90)


def acked_documents(nhs: str, reply: Reply) -> list[Acked]:
    out = []
    objects = reply.xpath("//rim:ExtrinsicObject")
    for obj, ref in zip(objects, documents_in(reply), strict=True):
        sha1 = obj.xpath("rim:Slot[@name='hash']/rim:ValueList/rim:Value/text()", namespaces=RIM)
        size = obj.xpath("rim:Slot[@name='size']/rim:ValueList/rim:Value/text()", namespaces=RIM)
        if ref.unique_id and sha1 and size:
            out.append(Acked(nhs, ref, str(sha1[0]), int(size[0])))
    return out


def query_status(reply: Reply) -> str:
    (status,) = reply.xpath("//query:AdhocQueryResponse/@status")
    return str(status).rsplit(":", 1)[-1]


def registry_errors(reply: Reply) -> list[str]:
    return [str(c) for c in reply.xpath("//rs:RegistryError/@errorCode")]


def hl7_ack(reply: Reply) -> tuple[str, str]:
    ack = reply.xpath("//hl7:acknowledgement/hl7:typeCode/@code")
    qr = reply.xpath("//hl7:queryAck/hl7:queryResponseCode/@code")
    return (str(ack[0]) if ack else "", str(qr[0]) if qr else "")


def assert_clean(reply: Reply) -> None:
    """During an outage: the error in the body (HTTP 200) or a SOAP fault; never non-SOAP."""
    fault = reply.xpath("//env:Fault/env:Code/env:Value/text()")
    if fault:
        assert str(fault[0]) in ("env:Receiver", "env:Sender"), fault
        assert reply.status_code in (400, 500)
    else:
        assert reply.status_code == 200


@pytest.mark.timeout(240)
async def test_redis_sigkill_mid_burst_loses_no_acknowledged_document(stack: Stack) -> None:
    forget(stack, *PATIENTS)
    client = PartnerClient(stack.soap_edge_url, client=httpx.AsyncClient(timeout=30))
    try:
        # Acknowledged writes: one generated document per patient.
        replies = await asyncio.gather(*(client.find_documents(n) for n in PATIENTS))
        acked = [d for n, r in zip(PATIENTS, replies, strict=True) for d in acked_documents(n, r)]
        assert len(acked) == len(PATIENTS), [r.raw[:300] for r in replies]
        # AOF appendfsync everysec: a second later every acknowledged write is on disk.
        await asyncio.sleep(1.5)

        seen: list[Reply] = []
        stop = asyncio.Event()

        async def burst(i: int) -> None:
            while not stop.is_set():
                doc = acked[i % len(acked)]
                i += 1
                with contextlib.suppress(httpx.TransportError):
                    seen.append(await client.find_documents(doc.nhs))
                    seen.append(await client.retrieve([doc.ref]))
                    seen.append(await client.pdq(nhs_number=doc.nhs))

        workers = [asyncio.create_task(burst(i)) for i in range(4)]
        await asyncio.sleep(0.5)
        await asyncio.to_thread(stack.kill, "redis", signal.SIGKILL)
        assert await wait_status(stack, 503) == 503
        await asyncio.sleep(1.0)  # requests keep arriving while Redis is gone
        await asyncio.to_thread(stack.start_component, stack.components["redis"])
        assert await wait_status(stack, 200) == 200
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*workers)
        assert seen, "the burst sent nothing"
        for reply in seen:
            assert_clean(reply)

        # After the restart every acknowledged document is still there, byte for byte, and it
        # is the same stored snapshot (same entryUUID), not a regenerated one.
        for doc in acked:
            got = await client.retrieve([doc.ref])
            assert got.xpath("//rs:RegistryResponse/@status") == [SUCCESS], got.raw[:500]
            ((uid, data),) = retrieved_documents(got)
            assert uid == doc.ref.unique_id
            assert hashlib.sha1(data, usedforsecurity=False).hexdigest() == doc.sha1
            assert len(data) == doc.size
            again = await client.find_documents(doc.nhs)
            assert [d.entry_uuid for d in documents_in(again)] == [doc.ref.entry_uuid]
    finally:
        await client.aclose()
        await asyncio.to_thread(ensure_running, stack, "redis")
        assert await wait_status(stack, 200) == 200


@pytest.mark.timeout(300)
async def test_killed_adapters_give_clean_errors_and_recover(stack: Stack) -> None:
    cached, cold = PATIENTS[0], PATIENTS[1]
    client = PartnerClient(stack.soap_edge_url, client=httpx.AsyncClient(timeout=30))
    try:
        warm = await client.find_documents(cached)
        (doc,) = acked_documents(cached, warm)
        forget(stack, cold)

        await asyncio.to_thread(stack.kill, "gpconnect-adapter", signal.SIGKILL)
        assert await wait_status(stack, 503) == 503
        # A miss needs GP Connect: a Failure naming the unreachable community, not a fault.
        miss = await client.find_documents(cold)
        assert miss.status_code == 200
        assert query_status(miss) == "Failure"
        assert registry_errors(miss) == ["XDSUnavailableCommunity"]
        # What is already stored keeps being served.
        hit = await client.find_documents(cached)
        assert query_status(hit) == "Success"
        assert [d.entry_uuid for d in documents_in(hit)] == [doc.ref.entry_uuid]
        got = await client.retrieve([doc.ref])
        assert got.xpath("//rs:RegistryResponse/@status") == [SUCCESS]
        assert hl7_ack(await client.pdq(nhs_number=cached)) == ("AA", "OK")

        await asyncio.to_thread(stack.kill, "pds-adapter", signal.SIGKILL)
        forget(stack, cached)
        pdq = await client.pdq(nhs_number=cached)
        assert pdq.status_code == 200
        assert hl7_ack(pdq) == ("AE", "AE")
        assert pdq.xpath("//hl7:acknowledgementDetail/hl7:code/@code") == ["INTERR"]
        miss = await client.find_documents(cold)
        assert query_status(miss) == "Failure"
        assert registry_errors(miss) == ["XDSRegistryNotAvailable"]
    finally:
        await asyncio.to_thread(ensure_running, stack, "pds-adapter", "gpconnect-adapter")

    try:
        assert await wait_status(stack, 200) == 200
        # Recovery: the cold patient's record is fetched once the channels have reconnected.
        deadline = time.monotonic() + 60
        recovered: Reply | None = None
        while time.monotonic() < deadline:
            recovered = await client.find_documents(cold)
            if query_status(recovered) == "Success":
                break
            await asyncio.sleep(1.0)
        assert recovered is not None and query_status(recovered) == "Success"
        assert documents_in(recovered)
        assert hl7_ack(await client.pdq(nhs_number=cached)) == ("AA", "OK")
    finally:
        await client.aclose()


@pytest.mark.timeout(240)
async def test_sigterm_lets_in_flight_requests_finish(stack: Stack) -> None:
    """uvicorn's graceful shutdown: SIGTERM stops accepting, in-flight exchanges complete."""
    cold = PATIENTS[1:]
    forget(stack, *cold)
    # GP Connect answers slowly, so the requests are still in flight when SIGTERM arrives.
    sandbox(stack, "PUT", "/_admin/faults", {"gpconnect": {"latency_ms": 1500}})
    soap_edge = stack.components["soap-edge"]
    clients = [PartnerClient(stack.soap_edge_url) for _ in cold]
    try:
        before = gpconnect_requests(stack)
        tasks = [
            asyncio.create_task(c.find_documents(n)) for c, n in zip(clients, cold, strict=True)
        ]
        # In flight for certain: each request has reached GP Connect (sandbox counter).
        for _ in range(600):
            if gpconnect_requests(stack) - before >= len(cold):
                break
            await asyncio.sleep(0.05)
        assert gpconnect_requests(stack) - before >= len(cold)
        await asyncio.to_thread(stack.kill, "soap-edge", signal.SIGTERM)
        replies = await asyncio.gather(*tasks)
        assert soap_edge.process is not None
        assert soap_edge.process.returncode == 0, "soap-edge did not stop gracefully"
        for reply in replies:
            assert reply.status_code == 200
            assert query_status(reply) == "Success"
            assert documents_in(reply)
    finally:
        for c in clients:
            await c.aclose()
        sandbox(stack, "DELETE", "/_admin/faults")
        await asyncio.to_thread(ensure_running, stack, "soap-edge")
    assert await wait_status(stack, 200) == 200
