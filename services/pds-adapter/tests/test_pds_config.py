"""pds-adapter settings: the end-user organisation ODS map and default are checked at start-up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from pds_adapter.config import Settings

BASE_URL = "http://127.0.0.1:9/personal-demographics/FHIR/R4"


def from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in list(os.environ):
        if name.startswith("PDS_ADAPTER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PDS_ADAPTER_BASE_URL", BASE_URL)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_the_map_is_a_json_object_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = from_env(
        monkeypatch,
        PDS_ADAPTER_END_USER_ORG_ODS_MAP='{" urn:oid:1.2.3 ": " RXX01 ", "partner-b": "A81001"}',
        PDS_ADAPTER_END_USER_ORG_ODS="Y12345",
    )
    assert settings.end_user_org_ods_map == {"urn:oid:1.2.3": "RXX01", "partner-b": "A81001"}
    assert settings.end_user_org_ods == "Y12345"


def test_defaults_keep_todays_behaviour(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = from_env(monkeypatch)
    assert settings.end_user_org_ods_map == {}
    assert settings.end_user_org_ods == ""


@pytest.mark.parametrize(
    "value",
    [
        '{"urn:oid:1.2.3": "rxx01"}',  # lower case
        '{"urn:oid:1.2.3": ""}',
        '{"urn:oid:1.2.3": "R1"}',  # too short
        '{"urn:oid:1.2.3": "ABCDEFGHIJK"}',  # too long
        '{"urn:oid:1.2.3": "RX\\r\\nX"}',  # would be a header injection
        '{" ": "RXX01"}',
        '["RXX01"]',
    ],
)
def test_a_bad_map_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    with pytest.raises(ValidationError) as info:
        from_env(monkeypatch, PDS_ADAPTER_END_USER_ORG_ODS_MAP=value)
    assert "end_user_org_ods_map" in str(info.value)


def test_a_map_that_is_not_json_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="end_user_org_ods_map"):
        from_env(monkeypatch, PDS_ADAPTER_END_USER_ORG_ODS_MAP="RXX01")


@pytest.mark.parametrize("value", ["y12345", "Y1", "Y12 345"])
def test_a_bad_default_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    with pytest.raises(ValidationError) as info:
        from_env(monkeypatch, PDS_ADAPTER_END_USER_ORG_ODS=value)
    assert "end_user_org_ods" in str(info.value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [('{"urn:oid:1.2.3": "rxx01"}', "'rxx01'"), ("RXX01", "error parsing value")],
)
def test_the_service_refuses_to_start_with_a_bad_map(value: str, shown: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDS_ADAPTER_")}
    env["PDS_ADAPTER_BASE_URL"] = BASE_URL
    env["PDS_ADAPTER_END_USER_ORG_ODS_MAP"] = value
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "pds_adapter"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "invalid settings" in done.stderr
    assert "end_user_org_ods_map" in done.stderr and shown in done.stderr
    assert "Traceback" not in done.stderr
