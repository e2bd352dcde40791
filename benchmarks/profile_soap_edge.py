"""Where a cached ITI-38/ITI-39 spends its time in soap-edge: variants side by side, plus py-spy.

    .venv/bin/python benchmarks/profile_soap_edge.py [--seconds 8] [--py-spy] [--pyinstrument]

Starts the local stack, then runs extra soap-edge processes against the same backends, each a
variant of `soap_edge.__main__` changed from the outside (monkeypatching, no service edits):

- as-is:         the console script exactly (uvloop, httptools, TCP_NODELAY, server span without
                 receive/send sub-spans: the issue #11 changes)
- no-asgi-otel:  no FastAPI/ASGI instrumentation (FastAPI's own telemetry then makes a server span)
- no-otel:       also no telemetry.setup() (no gRPC/Redis/httpx instrumentation)
- no-redis-otel: (opt-in, --variants) telemetry as-is but the Redis client instrumentation
                 removed after setup: what the Redis client spans cost
- server-span-only: (opt-in) the tracer provider and the server span, but no Redis, gRPC
                 or httpx client instrumentation at all
- generic-asgi-span: (opt-in) the SOAP endpoints' server span made by OpenTelemetry's ASGI
                 middleware instead of soap_edge.tracing.SoapServerSpan (the earlier build)

Each variant is loaded with 16 keep-alive connections (--pin: server on CPU 0, load generator
on CPU 1, for an otherwise idle machine); sequential latency is measured too. --py-spy records
a CPU profile of the --profile-variant (default as-is) under ITI-38 load and keeps the heaviest
frames; --pyinstrument writes pyinstrument's call tree of such a window to
benchmarks/results/profile-iti38.txt.
--sandbox-check only compares the NHS sandbox's own HTTP latency (GET /_health, sequential)
as launched and through nodelay_shim.py. Writes benchmarks/results/profile.json (or
profile-sandbox.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import http_request, machine, pin, run_load, stack_overrides  # noqa: E402

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
    xua_assertion,
)

VARIANTS = ("as-is", "no-asgi-otel", "no-otel")
PATIENT = "9000000009"
SOAP_CT = "application/soap+xml; charset=UTF-8"


def serve_variant(variant: str) -> None:
    """Run soap-edge's main() with the variant's changes applied."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    import soap_edge.__main__ as entry

    if variant == "generic-asgi-span":
        # The SOAP endpoints' server span from the OpenTelemetry ASGI middleware, as before
        # soap_edge.tracing.SoapServerSpan.
        class Passthrough:
            def __init__(self, app: Any, paths: Any) -> None:
                self.app = app

            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                await self.app(scope, receive, send)

        entry.SoapServerSpan = Passthrough  # type: ignore[assignment,misc]
        entry.excluded_url_pattern = lambda paths: "health/live"  # type: ignore[assignment]
    if variant in ("no-asgi-otel", "no-otel"):
        FastAPIInstrumentor.instrument_app = staticmethod(lambda *a, **k: None)  # type: ignore[method-assign]
    out = os.environ.get("XCAGW_PROFILE_OUT")
    if out:
        _profile_on_signals(Path(out))
    if variant == "no-otel":
        from xcagw_common import telemetry

        telemetry.setup = lambda name: None  # type: ignore[assignment,return-value]
        telemetry.shutdown = lambda provider: None
    if variant in ("no-redis-otel", "server-span-only"):
        from opentelemetry.instrumentation.grpc import (
            GrpcAioInstrumentorClient,
            GrpcAioInstrumentorServer,
        )
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        from xcagw_common import telemetry

        setup = telemetry.setup

        def setup_without_clients(name: str) -> Any:
            provider = setup(name)
            RedisInstrumentor().uninstrument()
            if variant == "server-span-only":
                GrpcAioInstrumentorClient().uninstrument()  # type: ignore[no-untyped-call]
                GrpcAioInstrumentorServer().uninstrument()  # type: ignore[no-untyped-call]
                HTTPXClientInstrumentor().uninstrument()
            return provider

        telemetry.setup = setup_without_clients  # type: ignore[assignment]
    entry.main()


def _profile_on_signals(out: Path) -> None:
    """SIGUSR1 starts pyinstrument on the main thread, SIGUSR2 stops it and writes the tree."""
    import signal

    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)

    def start(signum: int, frame: object) -> None:
        profiler.start()

    def stop(signum: int, frame: object) -> None:
        profiler.stop()
        out.write_text(profiler.output_text(unicode=False, color=False, show_all=False))

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


def soap(tx: str, body: Any, base: str) -> bytes:
    payload, _ = envelope(
        ACTIONS[tx], body, to=f"{base}/{tx}", assertion=xua_assertion(Requester())
    )
    return payload


def sequential_ms(base: str, tx: str, bodies: list[bytes], n: int = 40) -> float:
    times = []
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            start = time.perf_counter()
            client.post(
                f"{base}/{tx}", content=bodies[i % len(bodies)], headers={"content-type": SOAP_CT}
            )
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return round(times[len(times) // 2], 2)


def py_spy_top(pid: int, seconds: int, out: Path) -> list[tuple[float, str]]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    subprocess.run(  # noqa: S603 - py-spy on our own child process
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "1000",
            "--format",
            "raw",
            "-o",
            str(out),
        ],
        capture_output=True,
        check=False,
    )
    inclusive: Counter[str] = Counter()
    total = 0
    if not out.exists():
        return []
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        for frame in set(stack.split(";")):
            if "soap_edge" in frame or "opentelemetry" in frame or "redis" in frame:
                inclusive[frame] += n
    return [(round(100 * v / total, 1), k) for k, v in inclusive.most_common(40)]


def _spy_into(out: list[Any], pid: int, seconds: int, path: Path) -> None:
    out.extend(py_spy_top(pid, seconds, path))


def sandbox_check() -> dict[str, Any]:
    """Sequential GET /_health on the sandbox as launched and with listening proto IPPROTO_TCP."""
    shim = Path(__file__).resolve().parent / "nodelay_shim.py"
    out: dict[str, Any] = {}
    for label, argv in (
        ("as-is", [sys.executable, "-m", "xcagw_devstack", "sandbox"]),
        ("nodelay", [sys.executable, str(shim), "xcagw_devstack", "sandbox"]),
    ):
        port = free_port()
        proc = subprocess.Popen(  # noqa: S603 - fixed arguments
            [*argv, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(port, timeout=60)
            time.sleep(0.5)
            times = []
            with httpx.Client(timeout=10) as client:
                for _ in range(60):
                    start = time.perf_counter()
                    client.get(f"http://127.0.0.1:{port}/_health")
                    times.append((time.perf_counter() - start) * 1000)
            times.sort()
            out[label] = {"health_p50_ms": round(times[30], 2), "min_ms": round(times[0], 2)}
        finally:
            proc.terminate()
            proc.wait(10)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--py-spy", action="store_true")
    parser.add_argument(
        "--profile-variant", default="as-is", help="the variant --py-spy/--pyinstrument record"
    )
    parser.add_argument("--pin", action="store_true", help="pin server CPU 0, load CPU 1")
    parser.add_argument("--pyinstrument", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "profile.json"
    )
    parser.add_argument("--sandbox-check", action="store_true")
    parser.add_argument("--serve", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_variant(args.serve)
        return 0
    if args.sandbox_check:
        result = {"machine": machine(), "command": " ".join(sys.argv), "sandbox": sandbox_check()}
        path = args.out.parent / "profile-sandbox.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        sys.stdout.write(json.dumps(result["sandbox"]) + "\n")
        return 0

    report: dict[str, Any] = {"machine_before": machine(), "command": " ".join(sys.argv)}
    workdir = Path(tempfile.mkdtemp(prefix="xcagw-profile-"))
    stack = Stack(workdir=workdir, free_ports=True, echo=False, overrides=stack_overrides())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        stack.start(timeout=240)
        base = stack.soap_edge_url
        cx = f"{PATIENT}^^^&{NHS_NUMBER_OID}&ISO"
        first = httpx.post(
            f"{base}/iti38",
            content=soap("iti38", find_documents(cx), base),
            headers={"content-type": SOAP_CT},
            timeout=120,
        )
        docs = documents_in(parse_reply(first))[:1]
        results: dict[str, Any] = {}
        for variant in args.variants.split(","):
            port = free_port()
            env = {
                **stack.env,
                "OTEL_SERVICE_NAME": "soap-edge",
                "SOAP_EDGE_PORT": str(port),
                # The stack's soap-edge holds the management port: no second listener here.
                "SOAP_EDGE_MANAGEMENT_PORT": "-1",
            }
            tree = args.out.parent / "profile-iti38.txt"
            if args.pyinstrument and variant == args.profile_variant:
                env["XCAGW_PROFILE_OUT"] = str(tree)
            proc = subprocess.Popen(  # noqa: S603 - this script, fixed arguments
                [sys.executable, __file__, "--serve", variant],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(proc)
            wait_for_port(port, timeout=60)
            url = f"http://127.0.0.1:{port}"
            time.sleep(1.0)
            if args.pin:
                pin(proc.pid, {0})
                pin(os.getpid(), {1})
            out: dict[str, Any] = {}
            for tx, body in (("iti38", find_documents(cx)), ("iti39", retrieve(docs))):
                bodies = [soap(tx, body, url) for _ in range(32)]
                out[f"{tx}_sequential_p50_ms"] = sequential_ms(url, tx, bodies)
                reqs = [http_request(f"/{tx}", f"127.0.0.1:{port}", b, SOAP_CT) for b in bodies]
                res = run_load(
                    f"{variant} {tx}",
                    "127.0.0.1",
                    port,
                    reqs,
                    seconds=args.seconds,
                    concurrency=args.concurrency,
                    server_pid=proc.pid,
                )
                out[f"{tx}_load"] = res.summary()
                if args.pyinstrument and variant == args.profile_variant and tx == "iti38":
                    import signal

                    proc.send_signal(signal.SIGUSR1)
                    run_load(
                        "pyinstrument",
                        "127.0.0.1",
                        port,
                        reqs,
                        seconds=args.seconds,
                        concurrency=args.concurrency,
                        server_pid=proc.pid,
                        warmup=0.1,
                    )
                    proc.send_signal(signal.SIGUSR2)
                    time.sleep(2.0)
                    out["pyinstrument_tree"] = str(tree)
                if args.py_spy and variant == args.profile_variant and tx == "iti38":
                    import threading

                    top: list[Any] = []
                    spy = threading.Thread(
                        target=_spy_into,
                        args=(top, proc.pid, int(args.seconds) - 2, workdir / "spy.txt"),
                    )
                    spy.start()
                    run_load(
                        "py-spy",
                        "127.0.0.1",
                        port,
                        reqs,
                        seconds=args.seconds,
                        concurrency=args.concurrency,
                        server_pid=proc.pid,
                    )
                    spy.join()
                    out["py_spy_iti38_inclusive_percent"] = top
            # A variant named twice (A/B/A/B) keeps every run: "as-is", "as-is #2", ...
            runs = sum(1 for k in results if k == variant or k.startswith(f"{variant} #"))
            results[variant if not runs else f"{variant} #{runs + 1}"] = out
            proc.terminate()
            proc.wait(10)
            sys.stdout.write(
                f"{variant:24s} iti38 {out['iti38_load']['rps']:7.1f} rps "
                f"(seq p50 {out['iti38_sequential_p50_ms']} ms, cpu "
                f"{out['iti38_load']['server_cpu_percent']}%)  iti39 "
                f"{out['iti39_load']['rps']:7.1f} rps "
                f"(seq p50 {out['iti39_sequential_p50_ms']} ms)\n"
            )
            sys.stdout.flush()
        report["variants"] = results
        report["machine_after"] = machine()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        stack.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
