"""scripts/secret_scan.py: what it flags, what it leaves alone, and its command line.

The secrets below are assembled at run time so that this file itself passes the scan.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "secret_scan.py"
BEGIN = "-----BEGIN "
KEY_LINE = "PRIVATE KEY-----"


def with_check_digit(first_nine: str) -> str:
    """A Modulus 11 valid NHS number starting with these nine digits."""
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    assert check != 10, "pick other digits: no valid check digit"
    return first_nine + str(check)


# Shaped like real England-issued numbers (4xx and 6xx ranges), valid Modulus 11.
REALISTIC = with_check_digit("401023213")
REALISTIC_2 = with_check_digit("612345678")


def kinds(scan: ModuleType, text: str, path: str = "src/app.py") -> list[str]:
    return [f.kind for f in scan.scan_text(text, path)]


def test_flags_private_keys(secret_scan: ModuleType) -> None:
    for label in ("", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED "):
        assert kinds(secret_scan, f"{BEGIN}{label}{KEY_LINE}\nMIIE...") == ["private key"]
    assert kinds(secret_scan, f"{BEGIN}PUBLIC KEY-----") == []
    assert kinds(secret_scan, f"{BEGIN}CERTIFICATE-----") == []


def test_flags_bearer_tokens_and_jwts_but_not_prose(secret_scan: ModuleType) -> None:
    token = "a1B2" * 8
    assert kinds(secret_scan, f'headers = {{"Authorization": "Bearer {token}"}}') == [
        "bearer token"
    ]
    header = "eyJ" + "hbGciOiJSUzUxMiJ9"
    payload = "eyJ" + "pc3MiOiJ4In0"
    assert kinds(secret_scan, f"jwt = '{header}.{payload}.c2lnbmF0dXJl'") == ["JSON Web Token"]
    # Unsigned GP Connect JWTs end with a dot: still a token.
    assert kinds(secret_scan, f"{header}.{payload}.") == ["JSON Web Token"]
    assert kinds(secret_scan, "send it as `Authorization: Bearer <access token>`") == []
    assert kinds(secret_scan, "the Bearer token is cached in Redis") == []
    assert kinds(secret_scan, 'f"Bearer {token}"') == []


def test_flags_nhs_numbers_in_every_common_spelling(secret_scan: ModuleType) -> None:
    spaced = f"{REALISTIC[:3]} {REALISTIC[3:6]} {REALISTIC[6:]}"
    dashed = f"{REALISTIC_2[:3]}-{REALISTIC_2[3:6]}-{REALISTIC_2[6:]}"
    text = f"patient {REALISTIC}\nurl = '/Patient/{REALISTIC_2}'\n{spaced}\n{dashed}\n"
    findings = secret_scan.scan_text(text, "notes.md")
    assert [(f.kind, f.line) for f in findings] == [
        ("NHS number", 1),
        ("NHS number", 2),
        ("NHS number", 3),
        ("NHS number", 4),
    ]


def test_leaves_alone_what_is_not_an_nhs_number(secret_scan: ModuleType) -> None:
    invalid = REALISTIC[:9] + str((int(REALISTIC[9]) + 1) % 10)
    assert not secret_scan.nhs_number_valid(invalid)
    samples = [
        invalid,  # fails Modulus 11
        "9000000009",  # sandbox panel test range
        with_check_digit("999123457"),  # NHS test range
        f"1{REALISTIC}",  # part of a longer number
        f"2.16.840.1.{REALISTIC}",  # an OID arc
        f"api-key-{REALISTIC}",  # part of an identifier
        f"id_{REALISTIC}",
        "٩٠٠٠٠٠٠٠٠٩",  # not ASCII digits
        f"{REALISTIC}  # secret-scan: allow (documented example)",
    ]
    for sample in samples:
        assert kinds(secret_scan, sample) == [], sample


def test_findings_never_print_the_secret(secret_scan: ModuleType) -> None:
    (finding,) = secret_scan.scan_text(f"x = {REALISTIC}", "a.py")
    rendered = finding.render()
    assert REALISTIC not in rendered
    assert rendered.startswith("a.py:1:5: NHS number (")


def test_tests_fixtures_are_skipped(secret_scan: ModuleType) -> None:
    assert secret_scan.skipped("services/pds-adapter/tests/fixtures/patient.json")
    assert secret_scan.skipped("tests/fixtures/a.txt")
    assert not secret_scan.skipped("services/pds-adapter/tests/test_pds.py")
    assert not secret_scan.skipped("docs/fixtures/a.md")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_command_line_exit_status_and_output(tmp_path: Path) -> None:
    (tmp_path / "clean.py").write_text("NHS = '9000000009'\n")
    leaky = tmp_path / "leaky.py"
    leaky.write_text(f"KEY = '''{BEGIN}RSA {KEY_LINE}'''\nNHS = '{REALISTIC}'\n")
    fixtures = tmp_path / "tests" / "fixtures"
    fixtures.mkdir(parents=True)
    (fixtures / "patient.json").write_text(f'{{"nhs": "{REALISTIC}"}}')
    (tmp_path / "image.bin").write_bytes(b"\0\1" + REALISTIC.encode())

    clean = _run("clean.py", "image.bin", "tests/fixtures/patient.json", cwd=tmp_path)
    assert clean.returncode == 0, clean.stdout
    assert clean.stdout == ""

    found = _run("clean.py", "leaky.py", cwd=tmp_path)
    assert found.returncode == 1
    assert "leaky.py:1:" in found.stdout and "private key" in found.stdout
    assert "leaky.py:2:" in found.stdout and "NHS number" in found.stdout
    assert REALISTIC not in found.stdout


@pytest.mark.parametrize("folder", ["docs", "scripts", "tests-docs"])
def test_this_repositorys_docs_and_tooling_pass_the_scan(
    secret_scan: ModuleType, folder: str
) -> None:
    files = [p for p in (REPO / folder).rglob("*") if p.is_file()]
    findings = list(secret_scan.scan_paths(str(p) for p in files))
    assert not findings, [f.render() for f in findings]
