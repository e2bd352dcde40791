"""A caller that goes away before its request body arrives (its deadline passed) is not an error.

The adapters give up on slow NHS calls; the sandbox then reads a disconnect instead of the body.
That must be logged as what it is, with no traceback and no "unhandled error".
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import FastAPI


async def _post_then_disconnect(app: FastAPI, path: str) -> list[dict[str, Any]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"sandbox.test"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", b"100"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_disconnect_before_the_body_is_no_error(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sent = await _post_then_disconnect(app, "/oauth2/token")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [(r.name, r.getMessage()) for r in errors]
    assert not any(r.exc_info for r in caplog.records)
    assert any("disconnected" in r.getMessage() for r in caplog.records)
    # Nobody is listening; what is sent is a 499 (client closed request), never a 500.
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] in ([], [499])
