"""A minimal Redis lock shared by every replica (SET NX PX + compare-and-delete)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

# Delete the lock only while we still own it: after our TTL expired another replica may hold it.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class RedisLock:
    """Owner-checked lock; `acquire` returns the owner token or None."""

    def __init__(self, redis: Any, name: str, ttl_seconds: float) -> None:
        self.redis = redis
        self.name = name
        self.ttl_ms = max(1, int(ttl_seconds * 1000))

    async def try_acquire(self, token: str | None = None) -> str | None:
        token = token or uuid.uuid4().hex
        ok = await self.redis.set(self.name, token, nx=True, px=self.ttl_ms)
        return token if ok else None

    async def acquire(self, wait_seconds: float, poll_seconds: float = 0.05) -> str | None:
        """Retry until `wait_seconds` have passed; None when someone else kept it."""
        deadline = time.monotonic() + wait_seconds
        while True:
            token = await self.try_acquire()
            if token is not None or time.monotonic() >= deadline:
                return token
            await asyncio.sleep(poll_seconds)

    async def holder(self) -> str | None:
        value = await self.redis.get(self.name)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def release(self, token: str) -> None:
        await self.redis.eval(_RELEASE, 1, self.name, token)
