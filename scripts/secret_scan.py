"""Flag secrets and patient identifiers before they are committed (pre-commit hook `secret-scan`).

Finds, in text files:
- private keys (PEM `-----BEGIN ... PRIVATE KEY-----` blocks, OpenSSH keys included);
- bearer tokens (`Bearer <token>` with a real-looking token) and JSON Web Tokens (`eyJ...eyJ...`);
- NHS numbers: 10 digits (optionally spaced or dashed 3-3-4) that pass the Modulus 11 check
  (NHS Data Dictionary, "NHS NUMBER").

Not flagged:
- anything under a `tests/fixtures/` directory (deliberate test data lives there);
- NHS numbers beginning with 9: the NHS test environments' numbers and the sandbox panel's
  900000xxxx (libs/devstack/SANDBOX.md). Numbers are issued to patients from other ranges
  (England and Wales 4xx and 6xx-7xx, Northern Ireland 320-399, Scotland's CHI 010-311);
  999xxxxxxx is reserved for test data;
- a line carrying the marker `secret-scan: allow` (say why next to it).

Usage: `secret_scan.py FILE...` (what pre-commit passes), or `secret_scan.py --all` for every file
git knows about. Findings print as `path:line:column: kind` with the value masked; exit status 1
when there are any. The secret itself is never printed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ALLOW_MARKER = "secret-scan: allow"
SKIP_DIRS = (("tests", "fixtures"),)
# NHS number ranges never issued to a patient (see the module docstring).
TEST_NUMBER_PREFIXES = ("9",)
MAX_BYTES = 5 * 1024 * 1024

_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
# RFC 6750 b64token after "Bearer"; 20+ characters with a digit and a letter, so prose such as
# "Bearer <access token>" or "Bearer token" is not a finding.
_BEARER = re.compile(r"\bBearer\s+([A-Za-z0-9\-._~+/]{20,}=*)", re.IGNORECASE)
# A JWT: base64url JSON header and payload ({"... -> eyJ), signature optional (unsigned JWTs).
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
# Ten ASCII digits, or 3-3-4 with spaces or dashes, not part of a longer number, OID or identifier.
_NHS = re.compile(r"(?<![\w.-])([0-9]{3})([ -]?)([0-9]{3})\2([0-9]{4})(?![\w-])")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    column: int
    kind: str
    value: str

    def render(self) -> str:
        masked = self.value[:4] + "*" * max(3, len(self.value) - 4)
        return f"{self.path}:{self.line}:{self.column}: {self.kind} ({masked})"


def nhs_number_valid(digits: str) -> bool:
    """Modulus 11: weights 10..2 over digits 1-9; check = 11 - (sum mod 11); 11 -> 0, 10 invalid."""
    if len(digits) != 10 or not digits.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def _has_digit_and_letter(token: str) -> bool:
    return any(c.isdigit() for c in token) and any(c.isalpha() for c in token)


def scan_text(text: str, path: str = "<text>") -> list[Finding]:
    findings: list[Finding] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if ALLOW_MARKER in line:
            continue
        for m in _PRIVATE_KEY.finditer(line):
            findings.append(Finding(path, lineno, m.start() + 1, "private key", m.group()))
        for m in _BEARER.finditer(line):
            if _has_digit_and_letter(m.group(1)):
                findings.append(Finding(path, lineno, m.start(1) + 1, "bearer token", m.group(1)))
        for m in _JWT.finditer(line):
            findings.append(Finding(path, lineno, m.start() + 1, "JSON Web Token", m.group()))
        for m in _NHS.finditer(line):
            digits = m.group(1) + m.group(3) + m.group(4)
            if digits.startswith(TEST_NUMBER_PREFIXES) or not nhs_number_valid(digits):
                continue
            findings.append(Finding(path, lineno, m.start() + 1, "NHS number", digits))
    return findings


def skipped(path: str) -> bool:
    parts = PurePosixPath(path.replace("\\", "/")).parts
    for seq in SKIP_DIRS:
        for i in range(len(parts) - len(seq)):
            if parts[i : i + len(seq)] == seq:
                return True
    return False


def read_text(path: Path) -> str | None:
    """The file as text, or None for binary, unreadable or very large files."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", "replace")


def scan_paths(paths: Iterable[str]) -> Iterator[Finding]:
    for name in paths:
        if skipped(name):
            continue
        text = read_text(Path(name))
        if text is not None:
            yield from scan_text(text, name)


def git_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],  # noqa: S607
        capture_output=True,
        check=True,
    ).stdout
    return [p for p in out.decode().split("\0") if p]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="files to scan (pre-commit passes them)")
    parser.add_argument("--all", action="store_true", help="scan every file git knows about")
    args = parser.parse_args(argv)
    paths = git_files() if args.all else args.paths
    findings = list(scan_paths(paths))
    for f in findings:
        sys.stdout.write(f.render() + "\n")
    if findings:
        sys.stdout.write(
            f"secret-scan: {len(findings)} finding(s). Remove them, move test data under "
            f"tests/fixtures/, or mark a false positive with `{ALLOW_MARKER}` and a reason.\n"
        )
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
