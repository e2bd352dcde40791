"""Single-flight: concurrent callers asking for the same key share one upstream call.

Used where NHS quotas make duplicate calls expensive (pds-adapter's patient read: 5 TPS per
application; gpconnect-adapter's SDS lookup). The shared call runs under the service's own
deadline, never a caller's: a caller with 0.1 s left must not cut short the call that another
caller, with 30 s left, waits for. Each caller waits only as long as its own deadline allows,
and neither its timeout nor its cancellation (the gRPC client went away) cancels the shared call:
the others still get its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """`await flight.join(key, start, within)` -> (value, shared); one call per key at a time."""

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    async def join(
        self, key: K, start: Callable[[], Awaitable[V]], within: float | None
    ) -> tuple[V, bool]:
        """The shared call's value and whether this caller joined one already running.

        `start()` is called only when no call for `key` is in flight. Raises TimeoutError when
        `within` seconds pass first (the shared call carries on), or the shared call's error.
        """
        task = self._inflight.get(key)
        shared = task is not None
        if task is None:
            task = asyncio.ensure_future(start())
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        # asyncio.wait cancels nothing, neither on timeout nor when this caller is cancelled.
        done, _ = await asyncio.wait((task,), timeout=within)
        if not done:
            raise TimeoutError
        return task.result(), shared

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            # Retrieved here too: every waiter may have gone, and an unretrieved exception would
            # be logged by asyncio as a spurious "never retrieved" error.
            task.exception()
