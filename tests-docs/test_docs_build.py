"""The documentation site builds with `mkdocs build --strict`, and strict mode really is strict."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _mkdocs(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    if not all(importlib.util.find_spec(m) for m in ("mkdocs", "material")):
        pytest.fail("mkdocs-material is not installed in this environment (requirements-dev.in)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_site_builds_strict_with_every_page(tmp_path: Path) -> None:
    site = tmp_path / "site"
    run = _mkdocs(["build", "--strict", "--site-dir", str(site)])
    assert run.returncode == 0, run.stdout + run.stderr
    # The pages a reader needs exist, with the included example messages expanded.
    iti47 = (site / "partners" / "iti-47" / "index.html").read_text()
    assert "PRPA_IN201306UV02" in iti47
    assert "--8&lt;--" not in iti47 and "--8<--" not in iti47
    assert (site / "reference" / "configuration" / "index.html").exists()
    assert (site / "operations" / "runbooks" / "index.html").exists()
    assert "Contributing" in (site / "development" / "contributing" / "index.html").read_text()


def _one_page_site(tmp_path: Path, page: str) -> subprocess.CompletedProcess[str]:
    """Build a one-page site with the real configuration (theme, validation, extensions)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(f"# Page\n\n{page}\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: {REPO / 'mkdocs.yml'}\ndocs_dir: {docs}\nnav:\n  - index.md\n")
    return _mkdocs(["build", "--strict", "-f", str(config), "--site-dir", str(tmp_path / "site")])


def test_strict_build_fails_on_broken_links_and_anchors(tmp_path: Path) -> None:
    run = _one_page_site(tmp_path, "[gone](no-such-page.md) [anchor](#no-such-anchor)")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "no-such-page.md" in output
    assert "#no-such-anchor" in output


def test_strict_build_fails_on_a_missing_snippet(tmp_path: Path) -> None:
    run = _one_page_site(tmp_path, '```\n--8<-- "docs/partners/examples/no-such-example.xml"\n```')
    assert run.returncode != 0
    assert "no-such-example.xml" in run.stdout + run.stderr
