"""tests-deploy: offline checks of deploy/, docker-compose.yml and the Dockerfiles.

External tools come from the tools venv `.venv-tools` (requirements-tools.txt, created by
`make install`): kubernetes-validate, check-jsonschema, hadolint. promtool comes from the Debian
`prometheus` package, installed here when missing and running as root. A missing tool skips its
tests with the reason, except under CI (CI=true), where it fails: CI must run them.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# The helper modules next to this file (deploy_tools, deploy_metrics, deploy_logs).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_tools import REPO, TOOLS_VENV, find_tool, missing, run  # noqa: E402


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    """`tool("hadolint")` -> its path, or skip (fail under CI) when it is not installed."""

    def _get(name: str) -> str:
        found = find_tool(name)
        if found is None:
            missing(
                f"{name} not found in {TOOLS_VENV}/bin or PATH: run `make install` "
                "(it creates .venv-tools from requirements-tools.txt)"
            )
        return str(found)

    return _get


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from PATH; installed with apt-get (Debian `prometheus`) when missing and root."""
    found = shutil.which("promtool")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        missing("promtool missing: install the Debian `prometheus` package (needs root)")
    env_prefix = ["env", "DEBIAN_FRONTEND=noninteractive"]
    install = [
        *env_prefix,
        "apt-get",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "prometheus",
    ]
    result = run(install)
    if result.returncode != 0:
        run([*env_prefix, "apt-get", "update", "-qq"])
        result = run(install)
    found = shutil.which("promtool")
    if found is None:
        missing(f"promtool missing and `apt-get install prometheus` failed: {result.stderr[-400:]}")
    return str(found)
