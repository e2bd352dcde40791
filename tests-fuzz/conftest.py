"""tests-fuzz: soap-edge in-process (ASGI) against a real redis-server and fake gRPC backends.

CI-sized by default (a few hundred examples per property, about 30 s in all); `make fuzz` runs
scripts/fuzz_long.py for the long campaign. XCAGW_FUZZ_EXAMPLES overrides the per-test budget.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from xcagw_common.testing import RedisServer

# The kit is shared with scripts/fuzz_long.py; --import-mode=importlib does not add this folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from soapfuzz_kit import FakeBackends, SoapEdgeHarness  # noqa: E402

_SUPPRESSED = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.function_scoped_fixture,
    HealthCheck.filter_too_much,
]
settings.register_profile(
    "xcagw-ci",
    max_examples=int(os.environ.get("XCAGW_FUZZ_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=_SUPPRESSED,
    print_blob=True,
)
settings.register_profile(
    "xcagw-long",
    max_examples=20_000,
    deadline=None,
    suppress_health_check=_SUPPRESSED,
    print_blob=True,
)
settings.load_profile(os.environ.get("XCAGW_FUZZ_PROFILE", "xcagw-ci"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.fuzz)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: property-based fuzzing of soap-edge (tests-fuzz)")


@pytest.fixture(scope="session")
def fuzz_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def fuzz_fakes() -> Iterator[FakeBackends]:
    backends = FakeBackends().start()
    yield backends
    backends.stop()


@pytest.fixture(scope="session")
def harness(fuzz_redis: RedisServer, fuzz_fakes: FakeBackends) -> Iterator[SoapEdgeHarness]:
    """One app for the whole fuzz session (building it per example would dominate the budget)."""
    h = SoapEdgeHarness(fuzz_redis.url, fuzz_fakes)
    yield h
    h.close()
