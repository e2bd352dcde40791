"""`python -m xcagw_devstack up` as `make run` runs it: ready, then SIGINT leaves no orphan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_launcher_starts_everything_and_sigint_stops_all(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "xcagw_devstack", "up", "--free-ports", "--workdir", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 150
    ready = False
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "xcagw stack is ready" in line:
            ready = True
            break
    if not ready:
        proc.kill()
        pytest.fail("stack never became ready:\n" + "".join(lines[-60:]))
    info = json.loads((tmp_path / "stack.json").read_text())
    pids = list(info["pids"].values())
    assert len(pids) == 7
    assert all(_alive(pid) for pid in pids)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert "all processes stopped" in out
    time.sleep(0.5)
    assert [pid for pid in pids if _alive(pid)] == []
