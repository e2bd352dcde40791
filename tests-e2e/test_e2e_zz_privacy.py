"""Runs last: no NHS number, bearer token or JWT appears in any log line or span of the e2e run."""

from __future__ import annotations

import re

import pytest

from xcagw_devstack.launcher import Stack
from xcagw_devstack.otlp_sink import OtlpSink
from xcagw_devstack.sandbox.panel import PANEL

# A JWT is three base64url segments; NHS OAuth and GP Connect tokens both start with eyJ.
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")
BEARER = re.compile(r"Bearer\s+[A-Za-z0-9._~+/-]{8,}")


def test_no_patient_identifier_or_token_in_logs_or_spans(stack: Stack, otlp_sink: OtlpSink) -> None:
    nhs_numbers = {p.nhs_number for p in PANEL}
    logs = {path.name: path.read_text(errors="replace") for path in stack.logs_dir.glob("*.log")}
    if not any(logs.values()):
        pytest.fail("the e2e run produced no logs to scan")
    # The sandbox plays the NHS: its own records are not our logs.
    ours = {name: text for name, text in logs.items() if name != "sandbox.log"}
    for name, text in ours.items():
        leaked = sorted(n for n in nhs_numbers if n in text)
        assert leaked == [], f"{name} logs NHS numbers {leaked}"
        assert not JWT.search(text), f"{name} logs a JWT"
        assert not BEARER.search(text), f"{name} logs a bearer token"
    spans = otlp_sink.spans()
    assert spans, "no spans were exported during the e2e run"
    for span in spans:
        blob = f"{span.name} {span.attributes!r}"
        leaked = sorted(n for n in nhs_numbers if n in blob)
        assert leaked == [], (span.service_name, span.name, leaked)
        assert not JWT.search(blob), (span.service_name, span.name)
        assert not BEARER.search(blob), (span.service_name, span.name)
