"""Per-partner and per-transaction rate limits, shared by every replica through Redis.

GCRA (ITU-T I.371, the algorithm of `xcagw_common.resilience.RedisRateLimiter`), but over two
keys in one Lua script: the partner-wide limit and the partner's limit for this transaction are
checked together and consumed only if *both* allow the request, so a refused request never uses
up the other quota. Both keys share the Redis Cluster hash tag `{<partner id>}`, so the script is
cluster safe. The clock is Redis `TIME`, so replicas with skewed clocks share one timeline.

A partner over its limit is refused at once (no queueing inside the gateway: the partner's own
client decides when to retry) with a `RateLimited` error that carries the wait until the next
slot; soap-edge turns it into a SOAP fault with HTTP 429 and Retry-After.

When Redis fails, each replica limits in process at the same rates for `redis_retry_interval`
seconds (so the effective limit is per replica then) rather than blocking or failing requests.

Keys (documented with the other Redis keys of soap-edge):
  `xcagw:soap-edge:ratelimit:{<partner>}:all`            partner-wide TAT (string, expiring)
  `xcagw:soap-edge:ratelimit:{<partner>}:<transaction>`  per-transaction TAT (string, expiring)
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from soap_edge.security.errors import RateLimited
from soap_edge.security.partners import Partner, RateLimit

log = logging.getLogger(__name__)

KEY_PREFIX = "xcagw:soap-edge:ratelimit:"

PARTNER_REQUESTS = Counter(
    "xcagw_partner_requests_total",
    "Requests per partner and IHE transaction after the rate limit: allowed or rate_limited.",
    ["partner", "transaction", "result"],
)
RATE_LIMIT_FALLBACK = Counter(
    "xcagw_partner_rate_limit_fallback_total",
    "Rate-limit decisions taken in process because Redis was unavailable.",
)

# KEYS: the limit keys; ARGV: max_wait_us, then (interval_us, tolerance_us) per key.
# Returns {1, wait_us} when every key allows the request within max_wait (all TATs advanced;
# the caller waits wait_us first), else {0, wait_us} with the longest wait and nothing changed.
_GCRA_MULTI_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local max_wait = tonumber(ARGV[1])
local worst = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i])
  local tolerance = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  if tat < now then tat = now end
  local wait = tat - tolerance - now
  if wait > worst then worst = wait end
  tats[i] = tat + interval
end
if worst > max_wait then
  return {0, string.format('%.0f', worst)}
end
for i, key in ipairs(KEYS) do
  local ttl_ms = math.ceil((tats[i] - now) / 1000) + 1000
  redis.call('SET', key, string.format('%.0f', tats[i]), 'PX', ttl_ms)
end
return {1, string.format('%.0f', worst)}
"""


@dataclass(frozen=True)
class _Limit:
    key: str
    interval_us: int
    tolerance_us: int

    @classmethod
    def of(cls, key: str, limit: RateLimit) -> _Limit:
        interval = max(1, round(1_000_000 / limit.per_second))
        return cls(key, interval, interval * (limit.burst - 1))


class _LocalGcra:
    """The same multi-key GCRA in process (Redis outage fallback)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}

    def check(self, limits: list[_Limit], max_wait_us: float) -> tuple[bool, float]:
        now = self._clock() * 1_000_000
        worst = 0.0
        new: dict[str, float] = {}
        for limit in limits:
            tat = max(self._tat.get(limit.key, 0.0), now)
            worst = max(worst, tat - limit.tolerance_us - now)
            new[limit.key] = tat + limit.interval_us
        if worst > max_wait_us:
            return False, worst
        self._tat.update(new)
        if len(self._tat) > 10_000:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        return True, max(0.0, worst)


class PartnerRateLimiter:
    """`check(partner, transaction)` raises RateLimited when the partner is over its limit."""

    def __init__(
        self,
        redis: Any,
        *,
        default_limit: RateLimit | None = None,
        max_wait: float = 0.0,
        redis_retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_GCRA_MULTI_LUA) if redis is not None else None
        self.default_limit = default_limit
        self.max_wait = max_wait
        self._retry_interval = redis_retry_interval
        self._down_until = -math.inf
        self._clock = clock
        self._sleep = sleep
        self._local = _LocalGcra(clock)

    def limits_for(self, partner: Partner, transaction: str) -> list[_Limit]:
        tag = f"{KEY_PREFIX}{{{partner.id}}}"
        limits: list[_Limit] = []
        whole = partner.config.rate_limit or self.default_limit
        if whole is not None:
            limits.append(_Limit.of(f"{tag}:all", whole))
        per_txn = partner.config.transaction_rate_limits.get(transaction)
        if per_txn is not None:
            limits.append(_Limit.of(f"{tag}:{transaction}", per_txn))
        return limits

    async def check(self, partner: Partner, transaction: str) -> None:
        limits = self.limits_for(partner, transaction)
        if not limits:
            PARTNER_REQUESTS.labels(partner.id, transaction, "allowed").inc()
            return
        max_wait_us = max(0, int(self.max_wait * 1_000_000))
        allowed, wait_us = await self._decide(limits, max_wait_us)
        if not allowed:
            PARTNER_REQUESTS.labels(partner.id, transaction, "rate_limited").inc()
            raise RateLimited(f"{partner.id}/{transaction}", wait_us / 1_000_000)
        PARTNER_REQUESTS.labels(partner.id, transaction, "allowed").inc()
        if wait_us > 0:
            await self._sleep(wait_us / 1_000_000)

    async def _decide(self, limits: list[_Limit], max_wait_us: int) -> tuple[bool, float]:
        if self._script is None or self._clock() < self._down_until:
            RATE_LIMIT_FALLBACK.inc()
            return self._local.check(limits, max_wait_us)
        args: list[int] = [max_wait_us]
        for limit in limits:
            args += [limit.interval_us, limit.tolerance_us]
        try:
            allowed, wait_us = await self._script(keys=[lim.key for lim in limits], args=args)
        except Exception as exc:  # noqa: BLE001 - any Redis failure: degrade, never block
            self._down_until = self._clock() + self._retry_interval
            log.warning(
                "partner rate limit: Redis unavailable (%s), limiting in process for %.0fs",
                type(exc).__name__,
                self._retry_interval,
            )
            RATE_LIMIT_FALLBACK.inc()
            return self._local.check(limits, max_wait_us)
        return bool(int(allowed)), float(int(wait_us))
