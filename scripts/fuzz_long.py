"""Long fuzzing campaign of soap-edge for `make fuzz` (>= 100k inputs by default).

    .venv/bin/python scripts/fuzz_long.py [--runs 100000] [--engine atheris|hypothesis]

Engine atheris (used when it is installed): coverage-guided libFuzzer over soap-edge's own code
(soap_edge.* is instrumented), driving the real app in-process (httpx ASGITransport) against a
real redis-server and fake gRPC backends (tests-fuzz/soapfuzz_kit.py). The corpus starts from
valid ITI-47/55/38/39 requests built by the partner client; each input's first byte chooses how
the rest is used: a SOAP body, the root part of an MTOM package, a list of structured tree
mutations of a valid request, or a body under a fuzzed Content-Type.

Engine hypothesis (fallback, or when asked): the tests-fuzz property tests with a per-test
example budget that adds up to --runs.

Every input must get a SOAP 1.2 envelope (4xx only with env:Sender, 5xx only with the faults
SOAP 1.2 maps to 500), no exception may escape the app or be logged with a traceback, and the
process RSS must not grow by more than --max-rss-growth-mb after warm-up. A failure stops the run
with the offending input saved (atheris: crash-* file in --artifacts).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KIT_DIR = REPO / "tests-fuzz"
PROPERTY_TESTS = 11  # @given tests in tests-fuzz (hypothesis engine budget split)


def atheris_available() -> bool:
    try:
        import atheris  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


# ---- atheris worker ----
def atheris_worker(
    redis_url: str, runs: int, corpus: Path, artifacts: Path, max_growth: int
) -> None:
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["soap_edge"]):
        import soap_edge.app  # noqa: F401 - instrumented before the kit imports it
        import soap_edge.iti38  # noqa: F401
        import soap_edge.iti39  # noqa: F401
        import soap_edge.iti47  # noqa: F401
        import soap_edge.soap.mtom  # noqa: F401
        import soap_edge.soap.parsing  # noqa: F401
    sys.path.insert(0, str(KIT_DIR))
    import psutil
    import soapfuzz_kit as kit

    fakes = kit.FakeBackends().start()
    harness = kit.SoapEdgeHarness(redis_url, fakes)
    tags, attrs, texts = harness.vocab
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(harness.seeds.items):
        endpoint = kit.ENDPOINTS.index(seed.path) if seed.path in kit.ENDPOINTS else 4
        (corpus / f"seed-{i}").write_bytes(bytes([endpoint * 4]) + seed.envelope_bytes())
    proc = psutil.Process()
    state = {"n": 0, "baseline": 0}

    def one_input(data: bytes) -> None:
        if not data:
            return
        head, rest = data[0], data[1:]
        mode = head % 4
        path = kit.ENDPOINTS[(head // 4) % len(kit.ENDPOINTS)]
        ctype: str | None = kit.SOAP_CT
        if mode == 0:
            body = rest
        elif mode == 1:
            body, ctype = kit.mtom_wrap(rest, {"a@x": rest[:64]})
        elif mode == 2:
            fdp = atheris.FuzzedDataProvider(rest)
            seed = harness.seeds.items[fdp.ConsumeIntInRange(0, len(harness.seeds.items) - 1)]
            muts = []
            for _ in range(fdp.ConsumeIntInRange(1, 6)):
                op = kit.TREE_OPS[fdp.ConsumeIntInRange(0, len(kit.TREE_OPS) - 1)]
                a, b = fdp.ConsumeIntInRange(0, 400), fdp.ConsumeIntInRange(0, 400)
                text = texts[fdp.ConsumeIntInRange(0, len(texts) - 1)]
                if fdp.ConsumeBool():
                    raw = fdp.ConsumeUnicodeNoSurrogates(40)
                    text = "".join(c for c in raw if c in "\t\n\r" or 0x20 <= ord(c) <= 0xFFFD)
                muts.append((op, a, b, text))
            body = kit.serialise(kit.mutate_tree(seed.envelope_tree(), muts, harness.vocab))
            path = seed.path
        else:
            ctype = kit.CONTENT_TYPES[rest[0] % len(kit.CONTENT_TYPES)] if rest else None
            body = rest[1:]
        harness.exceptions.records.clear()
        resp = harness.post(path, body, ctype)
        kit.check_response(resp)
        if harness.exceptions.records:
            record = harness.exceptions.records[0]
            raise RuntimeError(f"exception logged by soap-edge: {record.getMessage()}")
        state["n"] += 1
        if state["n"] == 2000:
            state["baseline"] = proc.memory_info().rss
        elif state["n"] % 5000 == 0 and state["baseline"]:
            growth = (proc.memory_info().rss - state["baseline"]) // 2**20
            sys.stderr.write(f"fuzz: {state['n']} inputs, RSS growth {growth} MiB\n")
            if growth > max_growth:
                raise RuntimeError(f"RSS grew {growth} MiB after warm-up (limit {max_growth})")

    artifacts.mkdir(parents=True, exist_ok=True)
    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={runs}",
            "-max_len=65536",
            "-timeout=30",
            "-rss_limit_mb=4096",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
            str(corpus),
        ],
        one_input,
    )
    atheris.Fuzz()


# ---- orchestration ----
def run_atheris(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO / "libs" / "common" / "src"))
    from xcagw_common.testing import RedisServer

    corpus = Path(tempfile.mkdtemp(prefix="xcagw-fuzz-corpus-"))
    with RedisServer() as redis_server:
        run = subprocess.run(  # noqa: S603 - this script, fixed arguments
            [
                sys.executable,
                __file__,
                "--worker",
                redis_server.url,
                "--runs",
                str(args.runs),
                "--corpus",
                str(corpus),
                "--artifacts",
                str(args.artifacts),
                "--max-rss-growth-mb",
                str(args.max_rss_growth_mb),
            ],
            check=False,
        )
    return run.returncode


def run_hypothesis(args: argparse.Namespace) -> int:
    per_test = math.ceil(args.runs / PROPERTY_TESTS)
    env = {**os.environ, "XCAGW_FUZZ_EXAMPLES": str(per_test)}
    sys.stdout.write(f"hypothesis: {per_test} examples per property test x {PROPERTY_TESTS}\n")
    run = subprocess.run(  # noqa: S603 - pytest from this venv, fixed arguments
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(KIT_DIR)],
        env=env,
        cwd=REPO,
        check=False,
    )
    return run.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument(
        "--engine",
        choices=("atheris", "hypothesis"),
        default=None,
        help="default: atheris if installed",
    )
    parser.add_argument("--artifacts", type=Path, default=REPO / "out" / "fuzz")
    parser.add_argument("--max-rss-growth-mb", type=int, default=256)
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        atheris_worker(args.worker, args.runs, args.corpus, args.artifacts, args.max_rss_growth_mb)
        return 0
    engine = args.engine or ("atheris" if atheris_available() else "hypothesis")
    sys.stdout.write(f"fuzz_long: engine={engine} runs={args.runs}\n")
    sys.stdout.flush()
    return run_atheris(args) if engine == "atheris" else run_hypothesis(args)


if __name__ == "__main__":
    raise SystemExit(main())
