"""Memory stays bounded: hostile sizes are refused early, and fuzzing does not leak.

tracemalloc measures Python-level allocations (lxml's C heap is not seen, which is why the XML
bombs are also checked for being refused rather than parsed). Bounds are generous multiples of
the input size: they catch unbounded buffering and leaks, not a few percent of overhead.
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

from soapfuzz_kit import (
    BYTE_OPS,
    TREE_OPS,
    SoapEdgeHarness,
    check_response,
    mtom_wrap,
    mutate_bytes,
    mutate_tree,
    serialise,
)

MB = 1024 * 1024


@contextmanager
def traced() -> Iterator[list[int]]:
    """Yields a one-item list that holds the traced peak (bytes) once the block ends."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    out: list[int] = []
    try:
        yield out
    finally:
        out.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def _fault(harness: SoapEdgeHarness, body: bytes, ctype: str = "application/soap+xml") -> str:
    verdict = check_response(harness.post("/xca", body, ctype))
    assert verdict.fault_code is not None
    return verdict.fault_code


def test_body_over_the_size_cap_is_refused_with_bounded_memory(harness: SoapEdgeHarness) -> None:
    cap = harness.settings.max_request_bytes
    body = b"<a>" + b"x" * cap + b"</a>"
    with traced() as peak:
        resp = harness.post("/xca", body)
    assert resp.status_code == 413
    check_response(resp)
    # The request is buffered at most up to the cap once, plus the transport's own copy.
    assert peak[0] < 3 * cap, f"peak {peak[0] / MB:.1f} MiB for a {cap / MB:.0f} MiB cap"


def test_nesting_bomb_is_refused_while_parsing(harness: SoapEdgeHarness) -> None:
    depth = 100_000
    body = b"<a>" * depth + b"</a>" * depth
    with traced() as peak:
        assert _fault(harness, body) == "env:Sender"
    assert peak[0] < 16 * MB, f"peak {peak[0] / MB:.1f} MiB"


def test_entity_expansion_bomb_is_refused(harness: SoapEdgeHarness) -> None:
    lol = b'<!ENTITY l0 "lol">' + b"".join(
        b'<!ENTITY l%d "%s">' % (i, b"&l%d;" % (i - 1) * 10) for i in range(1, 10)
    )
    body = b"<?xml version='1.0'?><!DOCTYPE e [" + lol + b"]><e>&l9;</e>"
    with traced() as peak:
        assert _fault(harness, body) == "env:Sender"
    assert peak[0] < 16 * MB, f"peak {peak[0] / MB:.1f} MiB"


def test_too_many_mime_parts_are_refused(harness: SoapEdgeHarness) -> None:
    seed = harness.seeds.items[0]
    parts = {f"p{i}@x": b"y" * 1024 for i in range(harness.settings.max_mime_parts + 5)}
    body, ctype = mtom_wrap(seed.envelope_bytes(), parts)
    with traced() as peak:
        resp = harness.post(seed.path, body, ctype)
    check_response(resp)
    assert resp.status_code == 413
    assert peak[0] < 16 * MB


def test_fuzzing_does_not_leak(harness: SoapEdgeHarness) -> None:
    """Two equal batches of mutated requests: the retained heap must not keep growing."""
    rng = random.Random(20260101)  # noqa: S311 - reproducible inputs, not security
    tags, attrs, texts = harness.vocab

    def batch(n: int) -> None:
        for _ in range(n):
            seed = rng.choice(harness.seeds.items)
            muts = [
                (rng.choice(TREE_OPS), rng.randrange(400), rng.randrange(400), rng.choice(texts))
                for _ in range(rng.randrange(1, 5))
            ]
            data = serialise(mutate_tree(seed.envelope_tree(), muts, harness.vocab))
            data = mutate_bytes(data, rng.choice(BYTE_OPS), rng.randrange(1 << 16), b"\xff<")
            check_response(harness.post(seed.path, data))

    batch(60)  # warm-up: caches, lazily created metrics series, Redis connections
    gc.collect()
    tracemalloc.start()
    try:
        batch(60)
        gc.collect()
        first = tracemalloc.get_traced_memory()[0]
        batch(60)
        gc.collect()
        second, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert second - first < 2 * MB, f"retained heap grew {(second - first) / 1024:.0f} KiB"
    assert peak < 64 * MB, f"peak {peak / MB:.1f} MiB"
