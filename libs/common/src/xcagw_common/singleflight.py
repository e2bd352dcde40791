"""Single-flight: concurrent callers asking for the same key share one upstream call.

Used where NHS quotas make duplicate calls expensive (pds-adapter's patient read: 5 TPS per
application; gpconnect-adapter's SDS lookup). The shared call runs under the service's own
deadline, never a caller's: a caller with 0.1 s left must not cut short the call that another
caller, with 30 s left, waits for. Each caller waits only as long as its own deadline allows,
and neither its timeout nor its cancellation (the gRPC client went away) cancels the shared call
while another caller still waits for it. When the last caller has gone, the call is cancelled:
an answer nobody reads must not go on spending the upstream's quota (retries included).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Flight(Generic[V]):
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[V]) -> None:
        self.task = task
        self.waiters = 0


class SingleFlight(Generic[K, V]):
    """`await flight.join(key, start, within)` -> (value, shared); one call per key at a time."""

    def __init__(self) -> None:
        self._inflight: dict[K, _Flight[V]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    async def join(
        self, key: K, start: Callable[[], Awaitable[V]], within: float | None
    ) -> tuple[V, bool]:
        """The shared call's value and whether this caller joined one already running.

        `start()` is called only when no call for `key` is in flight. Raises TimeoutError when
        `within` seconds pass first, or the shared call's error.
        """
        flight = self._inflight.get(key)
        shared = flight is not None
        if flight is None:
            flight = _Flight(asyncio.ensure_future(start()))
            self._inflight[key] = flight
            flight.task.add_done_callback(lambda done: self._finished(key, done))
        flight.waiters += 1
        try:
            # asyncio.wait itself cancels nothing, on timeout or when this caller is cancelled.
            done, _ = await asyncio.wait((flight.task,), timeout=within)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()
        if not done:
            raise TimeoutError
        return flight.task.result(), shared

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        current = self._inflight.get(key)
        if current is not None and current.task is task:
            del self._inflight[key]
        if not task.cancelled():
            # Retrieved here too: every waiter may have gone, and an unretrieved exception would
            # be logged by asyncio as a spurious "never retrieved" error.
            task.exception()
