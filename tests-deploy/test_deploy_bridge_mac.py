"""deploy/pin-bridge-mac.sh on a real Linux bridge in a private network namespace (root only).

A bridge whose MAC was never set takes the lowest MAC of its ports; compose-test pins the compose
network's bridge so a container joining with a lower veth MAC cannot change the gateway's MAC
under the running containers (the netavark 1.4 ARP/DNS outage the script's comment describes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "pin-bridge-mac.sh"
LOW_MAC = "02:00:00:00:00:01"
FIRST_MAC = "0a:00:00:00:00:50"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)


def _read(ns: str, bridge: str, attr: str) -> str:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{bridge}/{attr}"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def _bridge_with_port(ns: str, bridge: str) -> None:
    _ip(ns, "link", "add", bridge, "type", "bridge")
    _ip(ns, "link", "add", f"{bridge}a", "type", "veth", "peer", "name", f"{bridge}ap")
    _ip(ns, "link", "set", f"{bridge}a", "address", FIRST_MAC)
    _ip(ns, "link", "set", f"{bridge}a", "master", bridge)


def _join_low_mac_port(ns: str, bridge: str) -> None:
    _ip(ns, "link", "add", f"{bridge}b", "type", "veth", "peer", "name", f"{bridge}bp")
    _ip(ns, "link", "set", f"{bridge}b", "address", LOW_MAC)
    _ip(ns, "link", "set", f"{bridge}b", "master", bridge)


def _pin(ns: str, bridge: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "bash", str(SCRIPT), bridge],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"xcagw-pin-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_unpinned_bridge_takes_a_lower_port_mac(netns: str) -> None:
    """The kernel behaviour the script guards against (control)."""
    _bridge_with_port(netns, "br0")
    assert _read(netns, "br0", "address") == FIRST_MAC
    _join_low_mac_port(netns, "br0")
    assert _read(netns, "br0", "address") == LOW_MAC


def test_pinned_bridge_keeps_its_mac(netns: str) -> None:
    _bridge_with_port(netns, "br0")
    result = _pin(netns, "br0")
    assert result.returncode == 0, result.stderr
    assert _read(netns, "br0", "addr_assign_type") == "3"
    _join_low_mac_port(netns, "br0")
    assert _read(netns, "br0", "address") == FIRST_MAC


def test_pinning_twice_is_a_no_op(netns: str) -> None:
    _bridge_with_port(netns, "br0")
    assert _pin(netns, "br0").returncode == 0
    assert _pin(netns, "br0").returncode == 0
    assert _read(netns, "br0", "address") == FIRST_MAC


def test_refuses_what_is_not_a_bridge(netns: str) -> None:
    _bridge_with_port(netns, "br0")
    result = _pin(netns, "br0a")
    assert result.returncode == 1
    assert "not a bridge" in result.stderr
