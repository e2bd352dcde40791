"""Fault injection per API: latency, error rate, hangs, 429 bursts and malformed bodies."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ApiName = Literal["oauth", "pds", "sds", "gpconnect", "terminology"]
API_NAMES: tuple[ApiName, ...] = ("oauth", "pds", "sds", "gpconnect", "terminology")


class RouteFault(BaseModel):
    """What to do to the requests of one API. Rates are probabilities per request (0..1)."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(default=0, ge=0, description="Added latency (fixed, or the minimum).")
    latency_max_ms: float | None = Field(
        default=None,
        ge=0,
        description="When set, latency is uniform in [latency_ms, latency_max_ms].",
    )
    error_rate: float = Field(default=0, ge=0, le=1)
    error_status: int = Field(default=503, ge=400, le=599)
    timeout_rate: float = Field(default=0, ge=0, le=1, description="Requests that hang.")
    hang_seconds: float = Field(
        default=30, gt=0, le=3600, description="How long a hanging request waits before a 504."
    )
    burst_429: int = Field(default=0, ge=0, description="The next N requests get HTTP 429.")
    retry_after_seconds: int = Field(default=1, ge=0)
    malformed_rate: float = Field(
        default=0, ge=0, le=1, description="Responses whose body is cut in half (invalid JSON)."
    )


class FaultConfig(BaseModel):
    """Faults per API; an absent API behaves normally."""

    model_config = ConfigDict(extra="forbid")

    oauth: RouteFault | None = None
    pds: RouteFault | None = None
    sds: RouteFault | None = None
    gpconnect: RouteFault | None = None
    terminology: RouteFault | None = None

    @classmethod
    def from_file(cls, path: str) -> FaultConfig:
        """Read a JSON fault file (same document as `PUT /_admin/faults`)."""
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass
class Decision:
    """What the middleware does to one request."""

    delay: float = 0.0
    action: Literal["none", "error", "hang", "throttle", "malformed"] = "none"
    status: int = 0
    retry_after: int = 0
    hang_seconds: float = 0.0


class FaultInjector:
    """Holds the active configuration, the 429 burst counters and a seeded random source."""

    def __init__(self, seed: int) -> None:
        # Reproducible fault sequences, not security: S311 does not apply.
        self._rng = random.Random(f"faults:{seed}")  # nosec B311 # noqa: S311
        self.config = FaultConfig()
        self._bursts: dict[str, int] = {}

    def set(self, config: FaultConfig) -> None:
        """Replace the whole configuration (and restart every 429 burst)."""
        self.config = config
        self._bursts = {
            api: fault.burst_429
            for api in API_NAMES
            if (fault := getattr(config, api)) is not None and fault.burst_429
        }

    def clear(self) -> None:
        """Back to normal behaviour."""
        self.set(FaultConfig())

    def decide(self, api: ApiName) -> Decision:
        """Draw the fate of one request to `api`."""
        fault: RouteFault | None = getattr(self.config, api)
        if fault is None:
            return Decision()
        rng = self._rng
        delay = fault.latency_ms
        if fault.latency_max_ms is not None and fault.latency_max_ms > fault.latency_ms:
            delay = rng.uniform(fault.latency_ms, fault.latency_max_ms)
        decision = Decision(delay=delay / 1000.0)
        if self._bursts.get(api, 0) > 0:
            self._bursts[api] -= 1
            decision.action = "throttle"
            decision.status = 429
            decision.retry_after = fault.retry_after_seconds
        elif fault.timeout_rate and rng.random() < fault.timeout_rate:
            decision.action = "hang"
            decision.hang_seconds = fault.hang_seconds
        elif fault.error_rate and rng.random() < fault.error_rate:
            decision.action = "error"
            decision.status = fault.error_status
            decision.retry_after = fault.retry_after_seconds
        elif fault.malformed_rate and rng.random() < fault.malformed_rate:
            decision.action = "malformed"
        return decision
