"""Benchmark helpers: a raw keep-alive HTTP load generator, machine facts, stack set-up.

Two load generators, the same for both sides of a comparison: wrk (C, one thread; the default
when installed, Debian package `wrk`) and a raw keep-alive HTTP/1.1 client over asyncio streams
with pre-built request bytes. The Python client needs about as much CPU per request as the bare
baseline server, so on this 2-core machine it caps the baseline (benchmarks/RESULTS.md); wrk
does not. Server CPU use is sampled with psutil to show which side saturated.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
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


def serve_like_soap_edge(app: Any, port: int) -> None:
    """Run an ASGI app on 127.0.0.1:port with soap-edge's server configuration, until killed."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        # The server configuration soap-edge runs with (soap_edge/__main__.py): uvloop and
        # httptools; uvicorn binds this socket itself (IPPROTO_TCP), so TCP_NODELAY is set.
        loop="uvloop",
        http="httptools",
    )
    uvicorn.Server(config).run()


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
    # Set by run_wrk (wrk reports percentiles, not samples) and for the load generator's CPU.
    p50_ms: float | None = None
    p99_ms: float | None = None
    client: str = "python"
    client_cpu: float = 0.0

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
            "p50_ms": round(self.p50_ms if self.p50_ms is not None else self.pct(50), 2),
            "p99_ms": round(self.p99_ms if self.p99_ms is not None else self.pct(99), 2),
            "statuses": dict(self.statuses),
            "response_bytes": self.response_bytes,
            "server_cpu_percent": round(self.server_cpu * 100, 1),
            # CPU seconds of the server process per request: the figure that load on the shared
            # machine moves least.
            "server_cpu_ms_per_request": round(
                self.server_cpu * self.seconds * 1000 / self.requests, 3
            )
            if self.requests
            else 0.0,
            "client": self.client,
            "client_cpu_percent": round(self.client_cpu * 100, 1),
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
    own0 = sum(psutil.Process().cpu_times()[:2])
    start = time.perf_counter()
    asyncio.run(go(seconds, result))
    result.seconds = time.perf_counter() - start
    result.client_cpu = (sum(psutil.Process().cpu_times()[:2]) - own0) / result.seconds
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


_WRK_SCRIPT = """
local dir, n, path, ctype = "{dir}", {n}, "{path}", "{ctype}"
local bodies = {{}}
for i = 0, n - 1 do
  local f = assert(io.open(dir .. "/" .. i .. ".bin", "rb"))
  bodies[#bodies + 1] = f:read("*all")
  f:close()
end
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", path, {{["Content-Type"] = ctype}}, bodies[i])
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _wrk_time_ms(text: str) -> float:
    found = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if found is None:
        return 0.0
    return (
        float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[found.group(2)]
    )


def run_wrk(
    label: str,
    host: str,
    port: int,
    path: str,
    bodies: list[bytes],
    content_type: str,
    *,
    seconds: float,
    concurrency: int,
    server_pid: int | None,
    warmup: float = 1.0,
) -> LoadResult:
    """The same measurement with wrk (C, one thread): `concurrency` keep-alive connections
    sending the bodies round-robin. wrk counts non-2xx answers; the bodies are checked apart."""
    proc = psutil.Process(server_pid) if server_pid else None
    with tempfile.TemporaryDirectory(prefix="xcagw-wrk-") as tmp:
        for i, body in enumerate(bodies):
            Path(tmp, f"{i}.bin").write_bytes(body)
        script = Path(tmp, "post.lua")
        script.write_text(_WRK_SCRIPT.format(dir=tmp, n=len(bodies), path=path, ctype=content_type))
        base = [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            "--latency",
            "-s",
            str(script),
            f"http://{host}:{port}{path}",
        ]
        subprocess.run([*base, f"-d{max(1, round(warmup))}s"], capture_output=True, check=False)  # noqa: S603
        result = LoadResult(
            label, seconds, loadavg_before=round(os.getloadavg()[0], 2), client="wrk"
        )
        cpu0 = sum(proc.cpu_times()[:2]) if proc else 0.0
        start = time.perf_counter()
        child0 = psutil.Process().cpu_times()
        out = subprocess.run(  # noqa: S603 - wrk with fixed arguments
            [*base, f"-d{max(1, round(seconds))}s"], capture_output=True, text=True, check=False
        ).stdout
        child1 = psutil.Process().cpu_times()
        result.seconds = time.perf_counter() - start
        if proc:
            result.server_cpu = (sum(proc.cpu_times()[:2]) - cpu0) / result.seconds
    client_cpu = (child1.children_user + child1.children_system) - (
        child0.children_user + child0.children_system
    )
    result.client_cpu = client_cpu / result.seconds
    result.loadavg_after = round(os.getloadavg()[0], 2)
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if done is None:
        raise RuntimeError(f"wrk failed: {out[-400:]}")
    result.requests = int(done.group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = int(bad.group(1)) if bad else 0
    result.statuses[200] = result.requests - non2xx
    if non2xx:
        result.statuses[0] = non2xx
    if errors:
        result.statuses[-1] = sum(int(n) for n in re.findall(r"\d+", errors.group(1)))
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        found = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.MULTILINE)
        if found:
            setattr(result, attr, _wrk_time_ms(found.group(1)))
    return result


def saml_issuer_keypair() -> tuple[bytes, bytes]:
    """A self-signed RSA-2048 SAML issuer certificate, as an IdP's signing certificate."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "xcagw bench SAML issuer")])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
