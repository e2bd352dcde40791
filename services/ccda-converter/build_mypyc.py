"""The build the image ships: the conversion modules of ccda_converter compiled with mypyc (#7).

The compiled modules are C extensions next to the ``.py`` files of a copy of the package; Python
imports an extension module in preference to the source of the same name, and falls back to the
pure-Python source wherever no extension was built. The output is byte-identical (checked with
``benchmarks/compare_builds.py``); the conversion costs about 22 % fewer instructions
(BENCHMARKS.md). Needs a C compiler, the Python headers, mypy and setuptools (all in the dev
lock; the Dockerfile build stage installs them for the image).

    # dev: a compiled copy of src/ccda_converter in services/ccda-converter/build/mypyc
    .venv/bin/python services/ccda-converter/build_mypyc.py
    PYTHONPATH=services/ccda-converter/build/mypyc .venv/bin/python ...

    # image build stage: also copy the extensions into the installed package
    python build_mypyc.py --out /tmp/mypyc --install /opt/venv/lib/python3.11/site-packages

The copy is compiled in a directory of its own (mypy then sees no other package as source).
Never build into ``src``: an extension there would shadow later edits of its ``.py`` file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "ccda_converter"

# The conversion path: pure computation on the input dict and lxml calls. Left as Python:
# ``model`` (its frozen slotted dataclasses cross the process pool by pickle, which the compiled
# form of a frozen dataclass does not support), the gRPC server, CLI, settings, dm+d client and
# the HTML renderer (I/O bound or not on the conversion path).
MODULES = (
    "bundle",
    "cda",
    "classify",
    "codes",
    "context",
    "convert",
    "dates",
    "header",
    "lists",
    "ns",
    "template",
    "sections/__init__",
    "sections/allergies",
    "sections/base",
    "sections/common",
    "sections/encounters",
    "sections/immunizations",
    "sections/medications",
    "sections/notes",
    "sections/observations",
    "sections/plan",
    "sections/problems",
    "sections/procedures",
    "sections/results",
    "sections/social",
    "sections/vitals",
)

# mypy settings for the compilation (the repo's mypy run checks the same code with --strict).
# lxml and fhirclient are Any, i.e. plain Python objects to mypyc, whether or not they (or stubs
# for them) are installed where the build runs: the image's build venv has neither, and the
# compiled code must insert the same run-time type checks there as in the build make test checks.
MYPY_CONFIG = """\
[mypy]
strict = True
python_version = 3.11
warn_unused_ignores = False

[mypy-lxml.*]
ignore_missing_imports = True
follow_imports = skip
follow_imports_for_stubs = True

[mypy-fhirclient.*]
ignore_missing_imports = True
follow_imports = skip
follow_imports_for_stubs = True
"""


def compile_in_place(root: Path) -> list[Path]:
    """Compile MODULES of ``root/ccda_converter``; return the extension files written."""
    package = root / PACKAGE
    sources = [f"{PACKAGE}/{m}.py" for m in MODULES]
    missing = [s for s in sources if not (root / s).is_file()]
    if missing:
        raise SystemExit(f"build_mypyc: not found under {root}: {missing}")
    with tempfile.TemporaryDirectory(prefix="ccda-mypyc-") as tmp:
        config = Path(tmp) / "mypy.ini"
        config.write_text(MYPY_CONFIG)
        env = {**os.environ, "MYPYC_OPT_LEVEL": "3"}
        # mypyc writes its C sources and objects under ./build of the working directory.
        cmd = [
            sys.executable,
            "-m",
            "mypyc",
            "--config-file",
            str(config),
            "--cache-dir",
            str(Path(tmp) / "cache"),
            *sources,
        ]
        subprocess.run(cmd, cwd=root, env=env, check=True)  # noqa: S603 - fixed argv
    shutil.rmtree(root / "build", ignore_errors=True)
    built = sorted(package.rglob("*.so")) + sorted(root.glob("*__mypyc*.so"))
    expected = len(MODULES) + 1  # one extension per module and the shared runtime library
    if len(built) < expected:
        raise SystemExit(f"build_mypyc: expected {expected} extensions, found {len(built)}")
    return built


def install(built: list[Path], root: Path, target: Path) -> None:
    """Copy the extensions into an installed ccda_converter whose sources are the ones compiled."""
    for module in MODULES:
        relative = f"{PACKAGE}/{module}.py"
        if (target / relative).read_bytes() != (root / relative).read_bytes():
            raise SystemExit(f"build_mypyc: {target / relative} differs from the compiled source")
    for path in built:
        destination = target / path.relative_to(root)
        shutil.copy2(path, destination)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "build" / "mypyc",
        help="directory for the compiled copy of src/ccda_converter (replaced)",
    )
    parser.add_argument(
        "--install",
        type=Path,
        help="also copy the extensions into the ccda_converter installed there (site-packages)",
    )
    args = parser.parse_args()
    root = args.out.resolve()
    if root.is_relative_to(HERE / "src"):
        raise SystemExit("build_mypyc: never build into src (see the module docstring)")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copytree(
        HERE / "src" / PACKAGE,
        root / PACKAGE,
        ignore=shutil.ignore_patterns("__pycache__", "*.so"),
    )
    built = compile_in_place(root)
    if args.install is not None:
        install(built, root, args.install.resolve())
    where = root if args.install is None else args.install
    print(f"build_mypyc: {len(built)} extensions under {where}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
