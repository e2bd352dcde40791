"""Converter benchmark (run by `make bench`): median time, entries/s and peak RSS per bundle.

Each bundle is measured in a fresh subprocess so peak RSS is per bundle. Targets (2-core dev
machine): largest real bundle (~480 entries) < 30 ms median; 10,000-entry synthetic record
< 0.6 s and < 300 MB RSS; time linear in entries. Not a test: numbers depend on machine load,
so a CPU calibration loop is printed alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
SIZES = (100, 1000, 2500, 5000, 10000)


def shared_dir() -> Path:
    env = os.environ.get("XCAGW_SHARED_DIR")
    return Path(env) if env else REPO / ".." / "shared"


def _calibrate() -> float:
    start = time.perf_counter()
    x = 0
    for i in range(1_000_000):
        x += i
    return (time.perf_counter() - start) * 1000


def _load(spec: str) -> dict[str, Any]:
    if spec.startswith("synthetic:"):
        from xcagw_devstack.sandbox.synthetic import generate_bundle

        return generate_bundle("9000000106", size=int(spec.split(":", 1)[1]), seed=1)
    data: dict[str, Any] = json.loads(Path(spec).read_bytes())
    return data


def measure(spec: str, repeat: int) -> dict[str, Any]:
    from ccda_converter.convert import convert_bundle

    bundle = _load(spec)
    entries = len(bundle.get("entry") or [])
    convert_bundle(bundle)  # warm-up (imports, caches)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = convert_bundle(bundle)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "bundle": spec if spec.startswith("synthetic:") else Path(spec).name,
        "entries": entries,
        "median_ms": round(median * 1000, 1),
        "entries_per_s": round(entries / median) if median else 0,
        "ccd_kb": len(result.ccd_xml) // 1024,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "calibration_loop_ms": round(_calibrate(), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=0, help="runs per bundle (default by size)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = parser.parse_args()
    if args.one:
        repeat = args.repeat or (3 if args.one.startswith("synthetic:") else 15)
        print(json.dumps(measure(args.one, repeat)))  # noqa: T201
        return 0
    specs = [str(p) for p in sorted((shared_dir() / "xhuma-fixtures" / "bundles").glob("*.json"))]
    try:
        import xcagw_devstack.sandbox.synthetic  # noqa: F401

        specs += [f"synthetic:{n}" for n in args.sizes.split(",") if n]
    except ImportError:
        print("synthetic generator not installed: real bundles only", file=sys.stderr)  # noqa: T201
    header = (
        f"{'bundle':<22}{'entries':>8}{'median ms':>11}{'entries/s':>11}{'CCD KB':>8}"
        f"{'peak RSS MB':>13}{'calib ms':>10}"
    )
    print(header)  # noqa: T201
    for spec in specs:
        cmd = [sys.executable, __file__, "--one", spec]
        if args.repeat:
            cmd += ["--repeat", str(args.repeat)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if proc.returncode != 0:
            print(f"{spec}: failed: {proc.stderr[-500:]}")  # noqa: T201
            continue
        r = json.loads(proc.stdout)
        print(  # noqa: T201
            f"{r['bundle']:<22}{r['entries']:>8}{r['median_ms']:>11}{r['entries_per_s']:>11}"
            f"{r['ccd_kb']:>8}{r['peak_rss_mb']:>13}{r['calibration_loop_ms']:>10}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
