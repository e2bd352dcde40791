"""Shared fixtures for the NHS sandbox tests: keys, settings, in-process client, live server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from xcagw_common.testing import shared_dir
from xcagw_devstack.sandbox.app import create_app
from xcagw_devstack.sandbox.config import SandboxSettings
from xcagw_devstack.sandbox.testkit import (
    TEST_BASE,
    KeyRing,
    LiveServer,
    fetch_token,
    free_port,
    jwks_of,
    sandbox_settings,
)


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not (path / "nhs").is_dir():
        pytest.skip(f"reference payloads not found at {path} (set XCAGW_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def keys() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def jwks_file(tmp_path: Path, keys: KeyRing) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_of(keys.signing)))
    return path


@pytest.fixture
def settings(jwks_file: Path) -> SandboxSettings:
    return sandbox_settings(jwks_file=str(jwks_file))


@pytest.fixture
def app(settings: SandboxSettings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=TEST_BASE) as c:
        yield c


@pytest.fixture
async def token(client: httpx.AsyncClient, keys: KeyRing) -> str:
    return await fetch_token(client, keys.signing)


@pytest.fixture
def live_sandbox(jwks_file: Path) -> Iterator[tuple[LiveServer, SandboxSettings]]:
    """The sandbox over a real socket; its public URL is the socket's URL."""
    port = free_port()
    settings = sandbox_settings(public_url=f"http://127.0.0.1:{port}", jwks_file=str(jwks_file))
    with LiveServer(create_app(settings), port) as server:
        yield server, settings
