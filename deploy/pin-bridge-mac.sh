#!/usr/bin/env bash
# deploy/pin-bridge-mac.sh BRIDGE: fix a Linux bridge's MAC address at its current value (root).
#
# Used by compose-test.sh on the compose network's bridge before the services start. A bridge
# whose address was never set takes the lowest MAC among its ports, so a container that joins
# with a lower veth MAC changes the gateway's MAC under the containers already running. Their ARP
# entry for the gateway keeps the old MAC, the host drops what they send to it, and until that
# entry ages out (20-50 s measured here) every DNS query to aardvark-dns on the gateway is lost:
# new connections by service name fail while open ones and loopback healthchecks work.
# netavark sets a static bridge MAC itself from 1.9 (containers/netavark#833); Debian bookworm's
# netavark 1.4 does not. An address set explicitly (addr_assign_type 3, NET_ADDR_SET) is never
# recalculated by the kernel when ports come and go.
set -euo pipefail

bridge="${1:?usage: pin-bridge-mac.sh BRIDGE}"
sys="/sys/class/net/$bridge"
[ -e "$sys/bridge" ] || { echo "pin-bridge-mac: $bridge is not a bridge" >&2; exit 1; }
[ "$(cat "$sys/addr_assign_type")" = 3 ] && exit 0
ip link set dev "$bridge" address "$(cat "$sys/address")"
if [ "$(cat "$sys/addr_assign_type")" != 3 ]; then
  echo "pin-bridge-mac: the kernel did not keep the address of $bridge as set" >&2
  exit 1
fi
