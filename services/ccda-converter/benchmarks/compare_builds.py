"""Differential check of the mypyc build (build_mypyc.py) against the Python source.

mypyc enforces type annotations at run time: a value of an unexpected type that the Python
source tolerates would raise TypeError in the compiled build, and the per-entry error handling
would quietly turn that entry into narrative. This converts the same inputs with both builds
(each in its own process) and compares the CCD bytes, warnings and coverage: the real captures
and GP Connect examples in ../shared, synthetic records, and mutated copies of all of them
(values replaced by null, numbers, booleans, empty or odd strings, lists and objects).

    .venv/bin/python services/ccda-converter/build_mypyc.py
    .venv/bin/python services/ccda-converter/benchmarks/compare_builds.py [--mutations 40]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
REPLACEMENTS: tuple[Any, ...] = (
    None,
    0,
    7,
    1.5,
    True,
    False,
    "",
    "x",
    "2020-01-01",
    "urn:oid:1.2.3",
    [],
    {},
    ["x"],
    {"x": 1},
    [{}],
    {"reference": "#x"},
    {"coding": "x"},
    {"coding": [None]},
)


def _inputs() -> list[tuple[str, dict[str, Any]]]:
    from xcagw_common.testing import real_bundle_paths

    out = [
        (f"{path.parent.name}/{path.name}", json.loads(path.read_bytes()))
        for path in real_bundle_paths()
    ]
    try:
        from xcagw_devstack.sandbox.synthetic import generate_bundle
    except ImportError:
        return out
    for size in (1, 60, 300):
        out.append((f"synthetic:{size}", generate_bundle("9000000009", size=size, seed=7)))
    return out


def _slots(obj: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) for every value inside ``obj``."""
    if isinstance(obj, dict):
        items: Any = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return
    for key, value in items:
        yield obj, key
        yield from _slots(value)


def _mutate(bundle: dict[str, Any], seed: str, changes: int) -> dict[str, Any] | None:
    rnd = random.Random(seed)
    out = copy.deepcopy(bundle)
    entries = out.get("entry")
    if not isinstance(entries, list) or not entries:
        return None
    for _ in range(changes):
        slots = list(_slots(rnd.choice(entries)))
        if slots:
            container, key = rnd.choice(slots)
            container[key] = copy.deepcopy(rnd.choice(REPLACEMENTS))
    return out


def _child(mutations: int, changes: int) -> None:
    """Print one JSON line per case: name, CCD digest, warnings, coverage (or the exception)."""
    import ccda_converter
    from ccda_converter.convert import convert_bundle
    from ccda_converter.model import ConvertOptions

    # The document id is random; everything else depends on the input and the options only.
    uuid.uuid4 = lambda: uuid.UUID(int=0)
    options = ConvertOptions(effective_time=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    print(json.dumps({"compiled": ccda_converter.compiled()}))  # noqa: T201
    for name, bundle in _inputs():
        cases = [(name, bundle)]
        for m in range(mutations):
            mutated = _mutate(bundle, f"{name}|{m}", changes)
            if mutated is not None:
                cases.append((f"{name}#{m}", mutated))
        for case, data in cases:
            try:
                result = convert_bundle(data, options=options)
                line: dict[str, Any] = {
                    "case": case,
                    "ccd": hashlib.sha256(result.ccd_xml).hexdigest(),
                    "warnings": result.warnings,
                    "coverage": {
                        k: [c.mapped, c.narrative_only, c.skipped, sorted(c.skip_reasons)]
                        for k, c in sorted(result.coverage.items())
                    },
                }
            except Exception as exc:  # noqa: BLE001 - compared between the builds
                line = {"case": case, "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(line))  # noqa: T201


def _run(path: Path, mutations: int, changes: int) -> tuple[bool, dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(path), "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, __file__, "--child", "-m", str(mutations), "-c", str(changes)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)  # noqa: S603
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    return lines[0]["compiled"], {line["case"]: line for line in lines[1:]}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--compiled", type=Path, default=HERE.parent / "build" / "mypyc")
    parser.add_argument("--source", type=Path, default=HERE.parent / "src")
    parser.add_argument("-m", "--mutations", type=int, default=40, help="mutants per input")
    parser.add_argument("-c", "--changes", type=int, default=6, help="values changed per mutant")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.mutations, args.changes)
        return 0
    src_compiled, source = _run(args.source, args.mutations, args.changes)
    bin_compiled, built = _run(args.compiled, args.mutations, args.changes)
    if src_compiled or not bin_compiled:
        print(f"expected source vs compiled, got {src_compiled} vs {bin_compiled}")  # noqa: T201
        return 2
    differ = [case for case in source if source[case] != built.get(case)]
    for case in differ[:20]:
        print(f"DIFFERS {case}:\n  source   {source[case]}\n  compiled {built.get(case)}")  # noqa: T201
    print(f"{len(source)} cases, {len(differ)} differ")  # noqa: T201
    return 1 if differ or len(built) != len(source) else 0


if __name__ == "__main__":
    sys.exit(main())
