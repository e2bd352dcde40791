"""Instructions per conversion under callgrind: a before/after measure that does not depend on load.

Wall-clock figures on the shared 2-core machine vary by +-15 % from run to run
(bench_convert.py); instruction counts repeat to about 0.5 %. For each bundle, one process
converts it once (warm-up: imports, caches) and another converts it 1 + N times; the difference
divided by N is the cost of one conversion. Needs valgrind. PYTHONHASHSEED is fixed (dict
layouts change the count slightly). Compare versions with PYTHONPATH pointing at a copy of
another ``src``, or at the mypyc build (``build_mypyc.py`` writes it to
``services/ccda-converter/build/mypyc``).

    .venv/bin/python services/ccda-converter/benchmarks/bench_instructions.py
    .venv/bin/python services/ccda-converter/benchmarks/bench_instructions.py synthetic:1000 -n 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
DEFAULT = ("xhuma-fixtures/bundles/9692136744.json", "synthetic:1000")


def _load(spec: str) -> dict[str, Any]:
    if spec.startswith("synthetic:"):
        from xcagw_devstack.sandbox.synthetic import generate_bundle

        return generate_bundle("9000000106", size=int(spec.split(":", 1)[1]), seed=1)
    data: dict[str, Any] = json.loads(Path(spec).read_bytes())
    return data


def _child(spec: str, runs: int) -> None:
    from ccda_converter.convert import convert_bundle

    bundle = _load(spec)
    for _ in range(1 + runs):
        convert_bundle(bundle)


def _instructions(spec: str, runs: int) -> int:
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        spec,
        "-n",
        str(runs),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)  # noqa: S603
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind failed for {spec}: {proc.stderr[-800:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bundles", nargs="*", help="bundle files or synthetic:N")
    parser.add_argument("-n", type=int, default=3, help="measured conversions (after warm-up)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.n)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind not found", file=sys.stderr)  # noqa: T201
        return 1
    shared = Path(os.environ.get("XCAGW_SHARED_DIR") or REPO / ".." / "shared")
    specs = args.bundles or [s if s.startswith("synthetic:") else str(shared / s) for s in DEFAULT]
    for spec in specs:
        per = (_instructions(spec, args.n) - _instructions(spec, 0)) / args.n
        name = spec if spec.startswith("synthetic:") else Path(spec).name
        print(f"{name:<24} {per / 1e6:8.1f} M instructions per conversion")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
