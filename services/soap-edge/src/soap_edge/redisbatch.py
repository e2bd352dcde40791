"""Automatic pipelining: small Redis commands of concurrent requests share one round trip.

Each command on the cached-query path costs far more in redis-py (and its OpenTelemetry span)
and in the send/receive system calls than in Redis itself (benchmarks/PROFILE.md). `AutoPipeline`
queues the commands issued while a batch is in flight and sends them together as one
non-transactional pipeline when it returns (group commit, as ioredis' auto-pipelining does).
Under no concurrency a command goes out alone, one event-loop turn later.

Semantics are those of the single commands: every caller awaits its own reply, so a write is
acknowledged by Redis before the caller goes on (nothing acknowledged to a partner can be lost);
a command error (e.g. WRONGTYPE) fails that caller only, a connection error every caller of the
batch (as each of their commands would have failed). The pipeline is not MULTI/EXEC, so in a
Redis Cluster the client splits it per node (no cross-slot restriction). The batch's Redis span
belongs to the trace of the request that opened it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from xcagw_common.redis import RedisClient

Command = tuple[Any, ...]


class AutoPipeline:
    """`await execute(*command)` / `await execute_many(commands)` through shared pipelines."""

    def __init__(self, redis: RedisClient, *, max_batch: int = 256) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._pending: list[tuple[Command, asyncio.Future[Any]]] = []
        self._busy = False

    async def execute(self, *command: Any) -> Any:
        return (await self.execute_many([command]))[0]

    async def execute_many(self, commands: list[Command]) -> list[Any]:
        loop = asyncio.get_running_loop()
        futures = []
        for command in commands:
            future: asyncio.Future[Any] = loop.create_future()
            self._pending.append((command, future))
            futures.append(future)
        if not self._busy:
            self._busy = True
            # One loop turn: the other requests woken in this turn add their commands first.
            loop.call_soon(self._next_batch)
        replies = await asyncio.gather(*futures, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return list(replies)

    def _next_batch(self) -> None:
        if not self._pending:
            self._busy = False
            return
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        task = asyncio.get_running_loop().create_task(self._run(batch))
        task.add_done_callback(lambda _: self._next_batch())

    async def _run(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        live = [(command, future) for command, future in batch if not future.done()]
        if not live:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for command, _ in live:
                    pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # noqa: BLE001 - handed to every caller, then re-raised
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(live, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
