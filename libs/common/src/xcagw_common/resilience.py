"""Resilience for calls to upstream services: retries, circuit breakers and a shared rate limiter.

Three independent building blocks, meant to be combined by each adapter (pds-adapter,
gpconnect-adapter) around its HTTP client:

1. **Retries** (`retry_async`, `retry_http`, `RetryPolicy`, `Deadline`): full-jitter exponential
   backoff (AWS Architecture Blog, "Exponential Backoff And Jitter"), `Retry-After` honoured in both
   RFC 9110 §10.2.3 forms (delay-seconds or HTTP-date) up to a cap, everything bounded by one
   overall `Deadline`. A Retry-After beyond the cap (or the deadline) ends the retries: the caller
   gets that response and its Retry-After, instead of a retry the upstream said it would refuse.
   Retry **idempotent reads only** (GET): a retried POST may be applied twice.
2. **Circuit breaker** (`CircuitBreaker`, `CircuitBreakerRegistry`): closed / open / half-open
   per process, consecutive-failure threshold, reset timeout, exactly one probe in half-open.
   Callers fail fast with `CircuitOpenError` (gRPC: UNAVAILABLE, ErrorInfo reason `CIRCUIT_OPEN`)
   while it is open. Only what the upstream did counts: a deadline used up before any request was
   sent (our own rate-limit wait, an earlier step) is not a failure of the upstream
   (`DeadlineExceededError.upstream_failure`). State is exported as the gauge
   `xcagw_circuit_breaker_state{name}` (0 closed, 1 open, 2 half-open).
3. **Rate limiter** (`RedisRateLimiter`, `LocalRateLimiter`): GCRA (generic cell rate algorithm,
   ITU-T I.371) in one Lua script on one Redis key, so every replica shares the quota and it is
   Redis Cluster safe. Callers wait (up to a maximum) for their slot; slots are reserved atomically,
   so waiting callers are served in order without a thundering herd.

Typical use for one idempotent upstream read (the order matters: breaker outside, retries inside,
the rate limiter inside each attempt because every attempt counts against the upstream quota)::

    policy = RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=2.0, retry_after_cap=5.0)
    breakers = CircuitBreakerRegistry(failure_threshold=5, reset_timeout=30.0,
                                      is_failure=is_transient_http_error)
    limiter = RedisRateLimiter(redis, "pds", rate=5.0)

    deadline = Deadline.after(10.0)

    async def attempt() -> httpx.Response:
        await limiter.acquire(max_wait=deadline.remaining())
        return await client.get(url, timeout=deadline.remaining())

    async with breakers.get("pds").guard() as permit:
        response = await retry_http(attempt, policy, deadline=deadline, upstream="pds")
        if response.status_code >= 500:
            permit.record_failure()  # still failing after the retries: count it

Label values (`name`, `upstream`) must have bounded cardinality and never carry patient data:
use the upstream name, an ODS code or a host name, never a URL with an NHS number in it.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from types import TracebackType
from typing import Any, Protocol, TypeVar

import httpx
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

T = TypeVar("T")

Clock = Callable[[], float]
"""A monotonic clock in seconds (tests inject a fake one)."""

Sleep = Callable[[float], Awaitable[None]]

UPSTREAM_RETRIES = Counter(
    "xcagw_upstream_retries_total",
    "Retries of upstream calls, by upstream and the reason of the failed attempt.",
    ["upstream", "reason"],
)
CIRCUIT_BREAKER_STATE = Gauge(
    "xcagw_circuit_breaker_state",
    "Circuit breaker state by breaker name: 0 closed, 1 open, 2 half-open.",
    ["name"],
)
CIRCUIT_BREAKER_TRANSITIONS = Counter(
    "xcagw_circuit_breaker_transitions_total",
    "Circuit breaker state changes, by breaker name and new state.",
    ["name", "state"],
)
RATE_LIMITER_DECISIONS = Counter(
    "xcagw_rate_limiter_decisions_total",
    "Rate limiter decisions: immediate, delayed, rejected (max wait exceeded) or local "
    "(Redis unavailable, the in-process fallback decided).",
    ["name", "result"],
)


# --------------------------------------------------------------------------------------------
# Deadlines and retries
# --------------------------------------------------------------------------------------------


class DeadlineExceededError(TimeoutError):
    """The overall deadline of an operation passed (gRPC: DEADLINE_EXCEEDED).

    `upstream_failure` tells a circuit breaker whether the upstream is to blame: True when the
    time ran out while a request was with the upstream, or after an upstream timeout or transport
    error that was being retried; False when it ran out before a request was sent (the caller's
    deadline was already used up, or our own rate-limit wait took it), which says nothing about
    the upstream.
    """

    reason = "DEADLINE_EXCEEDED"

    def __init__(self, message: str, *, upstream_failure: bool = True) -> None:
        super().__init__(message)
        self.upstream_failure = upstream_failure


class Deadline:
    """A point on a monotonic clock by which a whole operation (all attempts) must be done."""

    __slots__ = ("_at", "_clock")

    def __init__(self, at: float, *, clock: Clock = time.monotonic) -> None:
        self._at = at
        self._clock = clock

    @classmethod
    def after(cls, seconds: float, *, clock: Clock = time.monotonic) -> Deadline:
        """A deadline `seconds` from now (math.inf for none)."""
        return cls(clock() + seconds, clock=clock)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._at - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self._at

    def earliest(self, seconds: float | None) -> Deadline:
        """This deadline or one `seconds` from now, whichever comes first (None: unchanged).

        Typical use: `Deadline.after(settings.deadline).earliest(context.time_remaining())` so a
        gRPC caller's own deadline is never outlived.
        """
        if seconds is None:
            return self
        return Deadline(min(self._at, self._clock() + seconds), clock=self._clock)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. `max_attempts` counts the first attempt too.

    The delay before retry n (1-based) is uniform in [0, min(max_delay, base_delay * 2**(n-1))]
    ("full jitter"), unless the upstream sent Retry-After, which is then honoured when it is at
    most `retry_after_cap` seconds. A longer Retry-After is not shortened: retrying before the
    time the upstream named would be refused again and burn quota, so the retries end there.
    """

    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 2.0
    retry_after_cap: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.retry_after_cap < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Full-jitter delay before retry `retry_number` (1 for the first retry)."""
        exponent = min(retry_number - 1, 62)  # 2**63 overflows nothing but is pointless
        ceiling = min(self.max_delay, self.base_delay * (2**exponent))
        return (rng or _RNG).uniform(0.0, ceiling)


_RNG = random.Random()  # nosec B311 # noqa: S311 - jitter, not cryptography


@dataclass(frozen=True)
class RetrySignal:
    """Why an attempt should be retried.

    `reason` is a bounded metric label ("503", "429", "timeout", "transport");
    `retry_after` is the delay the upstream asked for, in seconds, if any.
    """

    reason: str
    retry_after: float | None = None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header value (RFC 9110 §10.2.3), None when unusable.

    Both forms are accepted: delay-seconds (`"5"`) and HTTP-date
    (`"Wed, 21 Oct 2015 07:28:00 GMT"`).
    A date in the past means "now" (0.0). Garbage and negative numbers give None.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 §5.6.7: HTTP-date is always GMT, even in the obsolete formats without a zone.
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


RETRYABLE_STATUS: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses worth retrying for idempotent reads (RFC 9110 §15.5.9, §15.6; RFC 6585 §4)."""


def http_result_signal(response: httpx.Response) -> RetrySignal | None:
    """A retry signal for a retryable HTTP status (with its Retry-After), else None."""
    if response.status_code not in RETRYABLE_STATUS:
        return None
    return RetrySignal(
        reason=str(response.status_code),
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def http_exception_signal(exc: BaseException) -> RetrySignal | None:
    """A retry signal for httpx timeouts and transport errors (connect refused, reset...)."""
    if isinstance(exc, httpx.TimeoutException):
        return RetrySignal(reason="timeout")
    if isinstance(exc, httpx.TransportError):
        return RetrySignal(reason="transport")
    return None


def is_transient_http_error(exc: BaseException) -> bool:
    """Circuit breaker failure predicate: what the upstream did wrong.

    httpx timeouts and transport errors, and a deadline that ran out with a request in flight
    (or after retried upstream failures). A deadline used up before anything was sent, by our own
    rate-limit wait for instance, is not the upstream's fault and must not open the circuit for
    every caller.
    """
    if isinstance(exc, DeadlineExceededError):
        return exc.upstream_failure
    return http_exception_signal(exc) is not None


class _Attempt:
    """What `retry_async` knows about the attempt in progress (see `local_wait`)."""

    __slots__ = ("cancelled_locally", "deadline")

    def __init__(self, deadline: Deadline | None) -> None:
        self.deadline = deadline
        # The attempt's timeout (the deadline) fired inside a `local_wait` block.
        self.cancelled_locally = False


_CURRENT_ATTEMPT: ContextVar[_Attempt | None] = ContextVar("xcagw_retry_attempt", default=None)


@contextmanager
def local_wait() -> Iterator[Deadline | None]:
    """Mark a wait inside a `retry_async` attempt that happens before anything is sent upstream.

    If the attempt's deadline runs out inside the block, the resulting `DeadlineExceededError`
    has `upstream_failure=False`, so circuit breakers do not count it. The rate limiters use it
    for their slot wait. Yields the attempt's deadline (None outside an attempt or without one).
    """
    attempt = _CURRENT_ATTEMPT.get()
    if attempt is None:
        yield None
        return
    try:
        yield attempt.deadline
    except asyncio.CancelledError:
        # asyncio.timeout cancels the task to end the attempt; the flag survives the unwinding.
        attempt.cancelled_locally = True
        raise


async def retry_async(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    deadline: Deadline | None = None,
    result_signal: Callable[[T], RetrySignal | None] | None = None,
    exception_signal: Callable[[BaseException], RetrySignal | None] | None = None,
    upstream: str = "unknown",
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run `attempt` until it succeeds, the attempts run out, or the deadline would be passed.

    - A result for which `result_signal` returns a signal is retried; when no retry is left the
      last such result is **returned** (the caller maps, say, a final 429 to its own error).
    - An exception for which `exception_signal` returns a signal is retried; when no retry is left
      it is re-raised. Any other exception propagates at once.
    - Each attempt runs under the remaining deadline; when the deadline passes (during an attempt,
      or before one could start) `DeadlineExceededError` is raised, with `upstream_failure`
      False when no request had reached the upstream (see `local_wait`). A retry whose delay would
      end after the deadline is not started: the last outcome stands.
    - A Retry-After longer than `policy.retry_after_cap` is not waited for: the last outcome
      stands, so the caller can pass the upstream's Retry-After on.

    Only use this for idempotent operations.
    """
    attempt_number = 0
    # An earlier attempt failed with a retryable exception (an upstream timeout or transport
    # error). Results are left out: whether a status is a failure is the caller's call.
    upstream_failed = False
    while True:
        attempt_number += 1
        if deadline is not None and deadline.expired:
            raise DeadlineExceededError(
                f"{upstream}: deadline passed before attempt", upstream_failure=upstream_failed
            )
        signal: RetrySignal | None
        state = _Attempt(deadline)
        token = _CURRENT_ATTEMPT.set(state)
        try:
            if deadline is None:
                result = await attempt()
            else:
                async with asyncio.timeout(deadline.remaining()):
                    result = await attempt()
        except Exception as exc:
            if isinstance(exc, DeadlineExceededError):
                raise  # raised inside the attempt (a rate limiter's wait): already classified
            signal = exception_signal(exc) if exception_signal else None
            if (
                deadline is not None
                and deadline.expired
                and (signal is not None or isinstance(exc, TimeoutError))
            ):
                # Our own timeout fired, or the attempt's timeout (set from the deadline) did.
                # Only a request that was with the upstream makes it the upstream's failure.
                raise DeadlineExceededError(
                    f"{upstream}: deadline exceeded",
                    upstream_failure=upstream_failed or not state.cancelled_locally,
                ) from exc
            if signal is None:
                raise
            upstream_failed = True
            delay = _delay(policy, attempt_number, signal, rng, upstream)
            if delay is None or not _fits(policy, attempt_number, delay, deadline):
                raise
        else:
            signal = result_signal(result) if result_signal else None
            if signal is None:
                return result
            delay = _delay(policy, attempt_number, signal, rng, upstream)
            if delay is None or not _fits(policy, attempt_number, delay, deadline):
                return result
        finally:
            _CURRENT_ATTEMPT.reset(token)
        UPSTREAM_RETRIES.labels(upstream, signal.reason).inc()
        log.info(
            "retrying upstream call",
            extra={
                "ecs": {
                    "labels.upstream": upstream,
                    "labels.retry_reason": signal.reason,
                    "labels.retry_attempt": attempt_number,
                    "event.duration": int(delay * 1e9),
                }
            },
        )
        await sleep(delay)


def _delay(
    policy: RetryPolicy,
    attempt_number: int,
    signal: RetrySignal,
    rng: random.Random | None,
    upstream: str,
) -> float | None:
    """Seconds to wait before the next attempt; None when the upstream asked for too long.

    RFC 9110 §10.2.3: Retry-After is how long the client "ought to wait"; a retry sooner is
    refused again (PDS and the SSP count it against the quota), so a Retry-After beyond the cap
    is not shortened to the cap: the retries end and the caller gets the response as it is.
    """
    if signal.retry_after is not None:
        if signal.retry_after > policy.retry_after_cap:
            log.info(
                "not retrying upstream call: Retry-After beyond the cap",
                extra={
                    "ecs": {
                        "labels.upstream": upstream,
                        "labels.retry_reason": signal.reason,
                        "labels.retry_after": signal.retry_after,
                        "labels.retry_after_cap": policy.retry_after_cap,
                    }
                },
            )
            return None
        return signal.retry_after
    return policy.backoff(attempt_number, rng)


def _fits(
    policy: RetryPolicy, attempt_number: int, delay: float, deadline: Deadline | None
) -> bool:
    if attempt_number >= policy.max_attempts:
        return False
    # Sleeping up to the deadline would leave no time for the retry itself.
    return deadline is None or delay < deadline.remaining()


async def retry_http(
    send: Callable[[], Awaitable[httpx.Response]],
    policy: RetryPolicy,
    *,
    deadline: Deadline | None = None,
    upstream: str = "unknown",
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> httpx.Response:
    """`retry_async` preset for an idempotent HTTP read.

    Retries 408, 429, 500, 502, 503 and 504 (honouring Retry-After) and httpx timeouts and
    transport errors. Returns the final response whatever its status; re-raises the final httpx
    exception. `send` must reuse the same request id header on every call (PDS requires it).
    """
    return await retry_async(
        send,
        policy,
        deadline=deadline,
        result_signal=http_result_signal,
        exception_signal=http_exception_signal,
        upstream=upstream,
        sleep=sleep,
        rng=rng,
    )


# --------------------------------------------------------------------------------------------
# Circuit breaker
# --------------------------------------------------------------------------------------------


class CircuitState(IntEnum):
    """Breaker states; the values are what the state gauge reports."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitOpenError(Exception):
    """The breaker is open (or half-open with its probe in flight): fail fast.

    gRPC mapping: UNAVAILABLE with ErrorInfo reason `CIRCUIT_OPEN`.
    """

    reason = "CIRCUIT_OPEN"

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit {name!r} is open; retry in {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after


FailurePredicate = Callable[[BaseException], bool]


def _every_exception(exc: BaseException) -> bool:
    return True


class CircuitBreaker:
    """An async circuit breaker (per process; each replica learns about the upstream itself).

    - CLOSED: calls pass. `failure_threshold` consecutive failures open the circuit; any success
      resets the count.
    - OPEN: calls fail fast with `CircuitOpenError` until `reset_timeout` seconds have passed.
    - HALF_OPEN: exactly one call (the probe) passes; others fail fast. A successful probe closes
      the circuit, a failed one opens it again for another `reset_timeout`. A probe that neither
      succeeds nor fails within `reset_timeout` (hung) frees the slot for a new probe; a cancelled
      probe frees it at once.

    An outcome is recorded through a permit (`guard()`): an exception for which `is_failure` is
    true counts as a failure, other exceptions are neutral (they say nothing about upstream health,
    e.g. a token-service error or a NOT_FOUND mapped to an exception), a normal exit is a success
    unless `permit.record_failure()` was called (for failures seen in a result, like a final 503).
    Outcomes of permits granted before the last state change are ignored.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        is_failure: FailurePredicate | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_timeout <= 0:
            raise ValueError("reset_timeout must be positive")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.is_failure: FailurePredicate = is_failure or _every_exception
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started_at: float | None = None
        self._probe: CircuitPermit | None = None  # the half-open probe holding the slot
        self._generation = 0
        CIRCUIT_BREAKER_STATE.labels(name).set(CircuitState.CLOSED)

    @property
    def state(self) -> CircuitState:
        """The current state (an open circuit whose reset timeout passed reads as half-open)."""
        if (
            self._state is CircuitState.OPEN
            and self._clock() - self._opened_at >= self.reset_timeout
        ):
            self._transition(CircuitState.HALF_OPEN)
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def guard(self) -> CircuitPermit:
        """A permit for one call, as an async context manager; raises `CircuitOpenError`."""
        state = self.state
        now = self._clock()
        if state is CircuitState.OPEN:
            raise CircuitOpenError(self.name, self.reset_timeout - (now - self._opened_at))
        probe = False
        if state is CircuitState.HALF_OPEN:
            started = self._probe_started_at
            if started is not None and now - started < self.reset_timeout:
                raise CircuitOpenError(self.name, self.reset_timeout - (now - started))
            self._probe_started_at = now
            probe = True
        permit = CircuitPermit(self, self._generation, probe)
        if probe:
            self._probe = permit
        return permit

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """`await fn(*args, **kwargs)` under a permit."""
        async with self.guard():
            return await fn(*args, **kwargs)

    def reset(self) -> None:
        """Force the circuit closed (operator action, tests)."""
        self._transition(CircuitState.CLOSED)

    def _record(self, permit: CircuitPermit, failed: bool | None) -> None:
        if permit.generation != self._generation:
            return  # granted before the last state change: stale news
        if permit is self._probe:
            # Only the probe holding the slot frees it: a hung probe that was replaced and ends
            # late must not free its successor's slot, or two probes would run at once.
            self._probe = None
            self._probe_started_at = None
        if failed is None:
            return
        state = self._state
        if failed:
            if state is CircuitState.HALF_OPEN:
                self._transition(CircuitState.OPEN)
            elif state is CircuitState.CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._transition(CircuitState.OPEN)
        elif state is CircuitState.HALF_OPEN:
            if permit.probe:
                self._transition(CircuitState.CLOSED)
        else:
            self._failures = 0

    def _transition(self, new: CircuitState) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        self._generation += 1
        self._failures = 0
        self._probe_started_at = None
        self._probe = None
        if new is CircuitState.OPEN:
            self._opened_at = self._clock()
        CIRCUIT_BREAKER_STATE.labels(self.name).set(new)
        CIRCUIT_BREAKER_TRANSITIONS.labels(self.name, new.name.lower()).inc()
        level = logging.WARNING if new is CircuitState.OPEN else logging.INFO
        log.log(
            level,
            "circuit breaker %s: %s -> %s",
            self.name,
            old.name,
            new.name,
            extra={"ecs": {"labels.circuit": self.name, "labels.circuit_state": new.name}},
        )


class CircuitPermit:
    """One call's permission from a `CircuitBreaker`; records the outcome on exit."""

    __slots__ = ("_breaker", "_outcome", "generation", "probe")

    def __init__(self, breaker: CircuitBreaker, generation: int, probe: bool) -> None:
        self._breaker = breaker
        self.generation = generation
        self.probe = probe
        self._outcome: bool | None = None  # True = failed, False = succeeded

    def record_failure(self) -> None:
        """Count this call as a failure even though it returns normally."""
        self._outcome = True

    def record_success(self) -> None:
        """Count this call as a success (the default for a normal exit)."""
        self._outcome = False

    async def __aenter__(self) -> CircuitPermit:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failed: bool | None
        if exc is None:
            failed = self._outcome if self._outcome is not None else False
        elif isinstance(exc, asyncio.CancelledError):
            failed = None  # the caller gave up: nothing learnt about the upstream
        elif self._breaker.is_failure(exc):
            failed = True
        else:
            failed = self._outcome
        self._breaker._record(self, failed)


class CircuitBreakerRegistry:
    """Breakers by name, created on first use with shared settings.

    For one breaker per upstream endpoint (gpconnect-adapter: one per GP Connect provider, keyed
    by ODS code or host). At most `max_breakers` are kept: beyond that the least recently used
    CLOSED breaker is dropped (an open one is kept so it keeps failing fast).
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        is_failure: FailurePredicate | None = None,
        clock: Clock = time.monotonic,
        max_breakers: int = 1024,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.is_failure = is_failure
        self._clock = clock
        self.max_breakers = max_breakers
        self._breakers: OrderedDict[str, CircuitBreaker] = OrderedDict()

    def get(self, name: str) -> CircuitBreaker:
        """The breaker called `name` (created closed on first use)."""
        breaker = self._breakers.get(name)
        if breaker is not None:
            self._breakers.move_to_end(name)
            return breaker
        breaker = CircuitBreaker(
            name,
            failure_threshold=self.failure_threshold,
            reset_timeout=self.reset_timeout,
            is_failure=self.is_failure,
            clock=self._clock,
        )
        self._breakers[name] = breaker
        self._evict()
        return breaker

    def _evict(self) -> None:
        while len(self._breakers) > self.max_breakers:
            victim = next(
                (n for n, b in self._breakers.items() if b.state is CircuitState.CLOSED), None
            )
            if victim is None:
                return
            del self._breakers[victim]
            CIRCUIT_BREAKER_STATE.remove(victim)

    def states(self) -> dict[str, CircuitState]:
        """Current state of every known breaker."""
        return {name: b.state for name, b in self._breakers.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __len__(self) -> int:
        return len(self._breakers)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._breakers))


# --------------------------------------------------------------------------------------------
# Rate limiting (GCRA)
# --------------------------------------------------------------------------------------------


class RateLimitExceededError(Exception):
    """The caller would have to wait longer than it allowed for a slot.

    gRPC mapping: RESOURCE_EXHAUSTED with ErrorInfo reason `RATE_LIMITED`.
    """

    reason = "RATE_LIMITED"

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"rate limit {name!r}: next slot in {retry_after:.3f}s")
        self.name = name
        self.retry_after = retry_after


class RateLimiter(Protocol):
    """What adapters depend on; `RedisRateLimiter` and `LocalRateLimiter` implement it."""

    name: str

    async def reserve(self, max_wait: float) -> float: ...

    async def acquire(self, max_wait: float) -> float: ...


class _GcraParams:
    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = burst
        # Emission interval T and burst tolerance tau, in microseconds (integers keep Lua exact).
        self.interval_us = max(1, round(1_000_000 / rate))
        self.tolerance_us = self.interval_us * (burst - 1)


async def _acquire_within_attempt(
    reserve: Callable[[float], Awaitable[float]], sleep: Sleep, name: str, max_wait: float
) -> float:
    """Reserve a slot and wait for it, as a `local_wait` of the current `retry_async` attempt.

    Inside an attempt with a deadline the wait is also bounded by that deadline, and a slot that
    would only come when the deadline has passed (the reservation itself took the time) ends the
    attempt at once. Either way nothing was sent upstream: a deadline that runs out here gives
    `DeadlineExceededError(upstream_failure=False)`, which circuit breakers do not count.
    """
    with local_wait() as deadline:
        if deadline is not None:
            max_wait = min(max_wait, deadline.remaining())
        wait = await reserve(max_wait)
        if deadline is not None and wait >= deadline.remaining():
            raise DeadlineExceededError(
                f"rate limit {name!r}: no time left for the request after the slot wait",
                upstream_failure=False,
            )
        if wait > 0:
            await sleep(wait)
    return wait


class LocalRateLimiter:
    """The same GCRA as `RedisRateLimiter`, in process (single replica, fallback, tests)."""

    def __init__(
        self,
        name: str,
        *,
        rate: float,
        burst: int = 1,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = name
        self._params = _GcraParams(rate, burst)
        self._clock = clock
        self._sleep = sleep
        self._tat_us = 0.0

    async def reserve(self, max_wait: float) -> float:
        """Reserve the next slot; returns the seconds until it (0 = now). See RedisRateLimiter."""
        return self.reserve_now(max_wait)

    def reserve_now(self, max_wait: float) -> float:
        p = self._params
        now = self._clock() * 1_000_000
        tat = max(self._tat_us, now)
        wait = max(0.0, tat - p.tolerance_us - now)
        if wait > max_wait * 1_000_000:
            raise RateLimitExceededError(self.name, wait / 1_000_000)
        self._tat_us = tat + p.interval_us
        return wait / 1_000_000

    async def acquire(self, max_wait: float) -> float:
        """Wait for a slot (at most `max_wait` seconds); returns the seconds waited.

        Inside a `retry_async` attempt see `_acquire_within_attempt`.
        """
        return await _acquire_within_attempt(self.reserve, self._sleep, self.name, max_wait)


# GCRA with reservation, atomically on one key (Redis Cluster safe: the only key is KEYS[1]).
# The clock is the Redis server's TIME so replicas with skewed clocks still share one timeline.
# TAT ("theoretical arrival time") is the moment the quota is next fully used; a caller may go
# at TAT - tau. The reservation advances TAT even when the caller must wait, so waiting callers
# get distinct, ordered slots. Values are integer microseconds, formatted with %.0f because
# Lua's default number formatting would round them.
_GCRA_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
if wait > max_wait then
  return {0, string.format('%.0f', wait)}
end
local new_tat = tat + interval
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, string.format('%.0f', wait)}
"""


class RedisRateLimiter:
    """A rate limit shared by every replica: `rate` calls per second, bursts of up to `burst`.

    The default `burst=1` spaces calls evenly (1/rate apart), which is what an API gateway spike
    arrest (as in front of PDS) enforces. Key: `{key_prefix}{name}` (one small string, expiring).

    When Redis fails the limiter falls back to an in-process limiter at `fallback_rate`
    (default `rate`, i.e. per replica) for `redis_retry_interval` seconds before trying Redis
    again, so a Redis outage neither blocks upstream calls nor adds a timeout to each of them.
    """

    def __init__(
        self,
        redis: Any,
        name: str,
        *,
        rate: float,
        burst: int = 1,
        key_prefix: str = "xcagw:ratelimit:",
        fallback_rate: float | None = None,
        redis_retry_interval: float = 5.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = name
        self.key = f"{key_prefix}{name}"
        self._params = _GcraParams(rate, burst)
        self._redis = redis
        self._script = redis.register_script(_GCRA_LUA)
        self._fallback = LocalRateLimiter(
            name, rate=fallback_rate or rate, burst=burst, clock=clock, sleep=sleep
        )
        self._redis_retry_interval = redis_retry_interval
        self._redis_down_until = -math.inf
        self._clock = clock
        self._sleep = sleep

    async def reserve(self, max_wait: float) -> float:
        """Reserve the next slot and return the seconds until it (0.0 = go now).

        Raises `RateLimitExceededError` (reserving nothing) when that would be more than
        `max_wait` seconds. A reserved slot is used up even if the caller then gives up.
        """
        if self._clock() < self._redis_down_until:
            return self._local(max_wait)
        p = self._params
        try:
            allowed, wait_us = await self._script(
                keys=[self.key],
                args=[p.interval_us, p.tolerance_us, max(0, int(max_wait * 1_000_000))],
            )
        except Exception as exc:  # noqa: BLE001 - any Redis failure: degrade, never block
            self._redis_down_until = self._clock() + self._redis_retry_interval
            log.warning(
                "rate limiter %s: Redis unavailable (%s), limiting in process for %.0fs",
                self.name,
                type(exc).__name__,
                self._redis_retry_interval,
            )
            return self._local(max_wait)
        wait = int(wait_us) / 1_000_000
        if not int(allowed):
            RATE_LIMITER_DECISIONS.labels(self.name, "rejected").inc()
            raise RateLimitExceededError(self.name, wait)
        RATE_LIMITER_DECISIONS.labels(self.name, "delayed" if wait > 0 else "immediate").inc()
        return wait

    def _local(self, max_wait: float) -> float:
        try:
            wait = self._fallback.reserve_now(max_wait)
        except RateLimitExceededError:
            RATE_LIMITER_DECISIONS.labels(self.name, "rejected").inc()
            raise
        RATE_LIMITER_DECISIONS.labels(self.name, "local").inc()
        return wait

    async def acquire(self, max_wait: float) -> float:
        """Wait for a slot (at most `max_wait` seconds); returns the seconds waited.

        Inside a `retry_async` attempt see `_acquire_within_attempt`.
        """
        return await _acquire_within_attempt(self.reserve, self._sleep, self.name, max_wait)
