"""Mutable sandbox state: tokens, seen jtis, statistics, rate limits, JWKS and record caches."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from jwcrypto import jwk
from starlette.requests import Request

from xcagw_devstack.sandbox.config import SandboxSettings
from xcagw_devstack.sandbox.faults import API_NAMES, FaultConfig, FaultInjector
from xcagw_devstack.sandbox.panel import PanelPatient
from xcagw_devstack.sandbox.synthetic import build_record

ACCESS_TOKEN_LIFETIME = 599
"""NHS API platform access tokens live 10 minutes; `expires_in` is "599" (a string)."""


class TokenStore:
    """Opaque access tokens and their expiry (epoch seconds)."""

    def __init__(self) -> None:
        self._tokens: dict[str, float] = {}

    def issue(self, lifetime: int = ACCESS_TOKEN_LIFETIME) -> str:
        now = time.time()
        self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        token = secrets.token_urlsafe(24)
        self._tokens[token] = now + lifetime
        return token

    def is_valid(self, token: str) -> bool:
        exp = self._tokens.get(token)
        return exp is not None and exp > time.time()

    def expire(self, token: str | None = None) -> int:
        """Expire one token, or all of them; returns how many were live."""
        now = time.time()
        targets = [token] if token else list(self._tokens)
        count = 0
        for t in targets:
            if t in self._tokens and self._tokens[t] > now:
                count += 1
                self._tokens[t] = now - 1
        return count


class JtiRegistry:
    """jti values already used, kept until their assertion has expired (reuse is refused)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def use(self, jti: str, exp: float) -> bool:
        """Record `jti`; False when it was seen before."""
        now = time.time()
        if len(self._seen) > 10_000:
            self._seen = {j: e for j, e in self._seen.items() if e > now - 60}
        if jti in self._seen:
            return False
        self._seen[jti] = exp
        return True


class RateLimiter:
    """A sliding one-second window, like the PDS spike arrest."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._hits: deque[float] = deque()

    def allow(self) -> bool:
        now = time.monotonic()
        while self._hits and now - self._hits[0] >= 1.0:
            self._hits.popleft()
        if len(self._hits) >= self.per_second:
            return False
        self._hits.append(now)
        return True


@dataclass
class Stats:
    """Requests per API and responses per API and status, for `GET /_admin/stats`."""

    requests: Counter[str] = field(default_factory=Counter)
    responses: dict[str, Counter[str]] = field(default_factory=dict)

    def reset(self) -> None:
        self.requests = Counter()
        self.responses = {}

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": {api: self.requests.get(api, 0) for api in API_NAMES},
            "responses": {
                api: dict(sorted(self.responses.get(api, Counter()).items())) for api in API_NAMES
            },
        }


class KeyRegistrationError(Exception):
    """The app has no usable public key registration (HTTP 403 `public_key error`)."""


class JwksSource:
    """The app's registered public keys: a JWKS file and/or a JWKS URL fetched at token time."""

    def __init__(self, file: str, url: str, cache_seconds: float) -> None:
        self.file = file
        self.url = url
        self.cache_seconds = cache_seconds
        self._file_cache: tuple[int, list[dict[str, Any]]] | None = None
        self._url_cache: tuple[float, list[dict[str, Any]]] | None = None

    @property
    def registered(self) -> bool:
        return bool(self.file or self.url)

    async def keys(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        """Every registered JWK (as dicts). Raises KeyRegistrationError."""
        if not self.registered:
            raise KeyRegistrationError(
                "You need to register a public key to use this authentication method "
                "- please contact support to configure"
            )
        found: list[dict[str, Any]] = []
        if self.file:
            found.extend(self._from_file())
        if self.url:
            found.extend(await self._from_url(refresh))
        return found

    def _from_file(self) -> list[dict[str, Any]]:
        path = Path(self.file)
        try:
            mtime = path.stat().st_mtime_ns
            if self._file_cache is None or self._file_cache[0] != mtime:
                self._file_cache = (mtime, _jwks_keys(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            raise KeyRegistrationError(
                "The JWKS endpoint, for your client_assertion can't be reached"
            ) from exc
        return self._file_cache[1]

    async def _from_url(self, refresh: bool) -> list[dict[str, Any]]:
        now = time.monotonic()
        cached = self._url_cache
        if cached is not None and not refresh and now - cached[0] < self.cache_seconds:
            return cached[1]
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                resp = await client.get(self.url, headers={"Accept": "application/json"})
            resp.raise_for_status()
            keys = _jwks_keys(resp.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise KeyRegistrationError(
                "The JWKS endpoint, for your client_assertion can't be reached"
            ) from exc
        self._url_cache = (now, keys)
        return keys


def _jwks_keys(doc: Any) -> list[dict[str, Any]]:
    """The keys of a `{"keys": [...]}` set. A bare JWK is not a JWKS and yields no keys."""
    if isinstance(doc, dict) and isinstance(doc.get("keys"), list):
        return [k for k in doc["keys"] if isinstance(k, dict)]
    return []


def find_key(keys: list[dict[str, Any]], kid: str) -> jwk.JWK | None:
    """The RSA key published under `kid`, as a jwcrypto JWK."""
    for k in keys:
        if k.get("kid") == kid and k.get("kty") == "RSA":
            try:
                return jwk.JWK(**k)
            except (ValueError, TypeError, jwk.InvalidJWKValue):
                return None
    return None


class RecordCache:
    """Full synthetic records per patient (built once; a huge record takes a while)."""

    def __init__(self, seed: int, capacity: int = 32) -> None:
        self.seed = seed
        self.capacity = capacity
        self._cache: OrderedDict[str, Any] = OrderedDict()
        # Records are built in worker threads (asyncio.to_thread).
        self._lock = threading.Lock()

    def get(self, patient: PanelPatient) -> Any:
        with self._lock:
            rec = self._cache.get(patient.nhs_number)
            if rec is None:
                rec = build_record(patient, seed=self.seed)
                self._cache[patient.nhs_number] = rec
                if len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(patient.nhs_number)
            return rec


class SandboxState:
    """Everything the sandbox remembers between requests."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.tokens = TokenStore()
        self.jtis = JtiRegistry()
        self.stats = Stats()
        self.faults = FaultInjector(settings.seed)
        self.pds_limiter = RateLimiter(settings.pds_rate_limit_per_second)
        self.jwks = JwksSource(settings.jwks_file, settings.jwks_url, settings.jwks_cache_seconds)
        self.records = RecordCache(settings.seed)
        if settings.faults_file:
            self.faults.set(FaultConfig.from_file(settings.faults_file))

    def base_url(self, request: Request) -> str:
        """The public base URL (`aud` checks, SDS endpoint addresses, search fullUrls)."""
        s = self.settings
        if s.public_url:
            return s.public_url.rstrip("/")
        if s.port:
            return f"http://{s.host}:{s.port}"
        return str(request.base_url).rstrip("/")


def get_state(request: Request) -> SandboxState:
    """The state of the app serving `request`."""
    state: SandboxState = request.app.state.sandbox
    return state
