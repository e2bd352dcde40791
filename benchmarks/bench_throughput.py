"""soap-edge throughput, cold latency, single-flight and memory on a real local stack.

    .venv/bin/python benchmarks/bench_throughput.py [--seconds 8] [--rounds 3] [--concurrency 16]
        [--client wrk|python] [--xua dev|signed] [--throughput-only] [--no-floor]
        [--floor-ablation]

--xua signed is the production-realistic variant: the partner (anonymous here, since the bench
stack has no mTLS) has `saml: {required: true, verify: true}` with a pinned issuer certificate,
and every request carries an RSA-SHA256 signed ITI-40 assertion that soap-edge verifies. As in a
real XCA session, a partner reuses one assertion for several requests (--assertions distinct
assertions over the 64 request bodies). The default (dev) is the development partner whose
assertion is read unverified.

1. Cached ITI-38 and ITI-39 throughput on ONE soap-edge worker (the launcher's uvicorn process),
   side by side with a bare FastAPI endpoint (same uvicorn configuration: uvloop, httptools)
   that returns the payload captured from soap-edge's own answer, byte for byte (checked). The ratio
   soap-edge/bare is the target (>= 0.5). A third server, the floor (floor_server.py), answers the
   same captured bytes doing only what no cached answer can skip (span, one lxml parse, one
   auto-pipelined Redis round trip with the audit XADD, one lxml serialisation): its ratio bounds
   what any CPython worker can reach (--no-floor leaves it out; --floor-ablation also measures it
   with each of those parts left out in turn). Rounds alternate the servers so that drift in
   machine load hits both alike, and the median round is reported (--pin puts the servers on
   CPU 0 and the load generator on CPU 1; only useful on an otherwise idle machine).
2. Cold ITI-38 end-to-end latency over the zero-latency NHS sandbox (target p50 <= 150 ms):
   soap-edge's stored document is dropped before each request, so each is a miss that fetches
   the GP record, converts it and stores it. Two variants: adapter caches warm (PDS read, SDS
   endpoint, tokens) and PDS read cache dropped too.
3. Single-flight: concurrent identical cold ITI-38 requests fetch the record once (sandbox
   `/_admin/stats` GP Connect request count delta == 1), and all get the same entryUUID.
4. Memory per worker: soap-edge RSS/USS idle, after warm-up and after the throughput runs.

Writes JSON to --out (default benchmarks/results/throughput.json) and prints a summary.
Not a test: figures depend on the machine and its load, which is recorded with them.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from fastapi import FastAPI, Request, Response
from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    machine,
    median,
    pin,
    rss_mb,
    run_load,
    run_wrk,
    saml_issuer_keypair,
    serve_like_soap_edge,
    stack_overrides,
    wrk_available,
)

from xcagw_common.testing import free_port, wait_for_port  # noqa: E402
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
    sign_assertion,
    xua_assertion,
)

SOAP_CT = "application/soap+xml; charset=UTF-8"
SHIM = Path(__file__).resolve().parent / "nodelay_shim.py"
FLOOR = Path(__file__).resolve().parent / "floor_server.py"
HOT_PATIENT = "9000000009"
COLD_PATIENTS = ("9000000009", "9000000068", "9000000033")
SINGLE_FLIGHT_PATIENT = "9000000114"


class BenchStack(Stack):
    """The launcher's stack; with nodelay_fix, soap-edge and the sandbox run via nodelay_shim."""

    nodelay_fix = False

    def _components(self) -> list[Any]:
        comps = super()._components()
        if self.nodelay_fix:
            for comp in comps:
                if comp.name == "soap-edge":
                    comp.argv = [sys.executable, str(SHIM), "soap_edge.__main__"]
                elif comp.name == "sandbox":
                    comp.argv = [sys.executable, str(SHIM), "xcagw_devstack", "sandbox"]
        return comps


# ---- the bare FastAPI baseline ----
def serve_bare(port: int, payload_dir: Path) -> None:
    """POST /iti38 and /iti39 answer the captured soap-edge payloads byte for byte."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    meta = json.loads((payload_dir / "meta.json").read_text())

    def route(body: bytes, content_type: str) -> Any:
        async def endpoint(request: Request) -> Response:
            await request.body()
            return Response(body, 200, headers={"content-type": content_type})

        return endpoint

    for name, content_type in meta.items():
        body = (payload_dir / f"{name}.bin").read_bytes()
        app.add_api_route(f"/{name}", route(body, content_type), methods=["POST"])
    serve_like_soap_edge(app, port)


# ---- requests ----
BENCH_AUDIENCE = "urn:xcagw:bench:soap-edge"


class XuaMode:
    """How the bench partner authenticates: dev (unverified assertion) or signed (verified)."""

    def __init__(self, mode: str, distinct: int = 8) -> None:
        self.mode = mode
        self._distinct = max(1, distinct)
        self._pool: list[etree._Element] = []
        self._next = 0
        self.key_pem = b""
        self.cert_pem = b""
        if mode == "signed":
            self.key_pem, self.cert_pem = saml_issuer_keypair()

    def overrides(self) -> dict[str, str]:
        """Stack settings for this mode (beat dev.env's partners file)."""
        if self.mode != "signed":
            return stack_overrides()
        registry = {
            # The bench stack has no mTLS, so the signed partner is the anonymous one; that
            # part stays a development setting, the SAML checks are the production ones.
            "anonymous_partner": "signed",
            "partners": [
                {
                    "id": "signed",
                    "saml": {
                        "required": True,
                        "verify": True,
                        "issuer_certificates": [self.cert_pem.decode("ascii")],
                        "audiences": [BENCH_AUDIENCE],
                    },
                }
            ],
        }
        return {
            "SOAP_EDGE_PARTNERS_FILE": "",
            "SOAP_EDGE_PARTNER_REGISTRY": json.dumps(registry),
            "SOAP_EDGE_ALLOW_INSECURE_DEV_PARTNERS": "true",
        }

    def fresh(self) -> etree._Element:
        if self.mode != "signed":
            return xua_assertion(Requester())
        # One hour: the run must not outlive its assertions (real ones last 5-60 minutes).
        requester = Requester(audience=BENCH_AUDIENCE, lifetime_seconds=3600)
        return sign_assertion(xua_assertion(requester), self.key_pem, self.cert_pem)

    def assertion(self) -> etree._Element:
        """dev: a new assertion per request; signed: one of `distinct` per session."""
        if self.mode != "signed":
            return self.fresh()
        if len(self._pool) < self._distinct:
            self._pool.append(self.fresh())
        element = self._pool[self._next % len(self._pool)]
        self._next += 1
        return copy.deepcopy(element)


XUA = XuaMode("dev")


def soap_bytes(transaction: str, body: Any, base: str) -> bytes:
    payload, _ = envelope(
        ACTIONS[transaction],
        copy.deepcopy(body),
        to=f"{base}/{transaction}",
        assertion=XUA.assertion(),
    )
    return payload


def raw_requests(path: str, host: str, bodies: list[bytes]) -> list[bytes]:
    from benchlib import http_request

    return [http_request(path, host, b, SOAP_CT) for b in bodies]


def forget(client: redis.Redis, nhs: str, *, pds_cache: bool) -> None:
    keys = [f"xcagw:soap-edge:patient-doc:{nhs}"]
    if pds_cache:
        keys.append(f"xcagw:pds:patient:v1:{nhs}")
    client.delete(*keys)


def sandbox_requests(stack: Stack) -> dict[str, int]:
    counts: dict[str, int] = httpx.get(f"{stack.sandbox_url}/_admin/stats", timeout=10).json()[
        "requests"
    ]
    return counts


# ---- measurements ----
def throughput(
    stack: Stack,
    bare_port: int,
    bare_pid: int,
    floor: tuple[int, int] | None,
    bodies: dict[str, list[bytes]],
    expected: dict[str, bytes],
    args: argparse.Namespace,
) -> dict[str, Any]:
    soap_port = stack.ports["soap-edge"]
    soap_pid = stack.components["soap-edge"].process.pid  # type: ignore[union-attr]
    rounds: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for tx in ("iti38", "iti39"):
            sides = [("soap-edge", soap_port, soap_pid), ("bare-fastapi", bare_port, bare_pid)]
            if floor is not None:
                sides.append(("floor", floor[0], floor[1]))
            for label, port, pid in sides:
                host = f"127.0.0.1:{port}"
                if args.client == "wrk":
                    result = run_wrk(
                        f"{label} {tx}",
                        "127.0.0.1",
                        port,
                        f"/{tx}",
                        bodies[tx],
                        SOAP_CT,
                        seconds=args.seconds,
                        concurrency=args.concurrency,
                        server_pid=pid,
                    )
                    result.response_bytes = len(expected[tx])
                else:
                    reqs = raw_requests(f"/{tx}", host, bodies[tx])
                    result = run_load(
                        f"{label} {tx}",
                        "127.0.0.1",
                        port,
                        reqs,
                        seconds=args.seconds,
                        concurrency=args.concurrency,
                        server_pid=pid,
                    )
                # Every answer 200, and (python client) the right size: the earlier baseline
                # answered a 93-byte 422 for months because nothing checked it.
                ok = result.statuses.get(200, 0) == result.requests and result.requests > 0
                if args.client != "wrk":
                    ok = ok and result.response_bytes == len(expected[tx])
                    if label == "soap-edge":
                        ok = ok and b"Success" in result.first_body
                if not ok:
                    raise SystemExit(
                        f"{label} {tx} answered {dict(result.statuses)}, "
                        f"{result.response_bytes} bytes: {result.first_body[:400]!r}"
                    )
                rounds.setdefault(f"{label} {tx}", []).append(result.summary())
    out: dict[str, Any] = {"rounds": rounds}
    for tx in ("iti38", "iti39"):
        soap = median([r["rps"] for r in rounds[f"soap-edge {tx}"]])
        bare = median([r["rps"] for r in rounds[f"bare-fastapi {tx}"]])
        out[tx] = {
            "soap_edge_rps": round(soap, 1),
            "bare_rps": round(bare, 1),
            "ratio": round(soap / bare, 3) if bare else 0.0,
            "soap_edge_p50_ms": median([r["p50_ms"] for r in rounds[f"soap-edge {tx}"]]),
            "bare_p50_ms": median([r["p50_ms"] for r in rounds[f"bare-fastapi {tx}"]]),
            "response_bytes": rounds[f"soap-edge {tx}"][0]["response_bytes"],
            "soap_edge_cpu_percent": median(
                [r["server_cpu_percent"] for r in rounds[f"soap-edge {tx}"]]
            ),
            "bare_cpu_percent": median(
                [r["server_cpu_percent"] for r in rounds[f"bare-fastapi {tx}"]]
            ),
            "soap_edge_cpu_ms_per_request": median(
                [r["server_cpu_ms_per_request"] for r in rounds[f"soap-edge {tx}"]]
            ),
            "bare_cpu_ms_per_request": median(
                [r["server_cpu_ms_per_request"] for r in rounds[f"bare-fastapi {tx}"]]
            ),
            "client": args.client,
            **(floor_figures(rounds, tx) if floor is not None else {}),
            "client_cpu_percent_during_bare": median(
                [r["client_cpu_percent"] for r in rounds[f"bare-fastapi {tx}"]]
            ),
        }
    return out


def start_floor(
    payload_dir: Path,
    redis_url: str,
    bodies: dict[str, list[bytes]],
    expected: dict[str, bytes],
    skip: str = "",
) -> tuple[subprocess.Popen[bytes], int]:
    """Start floor_server.py (leaving out `skip`) and check it answers both transactions."""
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 - the floor server script, fixed arguments
        [
            sys.executable,
            str(FLOOR),
            "--port",
            str(port),
            "--payload-dir",
            str(payload_dir),
            "--redis-url",
            redis_url,
            "--skip",
            skip,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, timeout=60)
    for tx in ("iti38", "iti39"):
        answer = httpx.post(
            f"http://127.0.0.1:{port}/{tx}",
            content=bodies[tx][0],
            headers={"content-type": SOAP_CT},
            timeout=30,
        )
        if answer.status_code != 200 or len(answer.content) != len(expected[tx]):
            server.terminate()
            raise SystemExit(f"floor server {tx}: HTTP {answer.status_code}, wrong size")
    return server, port


FLOOR_PARTS = ("span", "parse", "redis", "serialise")


def floor_ablation(
    payload_dir: Path,
    redis_url: str,
    bodies: dict[str, list[bytes]],
    expected: dict[str, bytes],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Cached-ITI-38 CPU per request of the floor with each part left out in turn (wrk)."""
    variants = ["", *FLOOR_PARTS, ",".join(FLOOR_PARTS)]
    cpu: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for skip in variants:
            server, port = start_floor(payload_dir, redis_url, bodies, expected, skip)
            try:
                result = run_wrk(
                    f"floor -{skip}",
                    "127.0.0.1",
                    port,
                    "/iti38",
                    bodies["iti38"],
                    SOAP_CT,
                    seconds=args.seconds,
                    concurrency=args.concurrency,
                    server_pid=server.pid,
                )
            finally:
                server.terminate()
                server.wait(10)
            name = f"without {skip}" if skip else "floor"
            cpu.setdefault(name, []).append(result.summary()["server_cpu_ms_per_request"])
    return {
        "iti38_cpu_ms_per_request": {name: median(values) for name, values in cpu.items()},
        "rounds": cpu,
    }


def floor_figures(rounds: dict[str, list[dict[str, Any]]], tx: str) -> dict[str, Any]:
    """The floor server's figures (floor_server.py): the ratio no CPython worker can beat."""
    floor = median([r["rps"] for r in rounds[f"floor {tx}"]])
    bare = median([r["rps"] for r in rounds[f"bare-fastapi {tx}"]])
    return {
        "floor_rps": round(floor, 1),
        "floor_ratio": round(floor / bare, 3) if bare else 0.0,
        "floor_cpu_ms_per_request": median(
            [r["server_cpu_ms_per_request"] for r in rounds[f"floor {tx}"]]
        ),
    }


async def cold_latency(stack: Stack, samples: int) -> dict[str, Any]:
    client = redis.Redis.from_url(stack.redis_url)
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=60) as http:
        # Back to back, a miss that must read PDS waits for pds-adapter's limiter (the NHS
        # default of 5 PDS requests/s, burst 1), so its latency includes queueing by design.
        # The paced variant sends one miss per 250 ms (4/s, inside that quota): latency
        # without queueing, i.e. what a partner sees while the gateway is within its PDS quota.
        variants = (
            ("adapter caches warm", False, 0.0),
            ("pds cache dropped too", True, 0.0),
            ("pds cache dropped, paced 4/s", True, 0.25),
        )
        for variant, pds_cache, pace in variants:
            for nhs in COLD_PATIENTS:
                cx = f"{nhs}^^^&{NHS_NUMBER_OID}&ISO"
                times: list[float] = []
                before = sandbox_requests(stack)
                for _ in range(samples):
                    body = soap_bytes("iti38", find_documents(cx), stack.soap_edge_url)
                    forget(client, nhs, pds_cache=pds_cache)
                    if pace:
                        await asyncio.sleep(pace)
                    start = time.perf_counter()
                    resp = await http.post(
                        f"{stack.soap_edge_url}/iti38",
                        content=body,
                        headers={"content-type": SOAP_CT},
                    )
                    times.append((time.perf_counter() - start) * 1000)
                    if not documents_in(parse_reply(resp)):
                        raise SystemExit(f"cold ITI-38 for {nhs} failed: {resp.text[:400]}")
                after = sandbox_requests(stack)
                times.sort()
                out.setdefault(variant, {})[nhs] = {
                    "samples": samples,
                    "p50_ms": round(statistics.median(times), 1),
                    "p90_ms": round(times[int(0.9 * (len(times) - 1))], 1),
                    "min_ms": round(times[0], 1),
                    "max_ms": round(times[-1], 1),
                    "gpconnect_requests_per_miss": (after["gpconnect"] - before["gpconnect"])
                    / samples,
                    "pds_requests_per_miss": (after["pds"] - before["pds"]) / samples,
                }
    client.close()
    return out


async def single_flight(stack: Stack, concurrency: int, repeats: int) -> dict[str, Any]:
    client = redis.Redis.from_url(stack.redis_url)
    cx = f"{SINGLE_FLIGHT_PATIENT}^^^&{NHS_NUMBER_OID}&ISO"
    runs = []
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in range(repeats):
            bodies = [
                soap_bytes("iti38", find_documents(cx), stack.soap_edge_url)
                for _ in range(concurrency)
            ]
            forget(client, SINGLE_FLIGHT_PATIENT, pds_cache=True)
            before = sandbox_requests(stack)
            start = time.perf_counter()
            responses = await asyncio.gather(
                *(
                    http.post(
                        f"{stack.soap_edge_url}/iti38",
                        content=b,
                        headers={"content-type": SOAP_CT},
                    )
                    for b in bodies
                )
            )
            elapsed = (time.perf_counter() - start) * 1000
            after = sandbox_requests(stack)
            entries = {d.entry_uuid for r in responses for d in documents_in(parse_reply(r))}
            runs.append(
                {
                    "concurrent_requests": concurrency,
                    "all_success": all(r.status_code == 200 for r in responses)
                    and len(entries) == 1,
                    "distinct_entry_uuids": len(entries),
                    "gpconnect_requests": after["gpconnect"] - before["gpconnect"],
                    "pds_requests": after["pds"] - before["pds"],
                    "wall_ms": round(elapsed, 1),
                }
            )
    client.close()
    return {
        "runs": runs,
        "fetched_once_every_time": all(r["gpconnect_requests"] == 1 for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin servers to CPU 0 and the load generator to CPU 1 (only on an otherwise idle box)",
    )
    parser.add_argument(
        "--client",
        choices=("wrk", "python"),
        default="wrk" if wrk_available() else "python",
        help="load generator, the same for both sides (default wrk when installed)",
    )
    parser.add_argument("--cold-samples", type=int, default=15)
    parser.add_argument("--single-flight", type=int, default=10)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "throughput.json"
    )
    parser.add_argument(
        "--tcp-nodelay-fix",
        action="store_true",
        help="run soap-edge and the sandbox through nodelay_shim.py (the recommended fix)",
    )
    parser.add_argument(
        "--xua",
        choices=("dev", "signed"),
        default="dev",
        help="dev: unverified development partner; signed: verified, signed XUA assertions",
    )
    parser.add_argument(
        "--assertions",
        type=int,
        default=8,
        help="--xua signed: distinct assertions over the request bodies (a partner session)",
    )
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="skip the cold-latency, single-flight and end-of-run memory sections",
    )
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the floor server (floor_server.py: the least work a cached answer needs)",
    )
    parser.add_argument(
        "--floor-ablation",
        action="store_true",
        help="also measure the floor with each of its parts left out (cached ITI-38)",
    )
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--payload-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.port, args.payload_dir)
        return 0

    global XUA
    XUA = XuaMode(args.xua, args.assertions)
    report: dict[str, Any] = {"machine_before": machine(), "command": " ".join(sys.argv)}
    report["xua"] = args.xua
    if args.xua == "signed":
        report["distinct_assertions"] = args.assertions
    workdir = Path(tempfile.mkdtemp(prefix="xcagw-bench-"))
    stack = BenchStack(workdir=workdir, free_ports=True, echo=False, overrides=XUA.overrides())
    stack.nodelay_fix = args.tcp_nodelay_fix
    report["tcp_nodelay_fix"] = args.tcp_nodelay_fix
    bare: subprocess.Popen[bytes] | None = None
    floor: subprocess.Popen[bytes] | None = None
    try:
        stack.start(timeout=240)
        soap_pid = stack.components["soap-edge"].process.pid  # type: ignore[union-attr]
        memory: dict[str, Any] = {"soap_edge_idle": rss_mb(soap_pid)}

        # Warm: one stored document, its retrieve; capture the answers for the bare baseline.
        base = stack.soap_edge_url
        cx = f"{HOT_PATIENT}^^^&{NHS_NUMBER_OID}&ISO"
        first = httpx.post(
            f"{base}/iti38",
            content=soap_bytes("iti38", find_documents(cx), base),
            headers={"content-type": SOAP_CT},
            timeout=120,
        )
        docs = [d for d in documents_in(parse_reply(first)) if d.unique_id]
        if not docs:
            raise SystemExit(f"warm-up ITI-38 failed: {first.text[:500]}")
        bodies = {
            "iti38": [soap_bytes("iti38", find_documents(cx), base) for _ in range(64)],
            "iti39": [soap_bytes("iti39", retrieve(docs[:1]), base) for _ in range(64)],
        }
        payload_dir = workdir / "bare"
        payload_dir.mkdir()
        meta = {}
        expected: dict[str, bytes] = {}
        for tx in ("iti38", "iti39"):
            resp = httpx.post(
                f"{base}/{tx}",
                content=bodies[tx][0],
                headers={"content-type": SOAP_CT},
                timeout=60,
            )
            (payload_dir / f"{tx}.bin").write_bytes(resp.content)
            meta[tx] = resp.headers["content-type"]
            expected[tx] = resp.content
        (payload_dir / "meta.json").write_text(json.dumps(meta))
        memory["soap_edge_warm"] = rss_mb(soap_pid)

        bare_port = free_port()
        bare = subprocess.Popen(  # noqa: S603 - this script, fixed arguments
            [
                sys.executable,
                __file__,
                "--serve-bare",
                "--port",
                str(bare_port),
                "--payload-dir",
                str(payload_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(bare_port, timeout=60)
        for tx in ("iti38", "iti39"):
            answer = httpx.post(
                f"http://127.0.0.1:{bare_port}/{tx}",
                content=bodies[tx][0],
                headers={"content-type": SOAP_CT},
                timeout=30,
            )
            if answer.status_code != 200 or answer.content != expected[tx]:
                raise SystemExit(f"bare baseline {tx}: HTTP {answer.status_code}, not the payload")
        floor_side: tuple[int, int] | None = None
        if not args.no_floor:
            floor, floor_port = start_floor(payload_dir, stack.redis_url, bodies, expected)
            floor_side = (floor_port, floor.pid)
        pinned = args.pin and pin(soap_pid, {0}) and pin(bare.pid, {0}) and pin(os.getpid(), {1})
        report["pinned"] = pinned
        memory["bare_fastapi_idle"] = rss_mb(bare.pid)

        report["throughput"] = throughput(
            stack, bare_port, bare.pid, floor_side, bodies, expected, args
        )
        if args.floor_ablation and floor is not None:
            floor.terminate()
            floor.wait(10)
            floor = None
            report["floor_ablation"] = floor_ablation(
                payload_dir, stack.redis_url, bodies, expected, args
            )
        memory["soap_edge_after_load"] = rss_mb(soap_pid)
        memory["bare_fastapi_after_load"] = rss_mb(bare.pid)
        if pinned:
            os.sched_setaffinity(os.getpid(), set(range(os.cpu_count() or 1)))
            os.sched_setaffinity(soap_pid, set(range(os.cpu_count() or 1)))

        if not args.throughput_only:
            report["cold_iti38"] = asyncio.run(cold_latency(stack, args.cold_samples))
            report["single_flight"] = asyncio.run(single_flight(stack, args.single_flight, 3))
            memory["soap_edge_end"] = rss_mb(soap_pid)
        report["memory"] = memory
        report["machine_after"] = machine()
    finally:
        for server in (bare, floor):
            if server is not None:
                server.terminate()
                server.wait(10)
        stack.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
