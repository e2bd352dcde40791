"""token-service settings: the organisation -> ODS map is checked at start-up (as pds-adapter's)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from token_service.config import Settings


def test_the_map_is_trimmed_and_kept() -> None:
    settings = Settings(
        auto_generate_key=True, gpc_organisation_ods_map={" urn:oid:1.2.3 ": " RXX01 "}
    )
    assert settings.gpc_organisation_ods_map == {"urn:oid:1.2.3": "RXX01"}


@pytest.mark.parametrize("value", ["rxx01", "", "NOT AN ODS"])
def test_a_map_value_that_is_not_an_ods_code_is_refused(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(auto_generate_key=True, gpc_organisation_ods_map={"urn:oid:1.2.3": value})
    assert "gpc_organisation_ods_map" in str(info.value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [('{"urn:oid:1.2.3": "rxx01"}', "gpc_organisation_ods_map"), ("RXX01", "error parsing")],
)
def test_the_service_refuses_to_start_with_a_bad_map(value: str, shown: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_SERVICE_")}
    env["TOKEN_SERVICE_AUTO_GENERATE_KEY"] = "true"
    env["TOKEN_SERVICE_GPC_ORGANISATION_ODS_MAP"] = value
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "token_service", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "invalid setting" in done.stderr
    assert shown in done.stderr
    assert "Traceback" not in done.stderr
