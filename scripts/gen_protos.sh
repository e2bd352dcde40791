#!/usr/bin/env bash
# Regenerates the committed gRPC stubs in libs/contracts from protos/ (package path = import path).
# PROTO_DIR and OUT_DIR override the locations (the proto-check test generates into a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
protos="${PROTO_DIR:-protos}"
out="${OUT_DIR:-libs/contracts/src}"
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p "$out/xcagw"
find "$out/xcagw" -name '*_pb2*.py*' -delete
python -m grpc_tools.protoc -I "$protos" \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  $(cd "$protos" && find . -name '*.proto' | sed 's|^\./||' | sort | sed "s|^|$protos/|") > /dev/null 2> >(grep -v "^Writing mypy to" >&2)
# Every generated folder is a regular package so mypy and hatchling see it.
find "$out/xcagw" -type d -exec touch {}/__init__.py \;
touch "$out/xcagw/py.typed"
