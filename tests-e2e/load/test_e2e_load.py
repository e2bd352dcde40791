"""CI-sized load: the locustfile for 60 s against the session stack, zero unexpected failures.

Every locust request checks its answer (see locustfile.py), so "0 failures" means every
ITI-47/38/39 got the right answer and every bad request the right fault. No latency is asserted
here (performance lives in benchmarks/); the figures are printed for the log.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from xcagw_devstack.launcher import Stack

SECONDS = int(os.environ.get("XCAGW_LOAD_SECONDS", "60"))
USERS = int(os.environ.get("XCAGW_LOAD_USERS", "8"))
EXPECTED = (
    "iti47 by NHS number",
    "iti38 find documents",
    "iti39 retrieve",
    "iti38 find documents (repeat)",
    "bad: malformed XML",
    "bad: unknown patient",
)


def _runner() -> ModuleType:
    path = Path(__file__).resolve().parent / "load_runner.py"
    spec = importlib.util.spec_from_file_location("xcagw_load_runner", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(SECONDS + 240)
def test_locust_run_has_no_unexpected_failures(stack: Stack, tmp_path: Path) -> None:
    result = _runner().run_locust(
        stack.soap_edge_url, tmp_path, seconds=SECONDS, users=USERS, spawn_rate=4.0
    )
    sys.stdout.write(
        f"\nload: {result.requests} requests, {result.failures} failures, "
        f"{result.rps:.1f} req/s, p50 {result.p50_ms:.0f} ms, p95 {result.p95_ms:.0f} ms\n"
    )
    assert result.requests > 0, result.output
    failures_csv = tmp_path / "load_failures.csv"
    detail = failures_csv.read_text() if failures_csv.exists() else result.output
    assert result.failures == 0, detail
    for name in EXPECTED:
        assert int(result.by_name.get(name, {}).get("Request Count", 0) or 0) > 0, name
    assert result.returncode == 0, result.output
