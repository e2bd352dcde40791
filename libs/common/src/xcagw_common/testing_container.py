"""Redis for integration tests: a local redis-server process, or a container through testcontainers.

`make compose-test` (issue #10) runs the Redis integration tests a second time with
`XCAGW_TEST_REDIS=container`: the same fixtures then start Redis as a container through the
Docker-compatible API that `DOCKER_HOST` points at (podman's, in that run). Everywhere else they
start a local `redis-server` on a free port (`xcagw_common.testing.RedisServer`).

Both kinds have the same surface (`port`, `url`, `start`, `kill`, `stop`, context manager), so the
outage tests (kill, then start again on the same port) run unchanged against either.
"""

from __future__ import annotations

import os
import time
from types import TracebackType
from typing import Any, Protocol

from xcagw_common.testing import Managed, RedisServer, free_port, wait_for_port

ENV_KIND = "XCAGW_TEST_REDIS"
ENV_IMAGE = "XCAGW_TEST_REDIS_IMAGE"
DEFAULT_IMAGE = "redis:7"
_REDIS_PORT = 6379


class TestRedis(Protocol):
    """What the test fixtures rely on, whichever kind of Redis runs."""

    port: int

    @property
    def url(self) -> str: ...

    def start(self) -> TestRedis: ...

    def kill(self) -> None: ...

    def stop(self) -> None: ...

    def __enter__(self) -> TestRedis: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class RedisContainerServer(Managed):
    """Redis in a container (testcontainers), published on a fixed free host port.

    The host port is fixed so that `kill()` then `start()` brings Redis back where the client
    expects it, exactly like a local redis-server restarted on its port.
    """

    def __init__(self, port: int | None = None, *, image: str | None = None) -> None:
        self.port = port or free_port()
        self.image = image or os.environ.get(ENV_IMAGE) or DEFAULT_IMAGE
        self._container: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisContainerServer:
        if self._container is None:
            # Imported here: only compose-test runs need testcontainers (and a container engine).
            from testcontainers.community.redis import RedisContainer  # noqa: PLC0415

            # Explicit command: protected mode off (the port is published through the engine's
            # NAT, so connections do not come from loopback), nothing persisted, as in the
            # local-process fixture; works for the official image and for compose-test's own.
            container = (
                RedisContainer(self.image)
                .with_bind_ports(_REDIS_PORT, self.port)
                .with_command("redis-server --protected-mode no --save '' --appendonly no")
            )
            container.start()
            self._container = container
        else:
            self._container.get_wrapped_container().start()
        wait_for_port(self.port, timeout=30.0)
        self._wait_ping()
        return self

    def _wait_ping(self, timeout: float = 30.0) -> None:
        import redis  # noqa: PLC0415

        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_timeout=1.0)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.1)
        finally:
            client.close()

    def kill(self) -> None:
        if self._container is not None:
            self._container.get_wrapped_container().kill()

    def stop(self) -> None:
        if self._container is not None:
            self._container.stop()
            self._container = None


def redis_for_tests(*, appendonly: bool = False) -> TestRedis:
    """A not yet started Redis for a test fixture: a container when XCAGW_TEST_REDIS=container."""
    kind = os.environ.get(ENV_KIND, "process")
    if kind == "container":
        return RedisContainerServer()
    if kind != "process":
        raise ValueError(f"{ENV_KIND} must be 'process' or 'container', not {kind!r}")
    return RedisServer(appendonly=appendonly)
