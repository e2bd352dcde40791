"""The CLI (convert / render) and the rendered page in headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from lxml import html as lxml_html

from ccda_converter.__main__ import main
from ccda_converter.convert import convert_bundle

REAL = "9690937286.json"


def _real_bundle(kit: Any) -> Path:
    path = kit.shared_dir() / "xhuma-fixtures" / "bundles" / REAL
    if not path.exists():
        pytest.skip(f"real bundle {REAL} not found under {kit.shared_dir()}")
    return path


def test_cli_convert_and_render(
    kit: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _real_bundle(kit)
    out = tmp_path / "ccd.xml"
    assert main(["convert", str(bundle), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "coded" in err and "MedicationStatement" in err
    assert out.read_bytes().startswith(b"<?xml")
    page = tmp_path / "ccd.html"
    assert main(["render", str(out), "-o", str(page)]) == 0
    assert "SKELLY" in page.read_text()


def test_cli_console_script_prints_ccd(kit: Any) -> None:
    bundle = _real_bundle(kit)
    script = Path(sys.executable).parent / "ccda-converter"
    if not script.exists():
        pytest.skip("console script ccda-converter is not installed in this environment")
    proc = subprocess.run(
        [str(script), "convert", str(bundle)], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith(b"<?xml") and b"ClinicalDocument" in proc.stdout


def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceType": "Patient"}')
    assert main(["convert", str(bad)]) == 2
    assert "expected a FHIR Bundle" in capsys.readouterr().err
    assert main(["render", str(bad)]) == 2


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "update"], capture_output=True, timeout=300, env=env, check=False
        )
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
            capture_output=True,
            timeout=600,
            env=env,
            check=False,
        )
        found = shutil.which("chromium")
        if found:
            return found
    pytest.skip("Debian chromium is not installed and cannot be installed here (needs root + apt)")


@pytest.mark.timeout(900)
def test_rendered_record_in_headless_chromium(kit: Any, tmp_path: Path) -> None:
    bundle = _real_bundle(kit)
    result = convert_bundle(bundle.read_bytes())
    from ccda_converter.render import render_html

    page = tmp_path / "record.html"
    page.write_text(render_html(result.ccd_xml), encoding="utf-8")
    chromium = _chromium()
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={profile}", "--dump-dom", page.as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-1000:]
    dom = lxml_html.fromstring(proc.stdout)
    headings = [" ".join(h.text_content().split()) for h in dom.iter("h2")]
    expected = [
        "Allergies and adverse reactions", "Medications", "Problems", "Results", "Vital signs",
        "Social history", "Immunizations", "Procedures", "Encounters (consultations)",
        "Plan of treatment (requests, referrals and recalls)", "Notes and uncategorised data",
    ]  # fmt: skip
    assert headings == expected
    banner = dom.find_class("banner")[0].text_content()
    assert "Horace SKELLY" in banner and "9690937286" in banner
    # Chromium laid the page out: every heading is present in the rendered DOM with its table.
    assert len(dom.findall(".//table")) >= 5
