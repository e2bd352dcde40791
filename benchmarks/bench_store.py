"""What a cached ITI-38 costs in Redis: the whole document hash vs its metadata only.

    .venv/bin/python benchmarks/bench_store.py [--ccd-bytes 120176] [--n 2000]

soap-edge's `Store.current_document()` (used by every ITI-38, cached or not) reads the patient
pointer and then HGETALL of `doc:{uniqueId}`, which includes the stored C-CDA (`content`, about
120 KB for the sandbox's full record) although a query only needs the metadata. This compares,
against a real redis-server, per call:

- current_document: soap-edge's method as it is;
- metadata only: the same pointer GET plus HMGET of every DocumentRecord field but `content`
  (what a metadata-only read would do; retrieves still read the content).

Both with redis-py asyncio as soap-edge uses it (no OpenTelemetry instrumentation here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import machine  # noqa: E402

from soap_edge.config import Settings  # noqa: E402
from soap_edge.store import DocumentRecord, Store, key  # noqa: E402
from xcagw_common.testing import RedisServer  # noqa: E402

NHS = "9000000009"
META_FIELDS = [f.name for f in fields(DocumentRecord) if f.name != "content"]


async def run(url: str, ccd_bytes: int, n: int) -> dict[str, Any]:
    settings = Settings(redis_url=url, allow_insecure_dev_partners=True)
    redis = Redis.from_url(url)
    store = Store(redis, settings)
    doc = DocumentRecord(
        unique_id="2.25.1",
        entry_uuid="urn:uuid:00000000-0000-0000-0000-000000000001",
        nhs_number=NHS,
        hash="0" * 40,
        size=ccd_bytes,
        creation_time="20260101120000",
        title="GP Connect summary (CCD)",
        content=b"<x/>" * (ccd_bytes // 4),
    )
    await store.save_document(doc)

    async def metadata_only() -> list[Any]:
        uid = await redis.get(key("patient-doc", NHS))
        assert isinstance(uid, bytes)
        values: list[Any] = await redis.hmget(key("doc", uid.decode()), META_FIELDS)
        return values

    out: dict[str, Any] = {}
    for name, op in (
        ("current_document", lambda: store.current_document(NHS)),
        ("metadata_only", metadata_only),
    ):
        for _ in range(50):
            await op()
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n // 5):
                await op()
            samples.append((time.perf_counter() - start) / (n // 5))
        out[name] = {
            "median_us": round(statistics.median(samples) * 1e6, 1),
            "min_us": round(min(samples) * 1e6, 1),
        }
    await redis.aclose()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ccd-bytes", type=int, default=120_176)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "store.json"
    )
    args = parser.parse_args()
    report: dict[str, Any] = {"machine_before": machine(), "command": " ".join(sys.argv)}
    with RedisServer() as server:
        report["per_call"] = asyncio.run(run(server.url, args.ccd_bytes, args.n))
    report["ccd_bytes"] = args.ccd_bytes
    report["machine_after"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(json.dumps(report["per_call"], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
