"""Shared fixtures for the ccda-converter tests: reference bundles, synthetic bundles, validator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]


def shared_dir() -> Path:
    env = os.environ.get("XCAGW_SHARED_DIR")
    return Path(env) if env else REPO / ".." / "shared"


def real_bundle_paths() -> list[Path]:
    """Every FHIR Bundle among the real captures and the GP Connect examples in ../shared."""
    base = shared_dir()
    paths = sorted((base / "xhuma-fixtures" / "bundles").glob("*.json"))
    paths += sorted((base / "nhs" / "gpconnect").rglob("*.json"))
    out = []
    for path in paths:
        try:
            if json.loads(path.read_bytes()).get("resourceType") == "Bundle":
                out.append(path)
        except (OSError, ValueError):
            continue
    return out


def require_shared() -> Path:
    base = shared_dir()
    if not (base / "ccda" / "validate_ccda.py").exists():
        pytest.skip(f"reference kit not found at {base} (set XCAGW_SHARED_DIR)")
    return base


def synthetic_available() -> bool:
    try:
        import xcagw_devstack.sandbox.synthetic  # noqa: F401
    except ImportError:
        return False
    return True


SWEEP_SIZES = (1, 20, 300)


def synthetic_cases() -> list[tuple[str, str, int | None]]:
    """(name, nhs_number, size): the sandbox panel plus a size sweep."""
    if not synthetic_available():
        return []
    from xcagw_devstack.sandbox.panel import PANEL

    cases: list[tuple[str, str, int | None]] = []
    for patient in PANEL:
        # The "huge" panel record (thousands of entries) is for the benchmark; validating it
        # would take minutes. The sweep below covers the same generator at validator-friendly sizes.
        size = 300 if (patient.record_size or 0) > 1000 else None
        cases.append((f"panel-{patient.nhs_number}", patient.nhs_number, size))
    for size in SWEEP_SIZES:
        cases.append((f"sweep-{size}", "9000000009", size))
    return cases


def synthetic_bundle(nhs_number: str, size: int | None) -> dict[str, Any]:
    from xcagw_devstack.sandbox.synthetic import generate_bundle

    return generate_bundle(nhs_number, size=size, seed=7)


def run_validator(
    files: list[Path], cache_dir: Path, workers: int = 2
) -> dict[str, dict[str, Any]]:
    """validate_ccda.py --json over ``files``, split across ``workers`` processes by size."""
    script = require_shared() / "ccda" / "validate_ccda.py"
    buckets: list[list[Path]] = [[] for _ in range(workers)]
    loads = [0] * workers
    for path in sorted(files, key=lambda p: p.stat().st_size, reverse=True):
        i = loads.index(min(loads))
        buckets[i].append(path)
        loads[i] += path.stat().st_size
    env = {**os.environ, "CCDA_VALIDATOR_CACHE": str(cache_dir)}

    def one(bucket: list[Path]) -> dict[str, dict[str, Any]]:
        if not bucket:
            return {}
        proc = subprocess.run(
            [sys.executable, str(script), "--json", "-n", "10", *map(str, bucket)],
            capture_output=True,
            env=env,
            timeout=600,
            check=False,
        )
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"validator failed: {proc.stderr.decode()[-2000:]}")
        report = json.loads(proc.stdout)
        return {Path(r["file"]).name: r for r in report["results"]}

    out: dict[str, dict[str, Any]] = {}
    # Compile the schematron once before fanning out, so the workers share the cache.
    first = min(files, key=lambda p: p.stat().st_size)
    out.update(one([first]))
    rest = [[p for p in b if p != first] for b in buckets]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(one, rest):
            out.update(part)
    return out


@pytest.fixture(scope="session")
def validator_cache(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.cache.mkdir("ccda-validator"))


@pytest.fixture
def tmp_xml(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "out.xml"


class Kit:
    """Helpers for the tests (conftest modules are not importable under --import-mode=importlib)."""

    real_bundle_paths = staticmethod(real_bundle_paths)
    require_shared = staticmethod(require_shared)
    run_validator = staticmethod(run_validator)
    shared_dir = staticmethod(shared_dir)
    synthetic_available = staticmethod(synthetic_available)
    synthetic_bundle = staticmethod(synthetic_bundle)
    synthetic_cases = staticmethod(synthetic_cases)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit
