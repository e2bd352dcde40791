#!/usr/bin/env bash
# Regenerates the committed gRPC stubs in libs/contracts from protos/ (package path = import path).
set -euo pipefail
cd "$(dirname "$0")/.."
out=libs/contracts/src
export PATH="$PWD/.venv/bin:$PATH"
find "$out/xcagw" -name '*_pb2*.py*' -delete 2>/dev/null || true
python -m grpc_tools.protoc -I protos \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  $(find protos -name '*.proto' | sort)
# Every generated folder is a regular package so mypy and hatchling see it.
find "$out/xcagw" -type d -exec touch {}/__init__.py \;
touch "$out/xcagw/py.typed"
