"""Key rotation: publish before signing, overlap, retirement, replicas, read-only key mounts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from jwcrypto import jwk, jws
from jwcrypto.common import JWKeyNotFound
from prometheus_client import REGISTRY

from token_service.__main__ import build_parser, main
from token_service.keys import generate_key_file
from token_service.rotation import KeyManager
from xcagw.common.v1 import common_pb2
from xcagw.token.v1 import token_service_pb2
from xcagw_common.errors import error_reason
from xcagw_common.redis import create_redis

OVERLAP = 120.0  # rotation_overlap_seconds default
RETIRE_AFTER = 300 + 60.0  # assertion lifetime + key_retire_grace_seconds defaults


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def verify(assertion: str, keyset: jwk.JWKSet) -> str:
    """jwcrypto verification against a published JWKS; returns the kid that signed."""
    token = jws.JWS()
    token.deserialize(assertion, key=keyset)
    return str(token.jose_header["kid"])


async def new_assertion(svc: Any, stub: Any) -> str:
    """Force a token request so the OAuth stub receives (and checks) a fresh assertion."""
    await svc.stub.GetNhsAccessToken(token_service_pb2.GetNhsAccessTokenRequest(force_refresh=True))
    return str(stub.assertions[-1])


async def published(svc: Any, fetch_jwks: Any) -> tuple[jwk.JWKSet, list[str]]:
    keyset, response = await fetch_jwks(svc.jwks_url)
    return keyset, [k["kid"] for k in response.json()["keys"]]


def rotate_request() -> token_service_pb2.RotateKeysRequest:
    return token_service_pb2.RotateKeysRequest(
        context=common_pb2.RequestContext(user_id="ops-admin", correlation_id="rot-1")
    )


async def test_signatures_verify_before_during_and_after_a_rotation(
    service: Any, oauth_stub: Any, clock: Any, fetch_jwks: Any, tmp_path: Path
) -> None:
    rotations = sample("xcagw_key_rotations_total", trigger="manual")
    retired = sample("xcagw_keys_retired_total")

    # Before: one key, which signs.
    before = await new_assertion(service, oauth_stub)
    keyset, kids = await published(service, fetch_jwks)
    old_kid = verify(before, keyset)
    assert kids == [old_kid]

    # Rotation starts: the next key is published at once but signs nothing yet.
    answer = await service.stub.RotateKeys(rotate_request())
    assert answer.previous_kid == old_kid and answer.new_kid != old_kid
    assert sorted(answer.published_kids) == sorted([old_kid, answer.new_kid])
    keyset, kids = await published(service, fetch_jwks)
    assert kids == [old_kid, answer.new_kid]
    during = await new_assertion(service, oauth_stub)
    assert verify(during, keyset) == old_kid
    jwks_now = await service.stub.GetJwks(token_service_pb2.GetJwksRequest())
    assert jwks_now.active_kid == old_kid
    # Asking again during the overlap does not skip it.
    again = await service.stub.RotateKeys(rotate_request())
    assert again.new_kid == answer.new_kid

    # After the overlap: the new key signs; the old one stays published for its tokens.
    clock.advance(OVERLAP)
    after = await new_assertion(service, oauth_stub)
    keyset, kids = await published(service, fetch_jwks)
    assert verify(after, keyset) == answer.new_kid
    assert set(kids) == {old_kid, answer.new_kid}
    assert verify(before, keyset) == verify(during, keyset) == old_kid
    jwks_now = await service.stub.GetJwks(token_service_pb2.GetJwksRequest())
    assert jwks_now.active_kid == answer.new_kid

    # Once every token the old key signed has expired, it leaves the JWKS.
    clock.advance(RETIRE_AFTER)
    keyset, kids = await published(service, fetch_jwks)
    assert kids == [answer.new_kid]
    with pytest.raises(JWKeyNotFound):
        verify(during, keyset)
    assert verify(after, keyset) == answer.new_kid
    assert verify(await new_assertion(service, oauth_stub), keyset) == answer.new_kid

    # The schedule forgets the retired key and deletes its private PEM.
    await service.runtime.keys.tick()
    keys_dir = Path(service.runtime.settings.keys_dir)
    assert not (keys_dir / f"{old_kid}.pem").exists()
    assert (keys_dir / f"{answer.new_kid}.pem").exists()
    assert sample("xcagw_key_rotations_total", trigger="manual") == rotations + 1
    assert sample("xcagw_keys_retired_total") == retired + 1


async def test_scheduled_rotation_runs_once_and_replicas_agree(
    settings_for: Any,
    service_factory: Any,
    oauth_stub: Any,
    clock: Any,
    fetch_jwks: Any,
    eventually: Any,
) -> None:
    scheduled = sample("xcagw_key_rotations_total", trigger="scheduled")
    settings = settings_for(rotation_interval_seconds=3600, rotation_check_seconds=0.05)
    async with service_factory(settings) as first, service_factory(settings) as second:
        _, kids = await published(first, fetch_jwks)
        assert len(kids) == 1
        clock.advance(3600)

        # Both replicas run the schedule; the Redis lock lets one of them rotate.
        async def both_published() -> bool:
            return len((await published(second, fetch_jwks))[1]) == 2

        await eventually(both_published)
        await asyncio.sleep(0.3)  # several more schedule passes on both replicas
        assert sample("xcagw_key_rotations_total", trigger="scheduled") == scheduled + 1
        first_view = await first.stub.GetJwks(token_service_pb2.GetJwksRequest())
        second_view = await second.stub.GetJwks(token_service_pb2.GetJwksRequest())
        assert json.loads(first_view.jwks_json) == json.loads(second_view.jwks_json)
        new_kid = next(k for k in (await published(first, fetch_jwks))[1] if k != kids[0])

        clock.advance(OVERLAP)
        for replica in (first, second):
            answer = await replica.stub.GetJwks(token_service_pb2.GetJwksRequest())
            assert answer.active_kid == new_kid
            keyset, _ = await published(replica, fetch_jwks)
            assert verify(await new_assertion(replica, oauth_stub), keyset) == new_kid


async def test_read_only_key_mount_rotates_only_to_a_key_added_to_the_secret(
    settings_for: Any, service_factory: Any, oauth_stub: Any, clock: Any, tmp_path: Path
) -> None:
    keys_dir = tmp_path / "secret"
    first = await asyncio.to_thread(generate_key_file, keys_dir, 2048, "test-1")
    settings = settings_for(
        keys_dir=str(keys_dir), auto_generate_key=False, generate_next_key=False
    )
    async with service_factory(settings) as svc:
        jwks_answer = await svc.stub.GetJwks(token_service_pb2.GetJwksRequest())
        assert jwks_answer.active_kid == "test-1" == first.kid
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await svc.stub.RotateKeys(rotate_request())
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(err.value) == "NO_NEXT_KEY"
        assert sorted(os.listdir(keys_dir)) == ["test-1.pem"]

        # Operators add the next key to the secret; the kubelet updates the mount.
        await asyncio.to_thread(generate_key_file, keys_dir, 2048, "test-2")
        answer = await svc.stub.RotateKeys(rotate_request())
        assert (answer.previous_kid, answer.new_kid) == ("test-1", "test-2")
        clock.advance(OVERLAP)
        keyset, _ = await published_from(svc)
        assert verify(await new_assertion(svc, oauth_stub), keyset) == "test-2"


async def published_from(svc: Any) -> tuple[jwk.JWKSet, list[str]]:
    answer = await svc.stub.GetJwks(token_service_pb2.GetJwksRequest())
    keyset = jwk.JWKSet.from_json(answer.jwks_json)
    return keyset, [k["kid"] for k in json.loads(answer.jwks_json)["keys"]]


def test_cli_keygen_writes_a_private_pem_and_jwks_prints_only_public_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # RSA 4096 unless told otherwise (nhs-apis.md §2.4); the suite uses 2048 bits for speed.
    assert build_parser().parse_args(["keygen", "--out", str(tmp_path)]).bits == 4096
    # The console script itself, once.
    script = Path(sys.executable).with_name("token-service")
    out = tmp_path / "keys"
    made = subprocess.run(
        [str(script), "keygen", "--out", str(out), "--kid", "test-1", "--bits", "2048"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert made.stdout.strip() == "test-1"
    pem = out / "test-1.pem"
    assert pem.stat().st_mode & 0o777 == 0o600
    key = jwk.JWK.from_pem(pem.read_bytes())
    assert key.has_private
    assert key.get_op_key("verify").key_size == 2048

    def cli(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        captured = capsys.readouterr()
        return int(exited.value.code or 0), captured.out, captured.err

    code, stdout, _ = cli("keygen", "--out", str(out), "--bits", "2048")
    kid = stdout.strip()
    assert code == 0
    assert kid == jwk.JWK.from_pem((out / f"{kid}.pem").read_bytes()).thumbprint()

    code, _, stderr = cli("keygen", "--out", str(out), "--kid", "test-1")
    assert code == 1 and "already exists" in stderr

    code, stdout, stderr = cli("jwks", str(out))
    assert code == 0
    doc = json.loads(stdout)
    assert sorted(k["kid"] for k in doc["keys"]) == sorted(["test-1", kid])
    for entry in doc["keys"]:
        assert set(entry) == {"kty", "n", "e", "alg", "kid", "use"}
        assert entry["alg"] == "RS512" and entry["use"] == "sig"
    assert "PRIVATE" not in stdout + stderr

    code, _, stderr = cli("jwks", str(tmp_path / "empty"))
    assert code == 1 and "no usable" in stderr


async def test_first_key_is_the_configured_or_oldest_one(
    settings_for: Any, tmp_path: Path, redis_url: str
) -> None:
    keys_dir = tmp_path / "staged"
    for kid in ("test-1", "test-2"):
        await asyncio.to_thread(generate_key_file, keys_dir, 2048, kid)
        stamp = 1_000 + int(kid[-1])  # test-1 is the older file
        os.utime(keys_dir / f"{kid}.pem", (stamp, stamp))
    for initial, expected in (("", "test-1"), ("test-2", "test-2")):
        redis_client = create_redis(redis_url)
        try:
            await redis_client.flushall()
            settings = settings_for(keys_dir=str(keys_dir), initial_kid=initial)
            manager = KeyManager(settings, redis_client, keys_dir)
            await manager.tick(wait_seconds=5)
            assert (await manager.view()).published_kids == [expected]
        finally:
            await redis_client.aclose()
