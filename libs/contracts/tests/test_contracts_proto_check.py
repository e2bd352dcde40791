"""The committed stubs are exactly what protos/ generates, and a proto edit is detected."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "libs" / "contracts" / "src"


def _generate(protos: Path, out: Path) -> None:
    env = {**os.environ, "PROTO_DIR": str(protos), "OUT_DIR": str(out)}
    subprocess.run([str(REPO / "scripts" / "gen_protos.sh")], check=True, env=env)


def _differences(a: Path, b: Path) -> list[str]:
    diffs: list[str] = []
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    diffs += cmp.left_only + cmp.right_only + cmp.diff_files
    for sub in cmp.common_dirs:
        diffs += _differences(a / sub, b / sub)
    return diffs


def test_committed_stubs_match_protos(tmp_path: Path) -> None:
    _generate(REPO / "protos", tmp_path)
    assert _differences(COMMITTED / "xcagw", tmp_path / "xcagw") == []


def test_editing_a_proto_without_regenerating_is_detected(tmp_path: Path) -> None:
    protos = tmp_path / "protos"
    shutil.copytree(REPO / "protos", protos)
    proto = protos / "xcagw" / "pds" / "v1" / "pds_adapter.proto"
    proto.write_text(
        proto.read_text().replace(
            "  string fhir_json = 2;\n}", "  string fhir_json = 2;\n  string added = 3;\n}", 1
        )
    )
    _generate(protos, tmp_path / "out")
    assert "pds_adapter_pb2.py" in " ".join(
        _differences(COMMITTED / "xcagw", tmp_path / "out" / "xcagw")
    )
