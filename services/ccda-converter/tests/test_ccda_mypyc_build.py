"""The build the image ships (conversion modules compiled with mypyc) converts like the source.

mypyc enforces type annotations at run time: a value the Python source tolerates but its
annotation does not allow raises TypeError in the compiled build, and the per-entry error
handling would quietly turn that entry into narrative. So the compiled build is made here exactly
as the Dockerfile makes it (build_mypyc.py, then --install into an installed copy of the
package) and benchmarks/compare_builds.py converts real, synthetic and mutated records with both
builds and compares the CCD bytes, warnings and coverage.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[1]
BUILD = SERVICE / "build_mypyc.py"
COMPARE = SERVICE / "benchmarks" / "compare_builds.py"


def _toolchain_missing() -> str | None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (Python.h)"
    return None


def test_compiled_build_converts_exactly_like_the_source(tmp_path: Path) -> None:
    missing = _toolchain_missing()
    if missing:
        pytest.skip(f"mypyc build not possible here: {missing}; `make install` adds it as root")
    # An "installed" package: a copy of the source, as pip puts it into site-packages.
    site = tmp_path / "site"
    shutil.copytree(
        SERVICE / "src" / "ccda_converter",
        site / "ccda_converter",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    build = subprocess.run(  # noqa: S603 - this repository's build script
        [sys.executable, str(BUILD), "--out", str(tmp_path / "mypyc"), "--install", str(site)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    extensions = list((site / "ccda_converter").rglob("*.so"))
    assert len(extensions) >= 20, extensions
    probe = subprocess.run(  # noqa: S603
        [sys.executable, "-c", "import ccda_converter; print(ccda_converter.compiled())"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
        check=True,
    )
    assert probe.stdout.strip() == "True"

    compare = subprocess.run(  # noqa: S603
        [sys.executable, str(COMPARE), "--compiled", str(site), "--mutations", "40"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    summary = re.search(r"^(\d+) cases, (\d+) differ$", compare.stdout, re.MULTILINE)
    assert summary is not None, compare.stdout[-3000:] + compare.stderr[-3000:]
    assert int(summary.group(1)) >= 100, summary.group(0)
    assert summary.group(2) == "0" and compare.returncode == 0, compare.stdout[-5000:]
