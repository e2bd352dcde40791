"""`xcagw demo` works against the launcher's stack: three steps, a CCD and its HTML view."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from xcagw_devstack.launcher import Stack


def test_demo_command_runs_the_partner_flow(stack: Stack, tmp_path: Path) -> None:
    stack_file = stack.workdir / "stack.json"
    assert json.loads(stack_file.read_text())["soap_edge_url"] == stack.soap_edge_url
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "xcagw_devstack.cli",
            "demo",
            "--nhs-number",
            "9000000009",
            "--out",
            str(out),
            "--stack-file",
            str(stack_file),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for step in ("1. ITI-47", "2. ITI-38", "3. ITI-39"):
        assert step in run.stdout
    ccd = (out / "ccd-9000000009.xml").read_bytes()
    assert b"<ClinicalDocument" in ccd or b":ClinicalDocument" in ccd
    html = (out / "ccd-9000000009.html").read_text()
    assert "<html" in html.lower() and "SMITH" in html.upper()
