"""A small in-process cache with a time to live and a size bound (entries and bytes).

Used for data that may be served slightly stale by design (see where it is used: documents,
which are immutable per uniqueId, and the PDS restriction check). Not thread-safe: one event loop
owns each instance. Entries expire on read; the least recently used go first when full.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def _one(_value: object) -> int:
    return 1


class TtlCache(Generic[K, V]):
    """`get`/`put` with expiry after `ttl` seconds; `ttl <= 0` disables the cache."""

    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = 10_000,
        max_cost: int | None = None,
        cost: Callable[[V], int] = _one,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_cost = max_cost
        self._cost = cost
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V, int]] = OrderedDict()
        self._total = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value, _ = item
        if expires <= self._clock():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        weight = self._cost(value)
        if self.max_cost is not None and weight > self.max_cost:
            return
        self._drop(key)
        self._items[key] = (self._clock() + self.ttl, value, weight)
        self._total += weight
        while len(self._items) > self.max_entries or (
            self.max_cost is not None and self._total > self.max_cost
        ):
            self._drop(next(iter(self._items)))

    def discard(self, key: K) -> None:
        self._drop(key)

    def clear(self) -> None:
        self._items.clear()
        self._total = 0

    def _drop(self, key: K) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._total -= item[2]
