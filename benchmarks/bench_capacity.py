"""Capacity figures for sizing a deployment (issue #11): per replica and per cached document.

    .venv/bin/python benchmarks/bench_capacity.py [--seconds 8] [--out FILE.json]

On a real local stack (the launcher's, free ports, zero-latency NHS sandbox):

1. Redis memory per cached document: a cold ITI-38 for every panel patient that has a record
   (each stores one C-CDA and its metadata), then `MEMORY USAGE` of every soap-edge key grouped
   by kind, and the `used_memory` growth; also the partner-session keys one query leaves.
2. Requests/s per soap-edge replica: one soap-edge process (one worker), cached ITI-38 and
   ITI-39 with 16 keep-alive connections (the same raw load generator as bench_throughput.py),
   and a partner flow mix (ITI-38 then ITI-39, two patients). Server CPU share is recorded: a
   replica is sized by its CPU, so figures are also given per CPU-second.
3. Conversions/s per ccda-converter replica: ConvertBundle over real gRPC on the stack's
   converter with the sandbox's full record (9000000009) and, when ../shared is present, the
   largest real GP Connect bundle; 2 concurrent callers (the converter is CPU bound).

Writes JSON (with the machine and its load) and prints a summary. The sizing rules derived from
these figures are in docs/operations/capacity.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import http_request, machine, run_load, stack_overrides  # noqa: E402

from xcagw.ccda.v1 import ccda_converter_pb2, ccda_converter_pb2_grpc  # noqa: E402
from xcagw_common.testing import shared_dir  # noqa: E402
from xcagw_devstack.launcher import Stack  # noqa: E402
from xcagw_devstack.partner import (  # noqa: E402
    ACTIONS,
    NHS_NUMBER_OID,
    Requester,
    documents_in,
    envelope,
    find_documents,
    parse_reply,
    retrieve,
    xua_assertion,
)
from xcagw_devstack.sandbox.panel import PANEL  # noqa: E402
from xcagw_devstack.sandbox.synthetic import generate_bundle  # noqa: E402

SOAP_CT = "application/soap+xml; charset=UTF-8"
LARGEST_REAL = "9692136744.json"


def soap(transaction: str, body: Any, base: str) -> bytes:
    payload, _ = envelope(
        ACTIONS[transaction], body, to=f"{base}/{transaction}", assertion=xua_assertion(Requester())
    )
    return payload


def cx(nhs: str) -> str:
    return f"{nhs}^^^&{NHS_NUMBER_OID}&ISO"


def key_kind(name: str) -> str:
    """`xcagw:soap-edge:doc:{...}` -> `soap-edge:doc` (hash tags and ids dropped)."""
    parts = [p for p in name.replace("{", ":").replace("}", ":").split(":") if p]
    if len(parts) >= 3 and parts[0] == "xcagw":
        return f"{parts[1]}:{parts[2]}"
    return parts[0] if parts else name


def redis_usage(client: redis.Redis) -> dict[str, dict[str, int]]:
    usage: dict[str, dict[str, int]] = defaultdict(lambda: {"keys": 0, "bytes": 0})
    for name in client.scan_iter(count=1000):
        kind = key_kind(name.decode())
        usage[kind]["keys"] += 1
        usage[kind]["bytes"] += int(client.memory_usage(name, samples=0) or 0)
    return dict(usage)


async def store_documents(stack: Stack) -> dict[str, Any]:
    """Cold ITI-38 for every panel patient; Redis memory per stored document."""
    client = redis.Redis.from_url(stack.redis_url)
    before = int(client.info("memory")["used_memory"])
    stored: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=120) as http:
        for patient in PANEL:
            resp = await http.post(
                f"{stack.soap_edge_url}/iti38",
                content=soap("iti38", find_documents(cx(patient.nhs_number)), stack.soap_edge_url),
                headers={"content-type": SOAP_CT},
            )
            docs = [d for d in documents_in(parse_reply(resp)) if d.unique_id]
            if not docs:
                continue  # restricted, unknown or no GP Connect record: nothing is stored
            got = await http.post(
                f"{stack.soap_edge_url}/iti39",
                content=soap("iti39", retrieve(docs[:1]), stack.soap_edge_url),
                headers={"content-type": SOAP_CT},
            )
            stored.append({"ccd_bytes": _largest_part(got), "documents": len(docs)})
    after = int(client.info("memory")["used_memory"])
    usage = redis_usage(client)
    client.close()
    n = len(stored)
    doc_keys = usage.get("soap-edge:doc", {"keys": 0, "bytes": 0})
    ccd_mean = sum(s["ccd_bytes"] for s in stored) / n if n else 0.0
    per_doc = doc_keys["bytes"] / doc_keys["keys"] if doc_keys["keys"] else 0.0
    return {
        "patients_with_documents": n,
        "stored_documents": doc_keys["keys"],
        "ccd_bytes_mean": round(ccd_mean),
        "redis_used_memory_growth_bytes": after - before,
        "redis_used_memory_growth_per_document": round((after - before) / n) if n else 0,
        "soap_edge_document_key_bytes_per_document": round(per_doc),
        "overhead_over_ccd_size": round(per_doc / ccd_mean, 3) if ccd_mean else 0.0,
        "keys_by_kind": usage,
    }


def _largest_part(resp: httpx.Response) -> int:
    """Size of the retrieved document: the largest MIME part of the MTOM answer."""
    ctype = resp.headers.get("content-type", "")
    marker = "boundary="
    if marker not in ctype:
        return len(resp.content)
    boundary = ctype.split(marker, 1)[1].split(";", 1)[0].strip('"')
    parts = resp.content.split(b"--" + boundary.encode())
    return max((len(p) for p in parts), default=0)


def soap_edge_per_replica(stack: Stack, seconds: float, concurrency: int) -> dict[str, Any]:
    base = stack.soap_edge_url
    host = f"127.0.0.1:{stack.ports['soap-edge']}"
    pid = stack.components["soap-edge"].process.pid  # type: ignore[union-attr]
    patients = ("9000000009", "9000000068")
    docs = {}
    for nhs in patients:
        reply = httpx.post(
            f"{base}/iti38",
            content=soap("iti38", find_documents(cx(nhs)), base),
            headers={"content-type": SOAP_CT},
            timeout=120,
        )
        docs[nhs] = [d for d in documents_in(parse_reply(reply)) if d.unique_id][:1]
        if not docs[nhs]:
            raise SystemExit(f"warm-up ITI-38 for {nhs} failed: {reply.text[:300]}")

    def raw(path: str, bodies: list[bytes]) -> list[bytes]:
        return [http_request(path, host, b, SOAP_CT) for b in bodies]

    iti38 = [soap("iti38", find_documents(cx(n)), base) for n in patients * 8]
    iti39 = [soap("iti39", retrieve(docs[n]), base) for n in patients * 8]
    flow = [
        req
        for n in patients * 4
        for req in (
            http_request("/iti38", host, soap("iti38", find_documents(cx(n)), base), SOAP_CT),
            http_request("/iti39", host, soap("iti39", retrieve(docs[n]), base), SOAP_CT),
        )
    ]
    mixes = {
        "cached ITI-38": raw("/iti38", iti38),
        "cached ITI-39": raw("/iti39", iti39),
        "partner flow (ITI-38 then ITI-39)": flow,
    }
    out: dict[str, Any] = {}
    for label, requests in mixes.items():
        result = run_load(
            label, "127.0.0.1", stack.ports["soap-edge"], requests,
            seconds=seconds, concurrency=concurrency, server_pid=pid,
        )  # fmt: skip
        summary = result.summary()
        unexpected = {k: v for k, v in result.statuses.items() if k != 200}
        if unexpected:
            raise SystemExit(f"soap-edge {label}: unexpected statuses {unexpected}")
        cpu = summary["server_cpu_percent"] / 100
        summary["rps_per_cpu_second"] = round(summary["rps"] / cpu, 1) if cpu else 0.0
        out[label] = summary
    return out


async def _convert_until(stub: Any, request: Any, deadline: float, latencies: list[float]) -> int:
    done = 0
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        reply = await stub.ConvertBundle(request, timeout=60)
        latencies.append((time.perf_counter() - start) * 1000)
        if not reply.ccd_xml:
            raise SystemExit("ConvertBundle returned no CCD")
        done += 1
    return done


async def converter_per_replica(stack: Stack, seconds: float, callers: int) -> dict[str, Any]:
    bundles: dict[str, bytes] = {
        "sandbox full record 9000000009": json.dumps(generate_bundle("9000000009")).encode()
    }
    real = shared_dir() / "xhuma-fixtures" / "bundles" / LARGEST_REAL
    if real.is_file():
        bundles[f"largest real bundle {LARGEST_REAL}"] = real.read_bytes()
    pid = stack.components["ccda-converter"].process.pid  # type: ignore[union-attr]
    proc = psutil.Process(pid)

    def cpu_seconds() -> float:
        # The converter works in a process pool (CCDA_CONVERTER_WORKERS): count the workers too.
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.NoSuchProcess:
                continue
        return total

    out: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(stack.addr("ccda-converter")) as channel:
        stub = ccda_converter_pb2_grpc.CcdaConverterServiceStub(channel)
        for label, data in bundles.items():
            request = ccda_converter_pb2.ConvertBundleRequest(bundle_json=data)
            await stub.ConvertBundle(request, timeout=60)  # warm-up
            latencies: list[float] = []
            cpu0 = cpu_seconds()
            start = time.perf_counter()
            deadline = start + seconds
            counts = await asyncio.gather(
                *(_convert_until(stub, request, deadline, latencies) for _ in range(callers))
            )
            done = sum(counts)
            elapsed = time.perf_counter() - start
            cpu = (cpu_seconds() - cpu0) / elapsed
            latencies.sort()
            out[label] = {
                "bundle_bytes": len(data),
                "conversions": done,
                "conversions_per_s": round(done / elapsed, 1),
                "p50_ms": round(latencies[len(latencies) // 2], 1),
                "server_cpu_percent": round(cpu * 100, 1),
                "conversions_per_cpu_second": round(done / elapsed / cpu, 1) if cpu else 0.0,
            }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--converter-callers", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "capacity.json"
    )
    args = parser.parse_args()
    report: dict[str, Any] = {"machine_before": machine(), "command": " ".join(sys.argv)}
    workdir = Path(tempfile.mkdtemp(prefix="xcagw-capacity-"))
    stack = Stack(workdir=workdir, free_ports=True, echo=False, overrides=stack_overrides())
    try:
        stack.start(timeout=240)
        report["redis_per_document"] = asyncio.run(store_documents(stack))
        report["soap_edge_per_replica"] = soap_edge_per_replica(
            stack, args.seconds, args.concurrency
        )
        report["ccda_converter_per_replica"] = asyncio.run(
            converter_per_replica(stack, args.seconds, args.converter_callers)
        )
    finally:
        stack.stop()
    report["machine_after"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    mem = report["redis_per_document"]
    print(f"machine: {report['machine_before']}")
    print(
        f"Redis: {mem['stored_documents']} documents, CCD mean {mem['ccd_bytes_mean']} B, "
        f"soap-edge document keys {mem['soap_edge_document_key_bytes_per_document']} B/document "
        f"(x{mem['overhead_over_ccd_size']} of the CCD), used_memory growth "
        f"{mem['redis_used_memory_growth_per_document']} B/document (all services' keys)"
    )
    for label, row in report["soap_edge_per_replica"].items():
        print(
            f"soap-edge {label}: {row['rps']} req/s at {row['server_cpu_percent']} % CPU "
            f"({row['rps_per_cpu_second']} per CPU-second), p50 {row['p50_ms']} ms"
        )
    for label, row in report["ccda_converter_per_replica"].items():
        print(
            f"ccda-converter {label}: {row['conversions_per_s']} conversions/s at "
            f"{row['server_cpu_percent']} % CPU ({row['conversions_per_cpu_second']} per "
            f"CPU-second), p50 {row['p50_ms']} ms"
        )
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
