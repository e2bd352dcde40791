"""safe_header_value against a real HTTP exchange (httpx client, a socket server that records)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from xcagw_common.headers import safe_header_value

SAFE = [
    "urn:uuid:6c1e7b7e-3f0d-4f8e-9d36-0c8c3b9d2a11",
    str(uuid.uuid4()),
    "x",
    "!~" * 100,  # 200 characters: the longest accepted
]
# Refused by policy: sendable, but no correlation id looks like this (blank, spaces, too long).
REFUSED = ["", "corr\tid", "corr id", "x" * 201]
# What a partner's wsa:MessageID can carry (XML character references decode to CR/LF, NUL is
# not XML but a SOAP stack may pass it on) and what breaks the request when sent as it is.
BREAKING = [
    "corr\r\nX-Injected: yes",
    "corr\n",  # a trailing newline alone: `re.match` with `$` would let it through
    "\rcorr",
    "corr\x00id",
    "corrélation-ü",
    "相关",
]


@pytest_asyncio.fixture
async def recorder() -> AsyncIterator[tuple[str, list[bytes]]]:
    """An HTTP/1.1 server on a free port that records each request head and answers 204."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except asyncio.IncompleteReadError:
            pass  # the client gave up before sending a whole request head
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/", heads


@pytest.mark.parametrize("value", SAFE)
async def test_safe_values_are_kept_and_arrive_unchanged(
    recorder: tuple[str, list[bytes]], value: str
) -> None:
    url, heads = recorder
    assert safe_header_value(value) == value
    async with httpx.AsyncClient() as client:
        response = await client.get(url, headers={"X-Correlation-ID": value})
    assert response.status_code == 204
    assert f"\r\nx-correlation-id: {value}\r\n".encode() in heads[0].lower()


@pytest.mark.parametrize("value", REFUSED + BREAKING)
def test_unsafe_values_are_refused(value: str) -> None:
    assert safe_header_value(value) is None


@pytest.mark.parametrize("value", BREAKING)
async def test_what_is_refused_would_break_the_request(
    recorder: tuple[str, list[bytes]], value: str
) -> None:
    url, heads = recorder
    # Sent as it is, the value fails the request before it leaves: a LocalProtocolError (a
    # TransportError, which retries and circuit breakers count as the upstream failing) or an
    # encoding error. The check keeps both away from the adapters' upstream calls.
    async with httpx.AsyncClient() as client:
        with pytest.raises((httpx.LocalProtocolError, UnicodeEncodeError)):
            await client.get(url, headers={"X-Correlation-ID": value})
    assert heads == []
