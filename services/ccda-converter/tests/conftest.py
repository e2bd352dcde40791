"""Shared fixtures for the ccda-converter tests: reference bundles, synthetic bundles, validator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xcagw_common.testing import real_bundle_paths, shared_dir

REPO = Path(__file__).resolve().parents[3]

# Test modules import ccda_testkit by name; --import-mode=importlib does not add this folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))


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


def run_validator(files: list[Path], cache_dir: Path) -> dict[str, dict[str, Any]]:
    """validate_ccda.py --json over all ``files`` in ONE invocation: the CDA XSD and the compiled
    C-CDA schematron are loaded once (the XSLT compiled from the .sch is cached in
    ``cache_dir`` across runs via CCDA_VALIDATOR_CACHE) and every document is validated by the
    same process. Returns the validator's per-file report by file name."""
    script = require_shared() / "ccda" / "validate_ccda.py"
    env = {**os.environ, "CCDA_VALIDATOR_CACHE": str(cache_dir)}
    proc = subprocess.run(
        [sys.executable, str(script), "--json", "-n", "10", *map(str, files)],
        capture_output=True,
        env=env,
        timeout=1500,
        check=False,
    )
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"validator failed: {proc.stderr.decode()[-2000:]}")
    report = json.loads(proc.stdout)
    out = {Path(r["file"]).name: r for r in report["results"]}
    missing = {p.name for p in files} - set(out)
    if missing:
        raise RuntimeError(f"validator reported nothing for {sorted(missing)}")
    return out


@pytest.fixture(scope="session")
def validator_cache(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A stable folder (<rootdir>/.pytest_cache/d/ccda-validator): the schematron is compiled
    to XSLT once and reused by later runs. With the cache plugin disabled
    (``-p no:cacheprovider``) a folder of the session: compiled once per run."""
    cache = getattr(request.config, "cache", None)
    if cache is None:
        return tmp_path_factory.mktemp("ccda-validator")
    return Path(cache.mkdir("ccda-validator"))


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
