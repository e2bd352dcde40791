"""Patient pseudonyms in logs: keyed by XCAGW_LOG_PSEUDONYM_KEY, read once; never a public key.

Without the variable the key used to be the constant below, which is in this public repository:
anyone with the logs could hash all 10^9 NHS numbers and reverse every pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from xcagw_common import logging as xlogging
from xcagw_common.logging import pseudonymise, setup_logging

ENV = "XCAGW_LOG_PSEUDONYM_KEY"
OLD_PUBLIC_KEY = b"xcagw-dev-pseudonym-key"
NHS_NUMBER = "9000000009"
FORMAT = re.compile(r"^pt_[0-9a-f]{16}$")


def hmac_pseudonym(key: bytes, identifier: str) -> str:
    """The pseudonym format the logs have always used: pt_ + 16 hex of HMAC-SHA256."""
    return "pt_" + hmac.new(key, identifier.encode(), hashlib.sha256).hexdigest()[:16]


@pytest.fixture
def fresh_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """setup_logging changes process-wide state: give it back after the test."""
    monkeypatch.setattr(xlogging, "_pseudonym_key", None, raising=False)
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore"]
    saved = {
        name: (
            logging.getLogger(name).handlers[:],
            logging.getLogger(name).level,
            logging.getLogger(name).propagate,
        )
        for name in names
    }
    try:
        yield
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def key_warnings(stdout: str) -> list[dict[str, object]]:
    docs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [d for d in docs if d["log.level"] == "warning" and ENV in str(d["message"])]


def test_without_the_variable_each_setup_gets_its_own_secret_key(
    fresh_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    setup_logging("pseudonym-test")
    first = pseudonymise(NHS_NUMBER)
    assert first == pseudonymise(f" {NHS_NUMBER} "), "stable within one setup"
    setup_logging("pseudonym-test")
    second = pseudonymise(NHS_NUMBER)

    assert FORMAT.match(first) and FORMAT.match(second)
    assert first != second
    assert hmac_pseudonym(OLD_PUBLIC_KEY, NHS_NUMBER) not in (first, second)
    # One warning per setup, as an ECS JSON line on stdout, saying what is lost.
    warnings = key_warnings(capsys.readouterr().out)
    assert len(warnings) == 2
    assert "cannot be compared" in str(warnings[0]["message"])
    assert NHS_NUMBER not in json.dumps(warnings)


def test_a_blank_variable_counts_as_unset(
    fresh_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV, "  ")
    setup_logging("pseudonym-test")
    token = pseudonymise(NHS_NUMBER)
    assert token not in (hmac_pseudonym(b"  ", NHS_NUMBER), hmac_pseudonym(b"", NHS_NUMBER))
    assert len(key_warnings(capsys.readouterr().out)) == 1


def test_with_the_variable_pseudonyms_are_stable_and_equal_across_setups(
    fresh_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV, "test-only-shared-pseudonym-key")
    setup_logging("pseudonym-test")
    first = pseudonymise(NHS_NUMBER)
    assert first == pseudonymise(NHS_NUMBER)
    setup_logging("pseudonym-test")
    assert pseudonymise(NHS_NUMBER) == first
    # Same format and value as before the change, so existing log correlations keep working.
    assert first == hmac_pseudonym(b"test-only-shared-pseudonym-key", NHS_NUMBER)
    assert pseudonymise("9000000017") != first
    assert key_warnings(capsys.readouterr().out) == []


def test_the_key_is_read_at_setup_not_on_every_call(
    fresh_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "key-at-setup")
    setup_logging("pseudonym-test")
    monkeypatch.setenv(ENV, "key-changed-later")
    assert pseudonymise(NHS_NUMBER) == hmac_pseudonym(b"key-at-setup", NHS_NUMBER)
    monkeypatch.delenv(ENV)
    assert pseudonymise(NHS_NUMBER) == hmac_pseudonym(b"key-at-setup", NHS_NUMBER)


def test_without_setup_the_first_pseudonym_reads_the_key_once(
    fresh_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    token = pseudonymise(NHS_NUMBER)
    assert FORMAT.match(token)
    assert token != hmac_pseudonym(OLD_PUBLIC_KEY, NHS_NUMBER)
    monkeypatch.setenv(ENV, "set-too-late")
    assert pseudonymise(NHS_NUMBER) == token


_CHILD = (
    "from xcagw_common.logging import pseudonymise, setup_logging\n"
    "setup_logging('child')\n"
    f"print('PSEUDONYM', pseudonymise('{NHS_NUMBER}'))\n"
)


def run_child(env_key: str | None) -> tuple[str, str]:
    """A separate process as a service's main() runs it: (pseudonym, its stdout)."""
    env = {"PATH": "/usr/bin:/bin"}
    if env_key is not None:
        env[ENV] = env_key
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("PSEUDONYM ")]
    assert len(lines) == 1, done.stdout
    return lines[0].split()[1], done.stdout


def test_processes_agree_only_when_they_share_the_key() -> None:
    shared_a, out_a = run_child("test-only-shared-pseudonym-key")
    shared_b, _ = run_child("test-only-shared-pseudonym-key")
    assert shared_a == shared_b == hmac_pseudonym(b"test-only-shared-pseudonym-key", NHS_NUMBER)
    assert key_warnings(out_a) == []

    alone_a, out_alone = run_child(None)
    alone_b, _ = run_child(None)
    assert alone_a != alone_b
    assert hmac_pseudonym(OLD_PUBLIC_KEY, NHS_NUMBER) not in (alone_a, alone_b)
    assert len(key_warnings(out_alone)) == 1
