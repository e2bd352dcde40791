"""Shared helpers of tests-deploy: repository paths, tool discovery, running tools."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
TOOLS_VENV = REPO / ".venv-tools"
LAUNCHER_SERVICES_NOTE = "GRPC_SERVICES + soap-edge in xcagw_devstack.launcher"


def missing(reason: str) -> None:
    """Skip, or fail under CI (CI=true): CI must really run every deploy check."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must run these checks)")
    pytest.skip(reason)


def find_tool(name: str) -> str | None:
    """The tool from .venv-tools/bin, else from PATH."""
    candidate = TOOLS_VENV / "bin" / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def run(
    argv: list[str], *, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion; stdout/stderr are kept for assertion messages."""
    return subprocess.run(  # noqa: S603 - argv from our own tool paths
        argv, cwd=cwd, input=stdin, capture_output=True, text=True, check=False, timeout=120
    )
