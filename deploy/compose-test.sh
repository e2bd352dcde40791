#!/usr/bin/env bash
# `make compose-test`: the real containers, end to end, without Docker or an image registry.
#
#   1. installs podman + runc + docker-compose (v1) + debootstrap + iptables (netavark programs the
#      container network with it) from Debian when missing (root);
#   2. runs podman with its own state under $COMPOSE_TEST_DIR and serves the Docker API on a
#      socket there (architecture notes §8.1: runc, cgroupfs, explicit ulimits);
#   3. builds the base images locally: a Debian bookworm Python 3.11 root filesystem (debootstrap,
#      from the machine's own apt mirror) holding the service wheels downloaded on the host, so
#      `pip install` in the Dockerfiles needs no network; Redis from the host's redis-server;
#   4. builds the five service images and the sandbox with BASE_IMAGE pointing at that base;
#   5. brings up Redis, fixes the compose network bridge's MAC (deploy/pin-bridge-mac.sh), then
#      the sandbox (dev profile) and the five services with docker-compose.yml, waits for every
#      healthcheck, checks that the first ITI-47 answers AA, runs tests-e2e against
#      E2E_SOAP_EDGE_URL and any extra pytest selection given in COMPOSE_TEST_PYTEST (with
#      DOCKER_HOST/testcontainers settings exported, so Redis integration tests can start
#      containers through podman);
#   6. runs the Redis integration tests again with Redis started by testcontainers through that
#      socket (XCAGW_TEST_REDIS=container);
#   7. tears everything down (containers, volumes, the API service) even on failure.
# Base images and downloaded wheels are cached in $COMPOSE_TEST_DIR/cache between runs.
#
# It exits 0 with "compose-test: SKIPPED ..." only where podman cannot be installed or run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

work="${COMPOSE_TEST_DIR:-$repo/.devstack/compose-test}"
tag="${XCAGW_TAG:-compose-test}"
base_image="localhost/xcagw-python:3.11-bookworm"
redis_image="localhost/xcagw-redis:7"
project="xcagw-compose-test"

say() { printf 'compose-test: %s\n' "$*"; }
skip() { say "SKIPPED: $*"; exit 0; }

# ---- 1. tools ----------------------------------------------------------------------------------
need=()
for bin in podman runc docker-compose debootstrap redis-server netavark aardvark-dns iptables; do
  command -v "$bin" >/dev/null || [ -x "/usr/lib/podman/$bin" ] || [ -x "/usr/sbin/$bin" ] || need+=("$bin")
done
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    skip "needs ${need[*]} and is not root with apt-get to install them"
  fi
  pkgs=()
  for bin in "${need[@]}"; do
    pkgs+=("$bin")
  done
  say "installing ${pkgs[*]} (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; }; }; then
    skip "podman cannot be installed here (apt-get install ${pkgs[*]} failed)"
  fi
fi
[ -x .venv/bin/python ] || { say "no .venv: run 'make install' first"; exit 1; }

# ---- 2. podman with private state + Docker API socket -------------------------------------------
mkdir -p "$work"/{root,runroot,tmp,cache}
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
# Short image names (xcagw/soap-edge:tag) resolve to the images built here, not to a registry.
compat_api_enforce_docker_hub = false
[network]
# netavark + aardvark-dns: containers find each other by service name (CNI lacks DNS here).
network_backend = "netavark"
EOF
export CONTAINERS_CONF="$work/containers.conf"
export TMPDIR="$work/tmp"
pm() { podman --root "$work/root" --runroot "$work/runroot" "$@"; }

if ! pm info >/dev/null 2>"$work/podman-info.err"; then
  skip "podman does not run here: $(tail -1 "$work/podman-info.err")"
fi

socket="$work/podman.sock"
rm -f "$socket"
# Started directly (not through `pm`) so that $! is podman itself and cleanup can stop it.
podman --root "$work/root" --runroot "$work/runroot" system service --time=0 "unix://$socket" \
  >"$work/podman-service.log" 2>&1 &
service_pid=$!
export DOCKER_HOST="unix://$socket"
# testcontainers through podman's Docker API (architecture notes §8.1).
export TESTCONTAINERS_RYUK_DISABLED=true TC_HOST=127.0.0.1 TESTCONTAINERS_CONNECTION_MODE=docker_host

compose_file="$work/docker-compose.yml"
override="$work/override.yml"
compose() {
  docker-compose --project-name "$project" --project-directory "$repo" \
    -f "$compose_file" -f "$override" --profile dev "$@"
}

cleanup() {
  status=$?
  if [ -f "$compose_file" ]; then
    if [ "$status" != 0 ]; then
      say "failure: last log lines of every container"
      compose logs --tail=40 --no-color 2>/dev/null || true
    fi
    compose down --volumes --remove-orphans >/dev/null 2>&1 || true
  fi
  for pid in ${pump_pid:-} "$service_pid"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  exit "$status"
}
trap cleanup EXIT

for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.2; done
[ -S "$socket" ] || { say "podman API socket did not appear"; cat "$work/podman-service.log"; exit 1; }

# ---- 3. base images -----------------------------------------------------------------------------
wheels="$work/cache/wheels"
# The wheel set (and the base image holding it) follows the pins and every package's dependencies.
# gcc, libc6-dev and python3-dev: the ccda-converter image compiles its conversion modules with
# mypyc in its build stage (services/ccda-converter/Dockerfile), here without network access.
base_pkgs="python3,python3-venv,ca-certificates,gcc,libc6-dev,python3-dev"
wheel_key="$( (cat constraints.txt libs/*/pyproject.toml services/*/pyproject.toml; echo "$base_pkgs") \
  | sha256sum | cut -c1-16)"
if [ "$(cat "$wheels/.key" 2>/dev/null)" != "$wheel_key" ]; then
  say "downloading wheels for the images (host pip configuration)"
  rm -rf "$wheels" && mkdir -p "$wheels"
  .venv/bin/python -m pip download -q -d "$wheels" -c constraints.txt \
    ./libs/contracts ./libs/common ./libs/devstack ./services/* hatchling pip setuptools wheel \
    async-timeout mypy \
    >"$work/pip-download.log" 2>&1 || { grep -v '^WARNING' "$work/pip-download.log" | tail -20; exit 1; }
  # async-timeout: redis needs it below Python 3.11.3, i.e. on Debian's 3.11.2 (not on the host).
  # The local packages themselves are built inside the images from source.
  rm -f "$wheels"/xcagw_*
  echo "$wheel_key" >"$wheels/.key"
  pm rmi -f "$base_image" >/dev/null 2>&1 || true
fi

if ! pm image exists "$base_image"; then
  mirror="$(apt-get indextargets --no-release-info --format '$(SITE) $(RELEASE) $(COMPONENT)' \
    | awk '$2 == "bookworm" && $3 == "main" {print $1; exit}')"
  [ -n "$mirror" ] || { say "no Debian bookworm mirror configured for apt"; exit 1; }
  rootfs="$work/cache/rootfs"
  if [ "$(cat "$rootfs/.xcagw-packages" 2>/dev/null)" != "$base_pkgs" ]; then
    say "debootstrap a bookworm root filesystem with Python 3.11 ($base_pkgs)"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include="$base_pkgs" \
      bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
      || { tail -20 "$work/debootstrap.log"; exit 1; }
    echo "$base_pkgs" >"$rootfs/.xcagw-packages"
  fi
  # `python` as on the official image; the host CA bundle (TLS interception on this network);
  # pip reads wheels from /wheels only, so image builds need no index.
  ln -sf python3 "$rootfs/usr/bin/python"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$rootfs/wheels" && cp -r "$wheels" "$rootfs/wheels"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  say "importing $base_image"
  tar -C "$rootfs" -c . | pm import \
    -c 'ENV PIP_NO_INDEX=1' -c 'ENV PIP_FIND_LINKS=/wheels' -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["python3"]' - "$base_image" >/dev/null
fi

if ! pm image exists "$redis_image"; then
  # Protected mode off, as in the official image: clients reach it through the container network.
  say "building $redis_image from the host's redis-server"
  fs="$work/cache/redis-fs"
  rm -rf "$fs" && mkdir -p "$fs/usr/local/bin" "$fs/data" "$fs/tmp"
  for bin in redis-server redis-cli; do
    cp "$(command -v "$bin")" "$fs/usr/local/bin/"
    ldd "$(command -v "$bin")" | awk '/=>/ {print $3} /^\s*\/lib/ {print $1}' | while read -r lib; do
      [ -n "$lib" ] && mkdir -p "$fs$(dirname "$lib")" && cp -L "$lib" "$fs$lib"
    done
  done
  chmod 1777 "$fs/tmp" && chown 999:999 "$fs/data"
  tar -C "$fs" -c . | pm import -c 'ENV PATH=/usr/local/bin' -c 'WORKDIR /data' \
    -c 'USER 999:999' -c 'CMD ["redis-server", "--protected-mode", "no"]' - "$redis_image" >/dev/null
fi

# ---- 4. service images --------------------------------------------------------------------------
images=(token-service pds-adapter gpconnect-adapter ccda-converter soap-edge sandbox)
for name in "${images[@]}"; do
  dockerfile="services/$name/Dockerfile"
  [ "$name" = sandbox ] && dockerfile="deploy/sandbox.Dockerfile"
  # COMPOSE_TEST_REUSE_IMAGES=1 keeps images from an earlier run (faster local iterations).
  if [ "${COMPOSE_TEST_REUSE_IMAGES:-0}" = 1 ] && pm image exists "localhost/xcagw/$name:$tag"; then
    continue
  fi
  say "building xcagw/$name:$tag"
  pm build -q --network none -f "$dockerfile" --build-arg "BASE_IMAGE=$base_image" \
    -t "localhost/xcagw/$name:$tag" . >"$work/build-$name.log" 2>&1 \
    || { tail -30 "$work/build-$name.log"; exit 1; }
done

# ---- 5. up, e2e ---------------------------------------------------------------------------------
# docker-compose v1 (Debian) predates the top-level `name:`; the project name is passed instead.
.venv/bin/python - "$repo/docker-compose.yml" "$compose_file" <<'EOF'
import sys
import yaml
doc = yaml.safe_load(open(sys.argv[1]))
doc.pop("name", None)
open(sys.argv[2], "w").write(yaml.safe_dump(doc, sort_keys=False))
EOF
edge_port="$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
sandbox_port="$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$override" <<EOF
services:
  redis:
    image: $redis_image
EOF
export XCAGW_TAG="$tag" BASE_IMAGE="$base_image" SOAP_EDGE_HOST_PORT="$edge_port" SANDBOX_HOST_PORT="$sandbox_port"
# No collector in this run: the services keep tracing in-process and export nothing.
export OTEL_EXPORTER_OTLP_ENDPOINT=""

# Without systemd, podman schedules no healthcheck timers: run every container's healthcheck
# here so `depends_on: condition: service_healthy` and the wait below see real results.
(
  while :; do
    for id in $(pm ps -q --filter "label=com.docker.compose.project=$project" 2>/dev/null); do
      pm healthcheck run "$id" >/dev/null 2>&1 || true
    done
    sleep 2
  done
) &
pump_pid=$!

core=(redis sandbox token-service pds-adapter gpconnect-adapter ccda-converter soap-edge)
say "starting ${core[*]}"
# Redis first: it creates the compose network and its bridge and resolves no names. The bridge MAC
# is then fixed before any container that uses DNS starts (deploy/pin-bridge-mac.sh: netavark 1.4
# lets it change as containers join, which cut the running ones off aardvark-dns for 20-50 s and
# made the first ITI-47s answer AE). Only root can set it; rootless runs tolerate early AEs below.
compose up -d --no-build redis
bridge="$(pm network inspect "${project}_default" --format '{{.NetworkInterface}}')"
pinned=0
if [ "$(id -u)" = 0 ] && deploy/pin-bridge-mac.sh "$bridge"; then
  pinned=1
else
  say "bridge $bridge MAC not pinned (needs root): the first requests may fail while ARP settles"
fi
compose up -d --no-build "${core[@]}"

deadline=$((SECONDS + ${COMPOSE_TEST_READY_SECONDS:-240}))
while :; do
  unhealthy=()
  for name in "${core[@]}"; do
    id="$(compose ps -q "$name")"
    state="$(pm inspect --format '{{.State.Health.Status}}' "$id" 2>/dev/null || echo missing)"
    [ "$state" = healthy ] || unhealthy+=("$name=$state")
  done
  ((${#unhealthy[@]} == 0)) && break
  if ((SECONDS > deadline)); then say "not healthy in time: ${unhealthy[*]}"; exit 1; fi
  sleep 3
done
say "all healthy; SOAP edge on http://127.0.0.1:$edge_port"

export E2E_SOAP_EDGE_URL="http://127.0.0.1:$edge_port"
# With the bridge MAC pinned the first ITI-47 must answer AA: an AE fails the run with the token
# path's logs. Unpinned, ITI-47s are sent until one is AA (at most 60 s).
set +e
.venv/bin/python - "$E2E_SOAP_EDGE_URL" "$((pinned ? 0 : 60))" <<'EOF_FIRST'
import asyncio, sys, time
from xcagw_devstack.partner import PartnerClient

async def main(url: str, seconds: float) -> int:
    client = PartnerClient(url)
    deadline = time.monotonic() + seconds
    attempt = 0
    try:
        while True:
            attempt += 1
            reply = await client.pdq(nhs_number="9000000009")
            if reply.xpath("//hl7:acknowledgement/hl7:typeCode/@code") == ["AA"]:
                print(f"compose-test: first ITI-47 AA after {attempt} attempt(s)")
                return 0 if attempt == 1 else 3
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(2)
    finally:
        await client.aclose()
    print(f"compose-test: no ITI-47 answered AA in {attempt} attempt(s)")
    return 1

sys.exit(asyncio.run(main(sys.argv[1], float(sys.argv[2]))))
EOF_FIRST
rc=$?
set -e
if [ "$rc" != 0 ]; then
  compose logs --tail=30 --no-color token-service pds-adapter sandbox 2>/dev/null || true
  [ "$rc" = 3 ] || exit 1
fi
.venv/bin/pytest -q -m e2e tests-e2e ${COMPOSE_TEST_PYTEST:-}

# ---- 6. Redis integration tests on a containerised Redis ----------------------------------------
# Issue #10: in this run the Redis integration tests start Redis through testcontainers and
# podman's Docker API (elsewhere the same fixtures start a local redis-server); see
# libs/common/src/xcagw_common/testing_container.py. The outage tests kill and restart the container.
redis_tests=(
  libs/common/tests/test_common_testing_container.py
  services/soap-edge/tests/test_soap_edge_iti38.py
  services/soap-edge/tests/test_soap_edge_iti39.py
  services/soap-edge/tests/test_soap_edge_iti47.py
  services/soap-edge/tests/test_soap_edge_runtime.py
  services/soap-edge/tests/test_security_ratelimit.py
  services/pds-adapter/tests/test_pds_component.py
  services/token-service/tests/test_token_rotation.py
)
# COMPOSE_TEST_REDIS_TESTS (space separated) replaces the selection.
[ -n "${COMPOSE_TEST_REDIS_TESTS:-}" ] && read -ra redis_tests <<<"$COMPOSE_TEST_REDIS_TESTS"
say "Redis integration tests with Redis in a container (testcontainers -> podman)"
unset E2E_SOAP_EDGE_URL
XCAGW_TEST_REDIS=container XCAGW_TEST_REDIS_IMAGE="$redis_image" \
  .venv/bin/pytest -q -p no:cacheprovider --import-mode=importlib "${redis_tests[@]}"
say "passed"
