"""Benchmark helpers: a raw keep-alive HTTP load generator, machine facts, stack set-up.

The load generator speaks HTTP/1.1 over asyncio streams with pre-built request bytes, so the
client costs as little as possible per request and the same client measures soap-edge and the
bare FastAPI baseline. Server CPU use is sampled with psutil to show which side saturated.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]

# Until dev.env carries the partner registry, the bench stack admits the partner client the way
# the development set-up of soap_edge.security does: anonymous partner, SAML read unverified.
DEV_PARTNER_OVERRIDES = {
    "SOAP_EDGE_ALLOW_INSECURE_DEV_PARTNERS": "true",
    "SOAP_EDGE_PARTNER_REGISTRY": json.dumps(
        {
            "anonymous_partner": "dev",
            "partners": [{"id": "dev", "saml": {"required": False, "verify": False}}],
        }
    ),
}


def stack_overrides() -> dict[str, str]:
    """Dev partner settings unless dev.env or the environment already configures partners."""
    from xcagw_devstack.launcher import read_env_file

    configured = {**read_env_file(REPO / "dev.env"), **os.environ}
    keys = ("SOAP_EDGE_PARTNERS_FILE", "SOAP_EDGE_PARTNER_REGISTRY")
    if any(configured.get(k) for k in keys):
        return {}
    return dict(DEV_PARTNER_OVERRIDES)


def machine() -> dict[str, Any]:
    """What the figures were measured on, including how busy the machine was."""
    try:
        rev = subprocess.run(  # noqa: S603, S607 - fixed git query
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        rev = ""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "memory_total_mb": psutil.virtual_memory().total // (1024 * 1024),
        "git_head": rev,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def pin(pid: int, cpus: set[int]) -> bool:
    """Pin a process to CPUs (Linux); False when not possible (fewer CPUs, no permission)."""
    available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    if not cpus <= available or len(available) < 2:
        return False
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError:
        return False
    return True


def http_request(path: str, host: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    return head + body


@dataclass
class LoadResult:
    """One load run against one endpoint."""

    label: str
    seconds: float
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    response_bytes: int = 0
    server_cpu: float = 0.0
    loadavg_before: float = 0.0
    loadavg_after: float = 0.0
    first_body: bytes = b""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.pct(50), 2),
            "p99_ms": round(self.pct(99), 2),
            "statuses": dict(self.statuses),
            "response_bytes": self.response_bytes,
            "server_cpu_percent": round(self.server_cpu * 100, 1),
            "loadavg_before": self.loadavg_before,
            "loadavg_after": self.loadavg_after,
        }


async def _connection(
    host: str, port: int, requests: list[bytes], deadline: float, result: LoadResult, offset: int
) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    i = offset
    try:
        while time.perf_counter() < deadline:
            data = requests[i % len(requests)]
            i += 1
            started = time.perf_counter()
            writer.write(data)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                key = name.strip().lower()
                if key == b"content-length":
                    length = int(value)
                elif key == b"transfer-encoding":
                    raise RuntimeError("chunked responses are not expected here")
                elif key == b"connection" and b"close" in value.lower():
                    close = True
            body = await reader.readexactly(length)
            result.latencies.append(time.perf_counter() - started)
            result.requests += 1
            result.statuses[status] += 1
            result.response_bytes = len(body)
            if not result.first_body:
                result.first_body = body
            if close:
                break
    finally:
        writer.close()


def run_load(
    label: str,
    host: str,
    port: int,
    requests: list[bytes],
    *,
    seconds: float,
    concurrency: int,
    server_pid: int | None,
    warmup: float = 1.0,
) -> LoadResult:
    """`concurrency` keep-alive connections sending the requests round-robin for `seconds`."""
    proc = psutil.Process(server_pid) if server_pid else None

    async def go(duration: float, result: LoadResult) -> None:
        deadline = time.perf_counter() + duration
        await asyncio.gather(
            *(
                _connection(host, port, requests, deadline, result, n * 7)
                for n in range(concurrency)
            )
        )

    asyncio.run(go(warmup, LoadResult(label, warmup)))
    result = LoadResult(label, seconds, loadavg_before=round(os.getloadavg()[0], 2))
    cpu0 = sum(proc.cpu_times()[:2]) if proc else 0.0
    start = time.perf_counter()
    asyncio.run(go(seconds, result))
    result.seconds = time.perf_counter() - start
    if proc:
        result.server_cpu = (sum(proc.cpu_times()[:2]) - cpu0) / result.seconds
    result.loadavg_after = round(os.getloadavg()[0], 2)
    return result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def rss_mb(pid: int) -> dict[str, float]:
    """RSS and USS (memory unique to the process) in MiB."""
    proc = psutil.Process(pid)
    info = proc.memory_full_info()
    return {"rss_mb": round(info.rss / 2**20, 1), "uss_mb": round(info.uss / 2**20, 1)}
