"""The CLI: settings from env and arguments, a real process on a socket, logs without secrets."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from xcagw_devstack.sandbox.cli import settings_from_args
from xcagw_devstack.sandbox.testkit import (
    ALL_AREAS,
    KeyRing,
    gpc_headers,
    parameters,
    pds_headers,
    sign_assertion,
    token_form,
)


def test_arguments_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_SEED", "5")
    monkeypatch.setenv("SANDBOX_API_KEY", "from-env")
    monkeypatch.setenv("SANDBOX_CONSUMER_ASID", "111,222")
    settings = settings_from_args(
        ["--port", "1234", "--api-key", "from-args", "--pds-rate-limit-per-second", "7"]
    )
    assert (settings.port, settings.api_key, settings.seed) == (1234, "from-args", 5)
    assert settings.pds_rate_limit_per_second == 7
    assert settings.consumer_asids() == {"111", "222"}
    assert settings.host == "127.0.0.1"
    assert settings.sds_api_key == "xcagw-dev-api-key"


async def test_in_process_logs_carry_no_identifiers(
    client: httpx.AsyncClient, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xcagw_devstack.sandbox")
    await client.get(
        "/personal-demographics/FHIR/R4/Patient/9000000009", headers=pds_headers(token)
    )
    await client.get(
        "/personal-demographics/FHIR/R4/Patient",
        params={"family": "SMITH", "birthdate": "eq2010-10-22"},
        headers=pds_headers(token),
    )
    records = [r for r in caplog.records if r.name == "xcagw_devstack.sandbox"]
    assert len(records) == 2
    text = " ".join(f"{r.getMessage()} {getattr(r, 'ecs', '')}" for r in records)
    assert "/Patient/{nhs_number}" in text
    for secret in ("9000000009", "SMITH", token):
        assert secret not in text


def test_cli_process_serves_and_logs_no_secrets(tmp_path: Path, keys: KeyRing) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [json.loads(keys.signing.export_public())]}))
    cmd = [
        sys.executable,
        "-c",
        "from xcagw_devstack.sandbox.cli import main; main()",
        "--port",
        "0",
        "--jwks-file",
        str(jwks),
        "--api-key",
        "cli-key",
        "--sds-api-key",
        "cli-key",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        url = ""
        deadline = time.monotonic() + 30
        while not url:
            found = [line for line in list(lines) if "listening on" in line]
            if found:
                url = found[0].rsplit(" ", 1)[1].strip()
            elif proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("sandbox did not start:\n" + "".join(lines))
            else:
                time.sleep(0.05)
        with httpx.Client(base_url=url, timeout=10) as c:
            for _ in range(100):
                try:
                    if c.get("/_health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            assertion = sign_assertion(
                keys.signing, token_url=f"{url}/oauth2/token", api_key="cli-key"
            )
            resp = c.post("/oauth2/token", data=token_form(assertion))
            assert resp.status_code == 200, resp.text
            token = resp.json()["access_token"]
            assert (
                c.get(
                    "/personal-demographics/FHIR/R4/Patient/9000000009", headers=pds_headers(token)
                ).status_code
                == 200
            )
            search = c.get(
                "/personal-demographics/FHIR/R4/Patient",
                params={"family": "SMITH", "birthdate": "eq2010-10-22"},
                headers=pds_headers(token),
            )
            assert search.json()["total"] == 1
            gpc = c.post(
                "/gpconnect/Y12345/STU3/1/gpconnect/structured/fhir/Patient/$gpc.getstructuredrecord",
                content=json.dumps(parameters("9000000009", *ALL_AREAS)),
                headers=gpc_headers("Y12345", "918999198001", base=url),
            )
            assert gpc.status_code == 200, gpc.text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=5)
    output = "".join(lines)
    assert "/Patient/{nhs_number}" in output
    for secret in ("9000000009", "SMITH", token, assertion, "cli-key"):
        assert secret not in output
