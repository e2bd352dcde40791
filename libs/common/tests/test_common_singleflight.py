"""SingleFlight: one call per key, each caller bounded by its own wait, nothing cancelled."""

from __future__ import annotations

import asyncio
import gc

import pytest

from xcagw_common.singleflight import SingleFlight


class Upstream:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def fetch(self, value: str) -> str:
        self.calls += 1
        await self.release.wait()
        return value


async def test_concurrent_callers_share_one_call() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    upstream = Upstream()
    callers = [
        asyncio.create_task(flight.join("k", lambda: upstream.fetch("v"), 5)) for _ in range(10)
    ]
    await asyncio.sleep(0)
    upstream.release.set()
    results = await asyncio.gather(*callers)
    assert upstream.calls == 1
    assert [value for value, _ in results] == ["v"] * 10
    assert sorted(shared for _, shared in results) == [False] + [True] * 9
    assert len(flight) == 0


async def test_a_caller_out_of_time_does_not_cut_the_call_short_for_others() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    upstream = Upstream()
    short = asyncio.create_task(flight.join("k", lambda: upstream.fetch("v"), 0.05))
    long = asyncio.create_task(flight.join("k", lambda: upstream.fetch("other"), 5))
    with pytest.raises(TimeoutError):
        await short
    upstream.release.set()
    assert await long == ("v", True)
    assert upstream.calls == 1


async def test_a_cancelled_caller_does_not_cancel_the_call() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    upstream = Upstream()
    first = asyncio.create_task(flight.join("k", lambda: upstream.fetch("v"), 5))
    second = asyncio.create_task(flight.join("k", lambda: upstream.fetch("v"), 5))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    upstream.release.set()
    assert await second == ("v", True)


async def test_the_call_is_cancelled_when_its_last_caller_has_gone() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow() -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    with pytest.raises(TimeoutError):
        await flight.join("k", slow, 0.05)
    await asyncio.wait_for(cancelled.wait(), 5)
    assert started.is_set()
    await asyncio.sleep(0)
    assert len(flight) == 0

    async def fresh() -> str:
        return "fresh"

    assert await flight.join("k", fresh, 5) == ("fresh", False)


async def test_a_failure_reaches_every_caller_and_the_next_call_starts_afresh() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    attempts = 0

    async def failing() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("upstream down")

    callers = [asyncio.create_task(flight.join("k", failing, 5)) for _ in range(3)]
    for caller in callers:
        with pytest.raises(RuntimeError, match="upstream down"):
            await caller
    assert attempts == 1

    async def working() -> str:
        return "back"

    assert await flight.join("k", working, 5) == ("back", False)


async def test_an_abandoned_failure_is_not_reported_as_never_retrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flight: SingleFlight[str, str] = SingleFlight()

    async def failing() -> str:
        await asyncio.sleep(0.02)
        raise RuntimeError("nobody waits")

    with pytest.raises(TimeoutError):
        await flight.join("k", failing, 0.001)
    await asyncio.sleep(0.05)
    assert len(flight) == 0
    # asyncio reports an unretrieved task exception when the task is collected.
    gc.collect()
    assert "never retrieved" not in caplog.text
