"""Tests for xcagw_common.resilience: retries, circuit breaker and the Redis GCRA rate limiter."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from prometheus_client import REGISTRY

from xcagw_common.redis import create_redis
from xcagw_common.resilience import (
    CircuitBreaker,
    CircuitBreakerRegistry,
    CircuitOpenError,
    CircuitState,
    Deadline,
    DeadlineExceededError,
    LocalRateLimiter,
    RateLimitExceededError,
    RedisRateLimiter,
    RetryPolicy,
    is_transient_http_error,
    parse_retry_after,
    retry_async,
    retry_http,
)
from xcagw_common.testing import RedisServer


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSleep:
    """Records requested delays and advances a fake clock instead of sleeping."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.delays: list[float] = []
        self.clock = clock

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)


def scripted_client(
    statuses: list[int | Exception], headers: dict[str, str] | None = None
) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    """An httpx client whose successive requests get the scripted statuses (or raise)."""
    seen: list[httpx.Request] = []
    script = iter(statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        outcome = next(script)
        if isinstance(outcome, Exception):
            raise outcome
        return httpx.Response(outcome, headers=headers or {}, json={"n": len(seen)})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), seen


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ------------------------------------------------------------------ Retry-After and backoff


def test_parse_retry_after_delay_seconds() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 0 ") == 0.0


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now) == 7.0
    assert parse_retry_after(earlier, now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-1", "1.5", "Mon, 99 Foo 2020"])
def test_parse_retry_after_rejects_garbage(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_backoff_is_full_jitter_within_exponential_ceiling() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=1.0)
    rng = random.Random(42)
    for retry in range(1, 9):
        ceiling = min(1.0, 0.1 * 2 ** (retry - 1))
        delays = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter spreads over the whole interval, not just its top.
        assert min(delays) < ceiling / 4 and max(delays) > ceiling * 3 / 4


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=-1)


# ------------------------------------------------------------------ retries


async def test_retry_http_retries_5xx_then_succeeds() -> None:
    client, seen = scripted_client([503, 502, 200])
    sleep = RecordingSleep()
    before = sample("xcagw_upstream_retries_total", {"upstream": "t1", "reason": "503"})
    async with client:
        response = await retry_http(
            lambda: client.get("http://upstream/x"),
            RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=1.0),
            upstream="t1",
            sleep=sleep,
        )
    assert response.status_code == 200
    assert len(seen) == 3
    assert len(sleep.delays) == 2
    assert 0.0 <= sleep.delays[0] <= 0.1 and 0.0 <= sleep.delays[1] <= 0.2
    after = sample("xcagw_upstream_retries_total", {"upstream": "t1", "reason": "503"})
    assert after == before + 1


async def test_retry_http_honours_retry_after_up_to_the_cap_only() -> None:
    client, _ = scripted_client([429, 200], headers={"Retry-After": "3"})
    sleep = RecordingSleep()
    async with client:
        response = await retry_http(
            lambda: client.get("http://upstream/x"),
            RetryPolicy(max_attempts=3, retry_after_cap=10.0),
            sleep=sleep,
        )
    assert response.status_code == 200
    assert sleep.delays == [3.0]

    # Beyond the cap the Retry-After is not shortened to the cap: no retry, the 503 stands.
    client, seen = scripted_client([503, 200], headers={"Retry-After": "120"})
    sleep = RecordingSleep()
    async with client:
        response = await retry_http(
            lambda: client.get("http://upstream/x"),
            RetryPolicy(max_attempts=3, retry_after_cap=5.0),
            sleep=sleep,
        )
    assert response.status_code == 503 and response.headers["Retry-After"] == "120"
    assert len(seen) == 1 and sleep.delays == []


async def test_retry_http_returns_last_response_when_attempts_run_out() -> None:
    client, seen = scripted_client([429, 429, 429, 200])
    async with client:
        response = await retry_http(
            lambda: client.get("http://upstream/x"),
            RetryPolicy(max_attempts=3),
            sleep=RecordingSleep(),
        )
    assert response.status_code == 429
    assert len(seen) == 3


@pytest.mark.parametrize("status", [200, 400, 401, 404])
async def test_retry_http_does_not_retry_final_statuses(status: int) -> None:
    client, seen = scripted_client([status, 200])
    sleep = RecordingSleep()
    async with client:
        response = await retry_http(
            lambda: client.get("http://upstream/x"), RetryPolicy(max_attempts=3), sleep=sleep
        )
    assert response.status_code == status
    assert len(seen) == 1 and sleep.delays == []


async def test_retry_http_retries_timeouts_and_reraises_the_last() -> None:
    timeout = httpx.ReadTimeout("slow")
    client, seen = scripted_client([timeout, httpx.ConnectError("refused"), 200])
    async with client:
        response = await retry_http(
            lambda: client.get("http://upstream/x"),
            RetryPolicy(max_attempts=3),
            sleep=RecordingSleep(),
        )
    assert response.status_code == 200 and len(seen) == 3

    client, seen = scripted_client([httpx.ReadTimeout("a"), httpx.ReadTimeout("b")])
    async with client:
        with pytest.raises(httpx.ReadTimeout):
            await retry_http(
                lambda: client.get("http://upstream/x"),
                RetryPolicy(max_attempts=2),
                sleep=RecordingSleep(),
            )
    assert len(seen) == 2


async def test_retry_async_propagates_unclassified_exceptions_at_once() -> None:
    calls = 0

    async def attempt() -> int:
        nonlocal calls
        calls += 1
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await retry_async(attempt, RetryPolicy(max_attempts=5), sleep=RecordingSleep())
    assert calls == 1


async def test_retry_stops_when_the_delay_would_pass_the_deadline() -> None:
    clock = FakeClock()
    client, seen = scripted_client([503, 200], headers={"Retry-After": "4"})
    sleep = RecordingSleep(clock)
    async with client:
        response = await retry_http(
            lambda: client.get("http://upstream/x"),
            RetryPolicy(max_attempts=3, retry_after_cap=10.0),
            deadline=Deadline.after(3.0, clock=clock),
            sleep=sleep,
        )
    # Waiting 4 s would pass a 3 s deadline: the 503 stands, nothing slept.
    assert response.status_code == 503
    assert len(seen) == 1 and sleep.delays == []


async def test_retry_raises_deadline_exceeded_when_an_attempt_overruns() -> None:
    async def attempt() -> str:
        await asyncio.sleep(30)
        return "never"

    with pytest.raises(DeadlineExceededError):
        await retry_async(attempt, RetryPolicy(max_attempts=3), deadline=Deadline.after(0.05))


async def test_retry_raises_deadline_exceeded_before_starting_an_expired_attempt() -> None:
    clock = FakeClock()
    deadline = Deadline.after(1.0, clock=clock)
    clock.advance(2.0)

    async def attempt() -> str:
        raise AssertionError("must not run")

    with pytest.raises(DeadlineExceededError):
        await retry_async(attempt, RetryPolicy(), deadline=deadline)


def test_deadline_earliest_keeps_the_sooner() -> None:
    clock = FakeClock()
    deadline = Deadline.after(10.0, clock=clock)
    assert deadline.earliest(None).remaining() == 10.0
    assert deadline.earliest(2.0).remaining() == 2.0
    assert deadline.earliest(50.0).remaining() == 10.0
    clock.advance(11.0)
    assert deadline.expired and deadline.remaining() == 0.0


# ------------------------------------------------------------------ circuit breaker


class Boom(Exception):
    pass


class NotAFailure(Exception):
    pass


def make_breaker(clock: FakeClock, name: str = "test-breaker") -> CircuitBreaker:
    return CircuitBreaker(
        name,
        failure_threshold=3,
        reset_timeout=10.0,
        is_failure=lambda exc: isinstance(exc, Boom),
        clock=clock,
    )


async def fail(breaker: CircuitBreaker, exc: Exception | None = None) -> None:
    with pytest.raises(type(exc or Boom())):
        async with breaker.guard():
            raise exc or Boom()


async def succeed(breaker: CircuitBreaker) -> None:
    async with breaker.guard():
        pass


async def test_breaker_opens_after_consecutive_failures_and_fails_fast() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, "cb-open")
    await fail(breaker)
    await fail(breaker)
    await succeed(breaker)  # a success resets the count
    assert breaker.consecutive_failures == 0
    for _ in range(3):
        await fail(breaker)
    assert breaker.state is CircuitState.OPEN
    assert sample("xcagw_circuit_breaker_state", {"name": "cb-open"}) == 1.0

    ran = False

    async def call() -> None:
        nonlocal ran
        ran = True

    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(call)
    assert not ran
    assert info.value.reason == "CIRCUIT_OPEN"
    assert 0 < info.value.retry_after <= 10.0


async def test_breaker_half_open_allows_exactly_one_probe_then_closes() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, "cb-probe")
    for _ in range(3):
        await fail(breaker)
    clock.advance(10.0)
    assert breaker.state is CircuitState.HALF_OPEN
    assert sample("xcagw_circuit_breaker_state", {"name": "cb-probe"}) == 2.0

    probe = breaker.guard()
    async with probe:
        with pytest.raises(CircuitOpenError):
            breaker.guard()  # a second caller while the probe is in flight
    assert breaker.state is CircuitState.CLOSED
    assert sample("xcagw_circuit_breaker_state", {"name": "cb-probe"}) == 0.0
    await succeed(breaker)


async def test_breaker_failed_probe_reopens_for_another_reset_timeout() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        await fail(breaker)
    clock.advance(10.0)
    await fail(breaker)
    assert breaker.state is CircuitState.OPEN
    clock.advance(9.0)
    with pytest.raises(CircuitOpenError):
        breaker.guard()
    clock.advance(1.0)
    assert breaker.state is CircuitState.HALF_OPEN


async def test_breaker_cancelled_or_neutral_probe_frees_the_slot() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        await fail(breaker)
    clock.advance(10.0)

    async def hang() -> None:
        async with breaker.guard():
            await asyncio.sleep(30)

    task = asyncio.create_task(hang())
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        breaker.guard()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is CircuitState.HALF_OPEN
    await fail(breaker, NotAFailure())  # says nothing about the upstream
    assert breaker.state is CircuitState.HALF_OPEN
    await succeed(breaker)
    assert breaker.state is CircuitState.CLOSED


async def test_breaker_hung_probe_is_replaced_after_reset_timeout() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        await fail(breaker)
    clock.advance(10.0)
    breaker.guard()  # a probe that never reports back
    with pytest.raises(CircuitOpenError):
        breaker.guard()
    clock.advance(10.0)
    async with breaker.guard():
        pass
    assert breaker.state is CircuitState.CLOSED


async def test_breaker_neutral_exceptions_and_explicit_failures() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(5):
        await fail(breaker, NotAFailure())
    assert breaker.state is CircuitState.CLOSED and breaker.consecutive_failures == 0
    for _ in range(3):
        async with breaker.guard() as permit:
            permit.record_failure()  # e.g. a final HTTP 503 returned, not raised
    assert breaker.state is CircuitState.OPEN


async def test_breaker_ignores_outcomes_of_permits_from_before_a_transition() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    slow = breaker.guard()  # granted while closed
    for _ in range(3):
        await fail(breaker)
    clock.advance(10.0)
    assert breaker.state is CircuitState.HALF_OPEN
    async with slow:
        pass  # a late success from before the circuit opened must not close it
    assert breaker.state is CircuitState.HALF_OPEN


def test_breaker_validates_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker("x", reset_timeout=0)


async def test_breaker_counts_transient_http_errors_only() -> None:
    breaker = CircuitBreaker("cb-http", failure_threshold=1, is_failure=is_transient_http_error)
    with pytest.raises(ValueError):
        async with breaker.guard():
            raise ValueError("bad payload")
    assert breaker.state is CircuitState.CLOSED
    with pytest.raises(httpx.ConnectError):
        async with breaker.guard():
            raise httpx.ConnectError("refused")
    assert breaker.state is CircuitState.OPEN


async def test_registry_keys_breakers_and_evicts_only_closed_ones() -> None:
    clock = FakeClock()
    registry = CircuitBreakerRegistry(
        failure_threshold=1, reset_timeout=10.0, clock=clock, max_breakers=2
    )
    a = registry.get("reg-A")
    assert registry.get("reg-A") is a
    await fail(a)
    assert a.state is CircuitState.OPEN
    registry.get("reg-B")
    registry.get("reg-C")  # over the limit: B (closed, least recent) goes, open A stays
    assert "reg-A" in registry and "reg-C" in registry and "reg-B" not in registry
    assert len(registry) == 2
    assert registry.states() == {"reg-A": CircuitState.OPEN, "reg-C": CircuitState.CLOSED}
    assert REGISTRY.get_sample_value("xcagw_circuit_breaker_state", {"name": "reg-B"}) is None


# ------------------------------------------------------------------ rate limiter


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[object]:
    if redis_server.process is None:
        redis_server.start()
    client = create_redis(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


async def test_redis_limiter_spaces_calls_and_is_shared_by_replicas(redis_client: object) -> None:
    # 1 call per 1000 s: the arithmetic of each reservation is far from any scheduling jitter.
    replica_a = RedisRateLimiter(redis_client, "shared", rate=0.001)
    replica_b = RedisRateLimiter(redis_client, "shared", rate=0.001)
    assert await replica_a.reserve(max_wait=5000) == 0.0
    second = await replica_b.reserve(max_wait=5000)
    third = await replica_a.reserve(max_wait=5000)
    assert 990.0 < second <= 1000.0
    assert 1990.0 < third <= 2000.0
    with pytest.raises(RateLimitExceededError) as info:
        await replica_b.reserve(max_wait=10)
    assert info.value.reason == "RATE_LIMITED"
    assert 2990.0 < info.value.retry_after <= 3000.0
    # A rejected caller reserved nothing: the next slot is still the fourth one.
    fourth = await replica_b.reserve(max_wait=5000)
    assert 2990.0 < fourth <= 3000.0
    ttl_ms = await redis_client.pttl("xcagw:ratelimit:shared")  # type: ignore[attr-defined]
    assert ttl_ms > 0


async def test_redis_limiter_burst_and_separate_names(redis_client: object) -> None:
    limiter = RedisRateLimiter(redis_client, "bursty", rate=0.001, burst=3)
    other = RedisRateLimiter(redis_client, "other", rate=0.001)
    assert [await limiter.reserve(max_wait=0) for _ in range(3)] == [0.0, 0.0, 0.0]
    with pytest.raises(RateLimitExceededError):
        await limiter.reserve(max_wait=0)
    assert await other.reserve(max_wait=0) == 0.0


async def test_redis_limiter_acquire_sleeps_for_its_slot(redis_client: object) -> None:
    sleep = RecordingSleep()
    limiter = RedisRateLimiter(redis_client, "sleepy", rate=0.001, sleep=sleep)
    assert await limiter.acquire(max_wait=5000) == 0.0
    waited = await limiter.acquire(max_wait=5000)
    assert sleep.delays == [waited] and waited > 990.0


async def test_redis_limiter_falls_back_in_process_when_redis_is_down(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    client = create_redis(redis_server.url, timeout=0.5)
    limiter = RedisRateLimiter(
        client, "fallback", rate=0.001, clock=clock, redis_retry_interval=5.0
    )
    try:
        redis_server.kill()
        before = sample(
            "xcagw_rate_limiter_decisions_total", {"name": "fallback", "result": "local"}
        )
        assert await limiter.reserve(max_wait=0) == 0.0
        with pytest.raises(RateLimitExceededError):
            await limiter.reserve(max_wait=0)  # the local limiter enforces the same rate
        after = sample(
            "xcagw_rate_limiter_decisions_total", {"name": "fallback", "result": "local"}
        )
        assert after == before + 1
        redis_server.start()
        clock.advance(6.0)  # past the retry interval: Redis is used again
        assert await limiter.reserve(max_wait=0) == 0.0
        assert await client.exists("xcagw:ratelimit:fallback") == 1
    finally:
        if redis_server.process is None:
            redis_server.start()
        await client.aclose()


async def test_local_limiter_gcra() -> None:
    clock = FakeClock()
    sleep = RecordingSleep(clock)
    limiter = LocalRateLimiter("local", rate=5.0, burst=2, clock=clock, sleep=sleep)
    assert await limiter.acquire(max_wait=1.0) == 0.0
    assert await limiter.acquire(max_wait=1.0) == 0.0
    assert await limiter.acquire(max_wait=1.0) == pytest.approx(0.2)
    with pytest.raises(RateLimitExceededError):
        await limiter.reserve(max_wait=0.1)
    with pytest.raises(ValueError):
        LocalRateLimiter("bad", rate=0)


# ------------------------------------------------------------------ what the breaker counts


async def test_deadline_spent_before_any_attempt_is_not_an_upstream_failure() -> None:
    clock = FakeClock()
    deadline = Deadline.after(1.0, clock=clock)
    clock.advance(2.0)  # e.g. the token fetch before the read used the whole deadline
    client, seen = scripted_client([200])
    breaker = CircuitBreaker(
        "cb-spent", failure_threshold=1, is_failure=is_transient_http_error, clock=clock
    )
    async with client:
        with pytest.raises(DeadlineExceededError) as info:
            async with breaker.guard():
                await retry_http(
                    lambda: client.get("http://upstream/x"), RetryPolicy(), deadline=deadline
                )
    assert info.value.upstream_failure is False and not is_transient_http_error(info.value)
    assert seen == [] and breaker.state is CircuitState.CLOSED


async def test_deadline_passed_after_upstream_failures_counts() -> None:
    clock = FakeClock()
    client, seen = scripted_client([httpx.ConnectError("refused"), 200])

    async def overrunning_sleep(seconds: float) -> None:
        clock.advance(seconds + 5.0)  # the event loop was starved well past the deadline

    async with client:
        with pytest.raises(DeadlineExceededError) as info:
            await retry_http(
                lambda: client.get("http://upstream/x"),
                RetryPolicy(max_attempts=3, base_delay=0.1),
                deadline=Deadline.after(1.0, clock=clock),
                sleep=overrunning_sleep,
            )
    assert len(seen) == 1
    assert info.value.upstream_failure is True and is_transient_http_error(info.value)


async def test_limiter_wait_outside_an_attempt_is_unchanged() -> None:
    clock = FakeClock()
    sleep = RecordingSleep(clock)
    limiter = LocalRateLimiter("outside", rate=1.0, clock=clock, sleep=sleep)
    assert await limiter.acquire(max_wait=5.0) == 0.0
    assert await limiter.acquire(max_wait=5.0) == pytest.approx(1.0)
    assert sleep.delays == [pytest.approx(1.0)]


# ------------------------------------------------------------------ half-open probe bookkeeping


@pytest.mark.parametrize("late_outcome", ["neutral", "cancelled"])
async def test_late_end_of_a_replaced_probe_keeps_the_new_probe_slot(late_outcome: str) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, f"cb-late-probe-{late_outcome}")
    for _ in range(3):
        await fail(breaker)
    clock.advance(10.0)
    hung = breaker.guard()  # probe 1 hangs
    assert hung.probe
    clock.advance(10.0)  # past the reset timeout: its slot goes to a new probe
    current = breaker.guard()
    assert current.probe
    # Probe 1 finally ends without news about the upstream (a neutral error, or cancelled).
    exc: BaseException = NotAFailure() if late_outcome == "neutral" else asyncio.CancelledError()
    await hung.__aexit__(type(exc), exc, None)
    assert breaker.state is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        breaker.guard()  # probe 2 is still in flight: nobody else gets through
    async with current:
        pass
    assert breaker.state is CircuitState.CLOSED


async def test_current_probe_frees_its_own_slot() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, "cb-own-probe")
    for _ in range(3):
        await fail(breaker)
    clock.advance(10.0)
    probe = breaker.guard()
    await probe.__aexit__(NotAFailure, NotAFailure(), None)  # neutral: the slot is free again
    assert breaker.state is CircuitState.HALF_OPEN
    next_probe = breaker.guard()
    assert next_probe.probe
