"""Run the locustfile headless and read its stats CSV. Used by test_e2e_load.py and `make load`.

    python tests-e2e/load/load_runner.py --seconds 300 --users 20 --out out/load

Without --host it starts a stack of its own (launcher, free ports) and stops it afterwards; with
--host (or XCAGW_LOAD_HOST) it loads an already running soap-edge, e.g. `make run`'s.
Writes <out>/load_stats.csv, load_failures.csv, load_stats_history.csv and report.html.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"


@dataclass
class LoadResult:
    """The "Aggregated" row of locust's stats CSV, plus every row by request name."""

    returncode: int
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    by_name: dict[str, dict[str, str]]
    output: str


def run_locust(
    host: str,
    out_dir: Path,
    *,
    seconds: int,
    users: int,
    spawn_rate: float,
    html: bool = False,
) -> LoadResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / "load"
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(spawn_rate),
        "--run-time",
        f"{seconds}s",
        "--host",
        host,
        "--csv",
        str(prefix),
        "--only-summary",
        "--stop-timeout",
        "15",
        "--loglevel",
        "WARNING",
    ]
    if html:
        argv += ["--html", str(out_dir / "report.html")]
    run = subprocess.run(  # noqa: S603 - our own interpreter and locustfile
        argv, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    rows: dict[str, dict[str, str]] = {}
    stats = Path(f"{prefix}_stats.csv")
    if stats.exists():
        with stats.open(newline="") as handle:
            for row in csv.DictReader(handle):
                rows[row["Name"]] = row
    agg = rows.get("Aggregated", {})
    return LoadResult(
        returncode=run.returncode,
        requests=int(agg.get("Request Count", 0) or 0),
        failures=int(agg.get("Failure Count", 0) or 0),
        rps=float(agg.get("Requests/s", 0) or 0),
        p50_ms=float(agg.get("50%", 0) or 0),
        p95_ms=float(agg.get("95%", 0) or 0),
        by_name=rows,
        output=(run.stdout + run.stderr)[-6000:],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("XCAGW_LOAD_HOST", ""))
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--spawn-rate", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("out/load"))
    args = parser.parse_args()

    stack = None
    host = args.host
    if not host:
        from xcagw_devstack.launcher import Stack

        workdir = Path(tempfile.mkdtemp(prefix="xcagw-load-"))
        stack = Stack(workdir=workdir, free_ports=True, echo=False)
        stack.start(timeout=180)
        host = stack.soap_edge_url
    try:
        result = run_locust(
            host,
            args.out,
            seconds=args.seconds,
            users=args.users,
            spawn_rate=args.spawn_rate,
            html=True,
        )
    finally:
        if stack is not None:
            stack.stop()
    sys.stdout.write(result.output + "\n")
    sys.stdout.write(
        f"requests={result.requests} failures={result.failures} rps={result.rps:.1f} "
        f"p50={result.p50_ms:.0f}ms p95={result.p95_ms:.0f}ms -> {args.out}/load_stats.csv\n"
    )
    return 0 if result.requests and not result.failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
