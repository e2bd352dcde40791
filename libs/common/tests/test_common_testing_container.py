"""The Redis test fixture factory: local process by default, a container on request."""

from __future__ import annotations

import os

import pytest
import redis

from xcagw_common.testing import RedisServer
from xcagw_common.testing_container import RedisContainerServer, redis_for_tests


def test_default_is_a_local_redis_server_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XCAGW_TEST_REDIS", raising=False)
    with redis_for_tests() as server:
        assert isinstance(server, RedisServer)
        assert redis.Redis(port=server.port).ping()


def test_container_kind_is_selected_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCAGW_TEST_REDIS", "container")
    monkeypatch.setenv("XCAGW_TEST_REDIS_IMAGE", "localhost/some-redis:7")
    server = redis_for_tests()
    assert isinstance(server, RedisContainerServer)
    assert server.image == "localhost/some-redis:7"
    assert server.url == f"redis://127.0.0.1:{server.port}/0"


def test_unknown_kind_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCAGW_TEST_REDIS", "fakeredis")
    with pytest.raises(ValueError, match="process' or 'container'"):
        redis_for_tests()


@pytest.mark.skipif(
    os.environ.get("XCAGW_TEST_REDIS") != "container",
    reason="needs a container engine: runs in `make compose-test` (XCAGW_TEST_REDIS=container)",
)
def test_container_survives_kill_and_start_on_the_same_port() -> None:
    with RedisContainerServer() as server:
        client = redis.Redis(port=server.port, socket_timeout=2.0)
        assert client.set("k", "v")
        server.kill()
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=server.port, socket_timeout=1.0).ping()
        server.start()
        assert redis.Redis(port=server.port, socket_timeout=2.0).ping()
