"""Signing keys and their automated rotation, agreed by every replica through Redis.

Where the keys live
-------------------
Private keys are PEM files `<kid>.pem` in `keys_dir`, which every replica mounts. They never go
to Redis, logs, metrics or RPC answers. Two deployments are supported:

1. **Writable shared directory** (a ReadWriteMany volume; in development a local directory):
   the rotator generates the next RSA key (cryptography) and writes it there (mode 0600, atomic).
2. **Read-only Kubernetes Secret mount** (the kubelet mounts Secrets read-only; detected, or
   forced with `generate_next_key=false`): the rotator cannot write, so rotation *picks up* the
   next key instead. Operators, or an external secret manager, add `<new-kid>.pem` to the Secret
   ahead of time; the kubelet updates the mount on every node; the next scheduled (or
   `RotateKeys`) rotation promotes the newest PEM that was never used. With no such file the
   rotation fails with FAILED_PRECONDITION (NO_NEXT_KEY) and signing carries on with the current
   key; retired PEMs stay in the Secret until operators remove them (they are never reused).

In both cases a rotation picks up an unused PEM first, so operators can also choose the next key
of a writable directory.

Either way the key material has one home (the directory) and Redis only coordinates.

Rotation state
--------------
One JSON document in Redis lists, per kid, its *public* JWK and three instants: `published_at`,
`active_from` and `retire_at`. Each replica derives the same view from (state, now):

- published (in the JWKS): `published_at <= now < retire_at`;
- signing: the published key with the latest `active_from <= now`;
- pending: published but `active_from > now` (announced, not yet signing).

A rotation started at t0 (overlap O = rotation_overlap_seconds, lifetime L =
assertion_lifetime_seconds, grace G = key_retire_grace_seconds) therefore means, on every replica
and with no further writes (nhs-apis.md §2.4, standard JWKS practice):

- t0: the next key appears in the JWKS, but signs nothing yet;
- t0 + O: the next key signs; the old key stops signing (O >= the JWKS max-age, so verifiers
  holding a cached JWKS already know the new kid);
- t0 + O + L + G: the old key leaves the JWKS; its last assertion expired at t0 + O + L at most.

Writers (bootstrap, rotation, removal of retired keys) hold a Redis lock, so a single replica
rotates at a time; the schedule runs on every replica, and whichever gets the lock does the work.
Clocks must be NTP-synchronised, as the NHS already requires for `exp` (nhs-apis.md §7).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jwcrypto import jwt
from redis.exceptions import RedisError

from token_service.config import Settings, app_namespace
from token_service.keys import (
    SIGNING_ALG,
    SigningKey,
    delete_key_file,
    directory_writable,
    generate_key_file,
    jwks_document,
    scan_keys_dir,
)
from token_service.metrics import KEY_ROTATIONS, KEYS_RETIRED, SIGNING_KEY_ACTIVATED, TOKENS_MINTED
from token_service.redis_lock import RedisLock

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# Generating an RSA-4096 key can take seconds on a busy node: keep the lock well beyond that.
LOCK_TTL_SECONDS = 120.0
MANUAL_LOCK_WAIT_SECONDS = 30.0
STARTUP_LOCK_WAIT_SECONDS = 60.0
RETIRED_KIDS_KEPT = 100
BOOTSTRAP_RETRY_SECONDS = 2.0


class KeyManagementError(Exception):
    """Base of key-management failures; messages never hold key material."""


class NoSigningKeyError(KeyManagementError):
    """No key may sign right now (none configured, or its PEM is missing on this replica)."""


class NoNextKeyError(KeyManagementError):
    """Rotation needs a new key but keys_dir is read-only and holds no unused PEM."""


class RotationBusyError(KeyManagementError):
    """Another replica held the rotation lock for too long."""


class StateUnavailableError(KeyManagementError):
    """Redis is unreachable and this replica has no earlier view of the keys."""


class StateCorruptError(KeyManagementError):
    """The shared key state in Redis cannot be read (not the JSON this service writes).

    Nothing rotates or signs from it, and nothing overwrites it: an operator restores it (from a
    replica's log of kids, or by deleting it to bootstrap afresh), because a rewrite could drop
    a published key that NHS still uses to verify our assertions."""


@dataclass
class KeyRecord:
    """One key in the shared state (public material only)."""

    kid: str
    public_jwk: dict[str, str]
    published_at: float
    active_from: float
    retire_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "public_jwk": self.public_jwk,
            "published_at": self.published_at,
            "active_from": self.active_from,
            "retire_at": self.retire_at,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> KeyRecord:
        retire = doc.get("retire_at")
        return cls(
            kid=str(doc["kid"]),
            public_jwk={str(k): str(v) for k, v in dict(doc["public_jwk"]).items()},
            published_at=float(doc["published_at"]),
            active_from=float(doc["active_from"]),
            retire_at=None if retire is None else float(retire),
        )

    def published(self, now: float) -> bool:
        return self.published_at <= now and (self.retire_at is None or now < self.retire_at)


@dataclass(frozen=True)
class KeyView:
    """What every replica sees at one instant."""

    active: KeyRecord | None
    pending: KeyRecord | None
    published: list[KeyRecord]

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        return jwks_document(rec.public_jwk for rec in self.published)

    @property
    def published_kids(self) -> list[str]:
        return [rec.kid for rec in self.published]


@dataclass
class KeyState:
    """The shared rotation state (one JSON document in Redis)."""

    keys: list[KeyRecord] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    last_rotation_at: float = 0.0

    def view(self, now: float) -> KeyView:
        live = [rec for rec in self.keys if rec.published(now)]
        signing = [rec for rec in live if rec.active_from <= now]
        active = max(signing, key=lambda rec: rec.active_from, default=None)
        waiting = [rec for rec in live if rec.active_from > now]
        pending = min(waiting, key=lambda rec: rec.active_from, default=None)
        ordered = sorted(
            live, key=lambda rec: (rec is not active, rec is not pending, -rec.active_from)
        )
        return KeyView(active=active, pending=pending, published=ordered)

    def known_kids(self) -> set[str]:
        return {rec.kid for rec in self.keys} | set(self.retired)

    def to_json(self) -> str:
        return json.dumps(
            {
                "keys": [rec.to_dict() for rec in self.keys],
                "retired": self.retired,
                "last_rotation_at": self.last_rotation_at,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> KeyState:
        doc = json.loads(raw)
        return cls(
            keys=[KeyRecord.from_dict(item) for item in doc.get("keys", [])],
            retired=[str(kid) for kid in doc.get("retired", [])],
            last_rotation_at=float(doc.get("last_rotation_at", 0.0)),
        )


def _read_state(raw: str | bytes) -> KeyState:
    try:
        return KeyState.from_json(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # json.JSONDecodeError is a ValueError; the others are a document of the wrong shape.
        log.error("key state in Redis is unreadable: %s", type(exc).__name__)
        raise StateCorruptError("key state in Redis is unreadable") from None


@dataclass(frozen=True)
class RotationResult:
    new_kid: str
    previous_kid: str
    published_kids: list[str]
    started: bool


class KeyManager:
    """Loads keys, signs client assertions, publishes the JWKS and rotates keys."""

    def __init__(
        self, settings: Settings, redis: Any, keys_dir: Path, clock: Clock = time.time
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.keys_dir = keys_dir
        self.clock = clock
        # The JWKS belongs to one NHS application: its state is kept per application.
        self.state_key = f"{app_namespace(settings)}:keys:state"
        self._lock = RedisLock(redis, f"{app_namespace(settings)}:keys:lock", LOCK_TTL_SECONDS)
        self._private: dict[str, SigningKey] = {}
        self._snapshot: KeyState | None = None
        self._reload_lock = asyncio.Lock()

    # --- shared state ---------------------------------------------------------------------------

    async def _load_state(self) -> KeyState | None:
        raw = await self.redis.get(self.state_key)
        if raw is None and self._snapshot is not None:
            # Redis lost the state (restart without persistence): put back this replica's last
            # view unless another replica already did, so every replica keeps the same keys.
            await self.redis.set(self.state_key, self._snapshot.to_json(), nx=True)
            raw = await self.redis.get(self.state_key)
            log.warning("key state missing in Redis: restored from the last known view")
        state = None if raw is None else _read_state(raw)
        if state is not None:
            self._snapshot = state
        return state

    async def _save_state(self, state: KeyState) -> None:
        await self.redis.set(self.state_key, state.to_json())
        self._snapshot = state

    async def view(self) -> KeyView:
        """The current view; falls back to the last one seen while Redis is unreachable."""
        try:
            state = await self._load_state()
        except RedisError as exc:
            if self._snapshot is None:
                raise StateUnavailableError("key state unavailable (Redis)") from exc
            log.warning("redis unavailable: serving the last known key state")
            state = self._snapshot
        if state is None:
            return KeyView(active=None, pending=None, published=[])
        view = state.view(self.clock())
        if view.active is not None:
            SIGNING_KEY_ACTIVATED.set(view.active.active_from)
        return view

    # --- private keys on this replica -------------------------------------------------------------

    async def _reload(self) -> dict[str, SigningKey]:
        async with self._reload_lock:
            found = await asyncio.to_thread(scan_keys_dir, self.keys_dir)
            self._private.update(found)
            return found

    async def private_key(self, kid: str) -> SigningKey:
        """The private key of `kid`, re-reading keys_dir when another replica just added it."""
        key = self._private.get(kid)
        if key is None:
            await self._reload()
            key = self._private.get(kid)
        if key is None:
            raise NoSigningKeyError(f"the private key of kid {kid!r} is not in keys_dir")
        return key

    async def check_ready(self) -> None:
        """Readiness: a signing key is known and its private key is loaded here."""
        view = await self.view()
        if view.active is None:
            raise NoSigningKeyError("no signing key")
        await self.private_key(view.active.kid)

    # --- signing ------------------------------------------------------------------------------

    async def sign(self, claims: dict[str, Any]) -> tuple[str, str]:
        """Sign claims as a compact RS512 JWS with the current key; returns (kid, token)."""
        view = await self.view()
        if view.active is None:
            raise NoSigningKeyError("no signing key")
        key = await self.private_key(view.active.kid)
        # nhs-apis.md §2.2: header {"alg":"RS512","typ":"JWT","kid":...}.
        header = {"alg": SIGNING_ALG, "typ": "JWT", "kid": key.kid}
        token = jwt.JWT(header=header, claims=claims)
        token.make_signed_token(key.key)
        TOKENS_MINTED.labels("nhs_client_assertion").inc()
        return key.kid, str(token.serialize())

    # --- writers (under the Redis lock) -------------------------------------------------------

    async def _new_key(self, state: KeyState, may_generate: bool) -> SigningKey:
        """Pick up an unused PEM from keys_dir, else generate one when allowed and writable."""
        found = await self._reload()
        known = state.known_kids()
        unused = [key for kid, key in found.items() if kid not in known]
        if unused:
            return max(unused, key=lambda key: (key.mtime, key.kid))
        if not may_generate or not await asyncio.to_thread(directory_writable, self.keys_dir):
            raise NoNextKeyError("keys_dir holds no unused key and may not be written")
        key = await asyncio.to_thread(generate_key_file, self.keys_dir, self.settings.key_bits)
        self._private[key.kid] = key
        log.info("generated signing key", extra={"ecs": {"labels.kid": key.kid}})
        return key

    async def _bootstrap_locked(self, state: KeyState | None, now: float) -> KeyState | None:
        """Make sure a signing key exists; returns the (possibly new) state to keep."""
        if state is not None:
            active = state.view(now).active
            if active is not None:
                if active.kid in self._private or active.kid in await self._reload():
                    return state
                if not self.settings.auto_generate_key:
                    log.error(
                        "signing key missing from keys_dir",
                        extra={"ecs": {"labels.kid": active.kid}},
                    )
                    return state
                # Development only (auto_generate_key): keys_dir was wiped while Redis kept the
                # state, so no replica can sign with the old key. Start over with a local key.
                log.warning("signing key missing; starting a new key state (development)")
            state = KeyState(retired=sorted(state.known_kids())[-RETIRED_KIDS_KEPT:])
        else:
            state = KeyState()
        found = await self._reload()
        usable = [key for kid, key in found.items() if kid not in state.retired]
        configured = self.settings.initial_kid
        if configured and configured in found and configured not in state.retired:
            key = found[configured]
        elif usable:
            # The oldest key: a key staged for the next rotation is normally the newer one.
            key = min(usable, key=lambda key: (key.mtime, key.kid))
        elif self.settings.auto_generate_key:
            key = await self._new_key(state, may_generate=True)
        else:
            log.error("no signing key in keys_dir")
            return None
        # The very first key signs at once: nothing has been signed before it.
        state.keys.append(
            KeyRecord(kid=key.kid, public_jwk=key.public_jwk(), published_at=now, active_from=now)
        )
        state.last_rotation_at = now
        await self._save_state(state)
        log.info("signing key initialised", extra={"ecs": {"labels.kid": key.kid}})
        return state

    async def _prune_locked(self, state: KeyState, now: float) -> bool:
        """Forget keys whose retire time passed (they already left every replica's JWKS)."""
        gone = [rec for rec in state.keys if rec.retire_at is not None and now >= rec.retire_at]
        if not gone:
            return False
        writable = await asyncio.to_thread(directory_writable, self.keys_dir)
        for rec in gone:
            state.keys.remove(rec)
            state.retired.append(rec.kid)
            self._private.pop(rec.kid, None)
            if writable:
                await asyncio.to_thread(delete_key_file, self.keys_dir, rec.kid)
            KEYS_RETIRED.inc()
            log.info("signing key retired", extra={"ecs": {"labels.kid": rec.kid}})
        state.retired = state.retired[-RETIRED_KIDS_KEPT:]
        return True

    async def _rotate_locked(self, state: KeyState, now: float, trigger: str) -> RotationResult:
        view = state.view(now)
        previous = view.active.kid if view.active is not None else ""
        if view.pending is not None:
            # A rotation is already under way: asking again does not skip the overlap window.
            return RotationResult(view.pending.kid, previous, view.published_kids, started=False)
        key = await self._new_key(state, may_generate=self.settings.generate_next_key)
        overlap = self.settings.rotation_overlap_seconds
        state.keys.append(
            KeyRecord(
                kid=key.kid,
                public_jwk=key.public_jwk(),
                published_at=now,
                active_from=now + overlap,
            )
        )
        if view.active is not None:
            view.active.retire_at = now + overlap + self.settings.key_retire_after_seconds
        state.last_rotation_at = now
        await self._save_state(state)
        KEY_ROTATIONS.labels(trigger).inc()
        log.info(
            "signing key rotation started",
            extra={
                "ecs": {
                    "labels.kid": key.kid,
                    "labels.previous_kid": previous,
                    "labels.trigger": trigger,
                    "labels.signs_from": now + overlap,
                }
            },
        )
        return RotationResult(key.kid, previous, state.view(now).published_kids, started=True)

    # --- entry points ---------------------------------------------------------------------------

    async def tick(self, wait_seconds: float = 0.0) -> None:
        """One pass of the schedule: bootstrap, drop retired keys, rotate when due."""
        if wait_seconds > 0:
            token = await self._lock.acquire(wait_seconds)
        else:
            token = await self._lock.try_acquire()
        if token is None:
            await self._preload()
            return
        try:
            now = self.clock()
            state = await self._bootstrap_locked(await self._load_state(), now)
            if state is not None:
                if await self._prune_locked(state, now):
                    await self._save_state(state)
                interval = self.settings.rotation_interval_seconds
                view = state.view(now)
                if (
                    interval > 0
                    and view.active is not None
                    and view.pending is None
                    and now >= state.last_rotation_at + interval
                ):
                    await self._rotate_locked(state, now, "scheduled")
        finally:
            await self._lock.release(token)
        await self._preload()

    async def rotate(self, trigger: str = "manual") -> RotationResult:
        """Start a rotation now (RotateKeys)."""
        token = await self._lock.acquire(MANUAL_LOCK_WAIT_SECONDS)
        if token is None:
            raise RotationBusyError("another replica is rotating keys")
        try:
            now = self.clock()
            state = await self._bootstrap_locked(await self._load_state(), now)
            if state is None or state.view(now).active is None:
                raise NoSigningKeyError("no signing key")
            if await self._prune_locked(state, now):
                await self._save_state(state)
            result = await self._rotate_locked(state, now, trigger)
        finally:
            await self._lock.release(token)
        await self._preload()
        return result

    async def _preload(self) -> None:
        """Load the active and pending private keys before they are needed."""
        with contextlib.suppress(KeyManagementError, RedisError):
            view = await self.view()
            for rec in (view.active, view.pending):
                if rec is not None and rec.kid not in self._private:
                    with contextlib.suppress(NoSigningKeyError):
                        await self.private_key(rec.kid)

    async def run_schedule(self, stop: asyncio.Event) -> None:
        """Every replica runs this; the Redis lock elects the one that writes."""
        while not stop.is_set():
            pause = self.settings.rotation_check_seconds
            if self._snapshot is None or self._snapshot.view(self.clock()).active is None:
                # Not bootstrapped yet (Redis was down at start): retry soon.
                pause = min(pause, BOOTSTRAP_RETRY_SECONDS)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)
            if stop.is_set():
                return
            try:
                await self.tick()
            except (RedisError, KeyManagementError, OSError) as exc:
                log.warning("key rotation schedule failed: %s", type(exc).__name__)
