"""tests-e2e: the whole stack started by the launcher on free ports (or E2E_SOAP_EDGE_URL)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from xcagw_devstack.launcher import Stack
from xcagw_devstack.otlp_sink import OtlpSink


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def otlp_sink() -> Iterator[OtlpSink]:
    """An OTLP/HTTP receiver every service of the session's stack exports its spans to."""
    with OtlpSink() as sink:
        yield sink


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, otlp_sink: OtlpSink) -> Iterator[Stack]:
    """One local stack for the session; its logs' last lines are printed if it fails to start."""
    if os.environ.get("E2E_SOAP_EDGE_URL"):
        pytest.skip("E2E_SOAP_EDGE_URL is set: tests needing a local stack's processes are skipped")
    workdir = tmp_path_factory.mktemp("stack")
    overrides = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_sink.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    stack = Stack(workdir=workdir, free_ports=True, echo=False, overrides=overrides)
    stack.start(timeout=180)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def soap_edge_url(request: pytest.FixtureRequest) -> str:
    """The SOAP edge under test: an already running stack, or the session's local one."""
    external = os.environ.get("E2E_SOAP_EDGE_URL")
    if external:
        return external.rstrip("/")
    local: Stack = request.getfixturevalue("stack")
    return local.soap_edge_url
