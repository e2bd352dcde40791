"""xcagw_common.resilience against a real HTTP server on a local socket.

Retry-After beyond the cap ends the retries (no request the upstream said it would refuse), and
the circuit breaker counts only what the upstream did: a deadline used up by our own rate-limit
wait, before anything was sent, must not open it for every caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from xcagw_common.resilience import (
    CircuitBreaker,
    CircuitState,
    Deadline,
    DeadlineExceededError,
    LocalRateLimiter,
    RateLimitExceededError,
    RetryPolicy,
    is_transient_http_error,
    retry_http,
)

HANG = "hang"


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class ScriptedUpstream:
    """An HTTP/1.1 server on 127.0.0.1: request n gets script[n] (the last entry repeats).

    `Reply` answers at once; `HANG` reads the request and never answers. `arrivals` holds the
    monotonic time of every request received.
    """

    def __init__(self, script: list[Reply | str]) -> None:
        self.script = script
        self.arrivals: list[float] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        # Hanging handlers end when this is set: cancelling a stream handler task makes
        # Python 3.11's asyncio log a spurious "Exception in callback" on the way out.
        self._release = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/Patient/x"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        self._release.set()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")  # GET: no body
            self.arrivals.append(time.monotonic())
            action = self.script[min(len(self.arrivals), len(self.script)) - 1]
            if action == HANG:
                await self._release.wait()
                return
            assert isinstance(action, Reply)
            head = [f"HTTP/1.1 {action.status} X", "Content-Length: 2", "Connection: close"]
            head += [f"{name}: {value}" for name, value in action.headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\nok").encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)


@pytest.fixture
async def upstream_factory() -> AsyncIterator[list[ScriptedUpstream]]:
    started: list[ScriptedUpstream] = []
    yield started
    for server in started:
        await server.close()


async def serve(started: list[ScriptedUpstream], script: list[Reply | str]) -> ScriptedUpstream:
    server = ScriptedUpstream(script)
    await server.start()
    started.append(server)
    return server


# ------------------------------------------------------------------ Retry-After and the cap


async def test_retry_after_beyond_the_cap_returns_the_429_without_retrying(
    upstream_factory: list[ScriptedUpstream],
) -> None:
    upstream = await serve(upstream_factory, [Reply(429, {"Retry-After": "60"}), Reply(200)])
    policy = RetryPolicy(max_attempts=3, base_delay=0.1, retry_after_cap=5.0)
    started = time.monotonic()
    async with httpx.AsyncClient() as client:
        response = await retry_http(
            lambda: client.get(upstream.url), policy, deadline=Deadline.after(30.0)
        )
    # One request, the 429 and its Retry-After handed to the caller, and no 5 s wait first.
    assert len(upstream.arrivals) == 1
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "60"
    assert time.monotonic() - started < 3.0


async def test_retry_after_within_the_cap_is_waited_for_then_retried(
    upstream_factory: list[ScriptedUpstream],
) -> None:
    upstream = await serve(upstream_factory, [Reply(429, {"Retry-After": "1"}), Reply(200)])
    policy = RetryPolicy(max_attempts=3, base_delay=0.1, retry_after_cap=5.0)
    async with httpx.AsyncClient() as client:
        response = await retry_http(
            lambda: client.get(upstream.url), policy, deadline=Deadline.after(30.0)
        )
    assert response.status_code == 200
    assert len(upstream.arrivals) == 2
    # The retry came after the second the upstream asked for (a loose bound: scheduling).
    assert upstream.arrivals[1] - upstream.arrivals[0] >= 0.9


# ------------------------------------------------------------------ what the breaker counts


def pds_like_breaker(name: str) -> CircuitBreaker:
    return CircuitBreaker(
        name, failure_threshold=3, reset_timeout=60.0, is_failure=is_transient_http_error
    )


async def test_rate_limit_wait_longer_than_the_deadline_does_not_open_the_breaker(
    upstream_factory: list[ScriptedUpstream],
) -> None:
    upstream = await serve(upstream_factory, [Reply(200)])
    breaker = pds_like_breaker("cb-wait-longer")
    limiter = LocalRateLimiter("rl-wait-longer", rate=0.5)  # one slot every 2 s
    await limiter.acquire(max_wait=0)  # the current slot is taken: the next is 2 s away
    policy = RetryPolicy(max_attempts=3, base_delay=0.05)
    async with httpx.AsyncClient() as client:

        async def attempt() -> httpx.Response:
            # A caller that allows a long slot wait; the deadline is what is short.
            await limiter.acquire(max_wait=10.0)
            return await client.get(upstream.url)

        for _ in range(5):
            with pytest.raises((DeadlineExceededError, RateLimitExceededError)) as info:
                async with breaker.guard():
                    await retry_http(attempt, policy, deadline=Deadline.after(0.2))
            assert not is_transient_http_error(info.value)
    assert upstream.arrivals == []
    assert breaker.state is CircuitState.CLOSED and breaker.consecutive_failures == 0


class FrozenClock:
    def __call__(self) -> float:
        return 1000.0


async def test_deadline_running_out_during_the_slot_wait_does_not_open_the_breaker(
    upstream_factory: list[ScriptedUpstream],
) -> None:
    """The pds-adapter pattern: the slot fits the deadline, but the wait overruns it.

    The limiter's clock is frozen so each reservation waits 10 ms more than the last (well
    within the deadline), and its sleep overruns by 30 s, as a starved event loop or a slow
    Redis round trip would: the deadline always runs out inside our own wait.
    """
    upstream = await serve(upstream_factory, [Reply(200)])
    breaker = pds_like_breaker("cb-wait-overrun")

    async def overrunning_sleep(seconds: float) -> None:
        await asyncio.sleep(seconds + 30.0)

    limiter = LocalRateLimiter(
        "rl-wait-overrun", rate=100.0, clock=FrozenClock(), sleep=overrunning_sleep
    )
    await limiter.acquire(max_wait=0)  # from now on every slot is in the future
    policy = RetryPolicy(max_attempts=3, base_delay=0.05)
    async with httpx.AsyncClient() as client:

        async def read(deadline: Deadline) -> httpx.Response:
            async def attempt() -> httpx.Response:
                # As pds-adapter's fhir_client does: the slot wait is bounded by the deadline.
                await limiter.acquire(max_wait=min(2.0, deadline.remaining()))
                return await client.get(upstream.url)

            return await retry_http(attempt, policy, deadline=deadline)

        for _ in range(5):
            with pytest.raises(DeadlineExceededError) as info:
                async with breaker.guard():
                    await read(Deadline.after(0.3))
            assert info.value.upstream_failure is False
    assert upstream.arrivals == []
    assert breaker.state is CircuitState.CLOSED and breaker.consecutive_failures == 0


async def test_upstream_that_does_not_answer_in_time_still_opens_the_breaker(
    upstream_factory: list[ScriptedUpstream],
) -> None:
    upstream = await serve(upstream_factory, [HANG])
    breaker = pds_like_breaker("cb-upstream-hangs")
    limiter = LocalRateLimiter("rl-upstream-hangs", rate=1000.0, burst=100)
    policy = RetryPolicy(max_attempts=1)
    async with httpx.AsyncClient() as client:

        async def attempt() -> httpx.Response:
            await limiter.acquire(max_wait=1.0)
            return await client.get(upstream.url)

        for _ in range(3):
            with pytest.raises(DeadlineExceededError) as info:
                async with breaker.guard():
                    await retry_http(attempt, policy, deadline=Deadline.after(0.2))
            assert info.value.upstream_failure is True
    assert len(upstream.arrivals) == 3
    assert breaker.state is CircuitState.OPEN


async def test_refused_connections_still_open_the_breaker(
    upstream_factory: list[ScriptedUpstream],
) -> None:
    upstream = await serve(upstream_factory, [Reply(200)])
    url = upstream.url
    await upstream.close()
    upstream_factory.clear()
    breaker = pds_like_breaker("cb-refused")
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            with pytest.raises(httpx.ConnectError):
                async with breaker.guard():
                    await retry_http(
                        lambda: client.get(url),
                        RetryPolicy(max_attempts=2, base_delay=0.01),
                        deadline=Deadline.after(5.0),
                    )
    assert breaker.state is CircuitState.OPEN
