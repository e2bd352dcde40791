"""An unexpected failure inside an RPC is INTERNAL "internal error", never UNKNOWN with its text.

Reached for real: the service runs on a socket against a real redis-server, and the shared key
state (`<app>:keys:state`) is overwritten with documents `KeyState.from_json` cannot read, as a
bad manual edit or a foreign writer would leave it. GetJwks reads the state directly,
GetNhsAccessToken through signing the client assertion, RotateKeys under the rotation lock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest
import redis
from prometheus_client import REGISTRY

from token_service.config import app_namespace
from token_service.rotation import KeyManagementError, StateCorruptError
from xcagw.common.v1 import common_pb2
from xcagw.token.v1 import token_service_pb2
from xcagw_common.errors import error_reason
from xcagw_common.grpc_client import check_health

# Text that only the corrupt document holds: it must reach neither the caller nor be needed to
# understand the answer.
MARKER = "corrupt-marker-7f3a"

CORRUPT_STATES = {
    # KeyRecord.from_dict -> KeyError('public_jwk')
    "record-missing-fields": json.dumps({"keys": [{"kid": MARKER}]}),
    # float('corrupt-marker-7f3a') -> ValueError quoting the value
    "record-bad-number": json.dumps(
        {
            "keys": [
                {"kid": "k1", "public_jwk": {}, "published_at": MARKER, "active_from": 0},
            ]
        }
    ),
    # json.loads -> JSONDecodeError
    "not-json": f"{{{MARKER}",
}


def _calls(svc: Any) -> dict[str, Callable[[], Awaitable[Any]]]:
    ctx = common_pb2.RequestContext(user_id="ops-admin", correlation_id="corrupt-state-1")
    return {
        "GetJwks": lambda: svc.stub.GetJwks(token_service_pb2.GetJwksRequest()),
        "GetNhsAccessToken": lambda: svc.stub.GetNhsAccessToken(
            token_service_pb2.GetNhsAccessTokenRequest(context=ctx, force_refresh=True)
        ),
        "RotateKeys": lambda: svc.stub.RotateKeys(token_service_pb2.RotateKeysRequest(context=ctx)),
    }


def _internal_errors() -> float:
    value = REGISTRY.get_sample_value("xcagw_nhs_access_token_errors_total", {"reason": "INTERNAL"})
    return value or 0.0


@pytest.mark.parametrize("corrupt", sorted(CORRUPT_STATES))
async def test_corrupt_key_state_is_internal_with_a_fixed_message(
    service: Any, redis_url: str, oauth_stub: Any, caplog: pytest.LogCaptureFixture, corrupt: str
) -> None:
    state_key = f"{app_namespace(service.app.settings)}:keys:state"
    store = redis.Redis.from_url(redis_url)
    try:
        good = store.get(state_key)
        assert good is not None, "the service bootstrapped its key state"
        store.set(state_key, CORRUPT_STATES[corrupt])
        internal_before = _internal_errors()
        caplog.set_level(logging.ERROR, logger="token_service.servicer")

        for rpc, call in _calls(service).items():
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call()
            err = raised.value
            assert err.code() == grpc.StatusCode.INTERNAL, (rpc, err.code(), err.details())
            assert err.details() == "internal error", rpc
            assert error_reason(err) == "INTERNAL", rpc
            # Nothing of the exception reaches the caller, in the message or in its metadata.
            trailers = repr(err.trailing_metadata())
            for leaked in (MARKER, "KeyError", "ValueError", "JSONDecodeError", "public_jwk"):
                assert leaked not in (err.details() or ""), (rpc, leaked)
                assert leaked not in trailers, (rpc, leaked)

        # Operators still get the cause: one ERROR with the traceback per failed RPC.
        crashes = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
        assert sorted(r.getMessage().split()[0] for r in crashes) == sorted(_calls(service))
        assert all(r.exc_info is not None for r in crashes)
        assert _internal_errors() == internal_before + 1
        assert oauth_stub.requests == 0, "no assertion could be signed, so none was sent"

        # The servicer itself is unharmed: with the state repaired the same RPCs answer again.
        store.set(state_key, good)
        jwks = await service.stub.GetJwks(token_service_pb2.GetJwksRequest())
        assert jwks.active_kid == "seed-1"
        token = await service.stub.GetNhsAccessToken(
            token_service_pb2.GetNhsAccessTokenRequest(force_refresh=True)
        )
        assert token.access_token.startswith("stub-")
    finally:
        store.close()


async def test_corrupt_key_state_outside_the_rpcs(
    service: Any, redis_url: str, caplog: pytest.LogCaptureFixture, eventually: Any
) -> None:
    """The JWKS endpoint answers 503 (not a 500), readiness turns NOT_SERVING, and the rotation
    schedule sees a KeyManagementError (which it survives) instead of a raw KeyError; once the
    state is repaired everything recovers. The corrupt state is never overwritten."""
    state_key = f"{app_namespace(service.app.settings)}:keys:state"
    store = redis.Redis.from_url(redis_url)
    try:
        good = store.get(state_key)
        store.set(state_key, CORRUPT_STATES["record-missing-fields"])
        caplog.set_level(logging.ERROR, logger="token_service.rotation")

        async with httpx.AsyncClient() as client:
            answer = await client.get(service.jwks_url)
        assert answer.status_code == 503
        assert answer.headers["cache-control"] == "no-store"
        assert MARKER not in answer.text
        with pytest.raises(StateCorruptError):
            await service.runtime.keys.tick()
        assert isinstance(StateCorruptError("x"), KeyManagementError)
        assert any("key state in Redis is unreadable" in r.getMessage() for r in caplog.records)
        await eventually(lambda: _not_serving(service))
        assert store.get(state_key) == CORRUPT_STATES["record-missing-fields"].encode()

        store.set(state_key, good)
        async with httpx.AsyncClient() as client:
            answer = await client.get(service.jwks_url)
        assert answer.status_code == 200
        assert [k["kid"] for k in answer.json()["keys"]] == ["seed-1"]
        await eventually(lambda: _serving(service))
    finally:
        store.close()


async def _serving(svc: Any) -> bool:
    return await check_health(svc.channel)


async def _not_serving(svc: Any) -> bool:
    return not await check_health(svc.channel)
