"""A small syslog receiver (RFC 5425 over TLS, or RFC 6587 octet counting over TCP) for tests
and the local stack: an Audit Record Repository stand-in for soap-edge's ATNA audit (ITI-20).

Strict on purpose, so sender mistakes show up (openemr#11743): every frame must use
octet-counting framing (`MSG-LEN SP SYSLOG-MSG`, RFC 5425 §4.3) and every message must parse as
RFC 5424 (`<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [SP MSG]`). A bad frame closes the
connection and is recorded in `errors()`; good messages are kept in arrival order.

In process (tests): `SyslogSink(cert_file=..., key_file=...).start()`, then `messages()`,
`wait_for(n)`, `stop()` to simulate an outage and `start()` again on the same port. As a process:
`python -m xcagw_devstack.syslog_sink --port 6514 --cert C --key K [--ca CA] [--out audit.jsonl]`
appends each message as one JSON line to `--out` (and prints a one-line summary without the
message body, which holds patient identifiers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import ssl
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BOM = b"\xef\xbb\xbf"
MAX_FRAME_BYTES = 4 * 1024 * 1024
_HEADER = re.compile(
    rb"^<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) (?P<timestamp>\S+) (?P<hostname>\S+) "
    rb"(?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
)


class SyslogFormatError(ValueError):
    """A frame or message that is not RFC 5425 / RFC 5424."""


@dataclass(frozen=True)
class SyslogRecord:
    """One received RFC 5424 message."""

    facility: int
    severity: int
    version: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: str
    msg: bytes
    has_bom: bool
    peer: str
    received_at: float

    def text(self) -> str:
        return self.msg.decode("utf-8")

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["msg"] = self.text()
        return doc


def _structured_data(rest: bytes) -> tuple[str, bytes]:
    """Split STRUCTURED-DATA (`-` or `[...]...`) from the MSG that follows it."""
    if rest.startswith(b"-"):
        sd, tail = b"-", rest[1:]
    elif rest.startswith(b"["):
        i, depth, escaped = 0, 0, False
        while i < len(rest):
            ch = rest[i : i + 1]
            if escaped:
                escaped = False
            elif ch == b"\\":
                escaped = True
            elif ch == b"[":
                depth += 1
            elif ch == b"]":
                depth -= 1
                if depth == 0 and rest[i + 1 : i + 2] != b"[":
                    i += 1
                    break
            i += 1
        sd, tail = rest[:i], rest[i:]
    else:
        raise SyslogFormatError("STRUCTURED-DATA missing")
    if tail and not tail.startswith(b" "):
        raise SyslogFormatError("no SP between STRUCTURED-DATA and MSG")
    return sd.decode("utf-8"), tail[1:]


def parse_message(data: bytes, peer: str = "") -> SyslogRecord:
    """Parse one RFC 5424 SYSLOG-MSG (raises SyslogFormatError)."""
    match = _HEADER.match(data)
    if match is None:
        raise SyslogFormatError("not an RFC 5424 header")
    pri = int(match["pri"])
    if pri > 191:
        raise SyslogFormatError("PRI out of range")
    sd, msg = _structured_data(data[match.end() :])
    has_bom = msg.startswith(BOM)
    return SyslogRecord(
        facility=pri // 8,
        severity=pri % 8,
        version=int(match["version"]),
        timestamp=match["timestamp"].decode("ascii"),
        hostname=match["hostname"].decode("ascii"),
        app_name=match["app"].decode("ascii"),
        procid=match["procid"].decode("ascii"),
        msgid=match["msgid"].decode("ascii"),
        structured_data=sd,
        msg=msg[len(BOM) :] if has_bom else msg,
        has_bom=has_bom,
        peer=peer,
        received_at=time.time(),
    )


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """One octet-counted frame (RFC 5425 §4.3); None at a clean end of stream."""
    digits = b""
    while True:
        ch = await reader.read(1)
        if not ch:
            if digits:
                raise SyslogFormatError("stream ended inside MSG-LEN")
            return None
        if ch == b" ":
            break
        if not ch.isdigit() or len(digits) >= 10 or (not digits and ch == b"0"):
            raise SyslogFormatError("frame does not start with MSG-LEN SP (octet counting)")
        digits += ch
    if not digits:
        raise SyslogFormatError("empty MSG-LEN")
    length = int(digits)
    if length > MAX_FRAME_BYTES:
        raise SyslogFormatError("frame too large")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise SyslogFormatError("stream ended inside a frame") from exc


class SyslogSink:
    """The receiver, run in a background thread with its own event loop."""

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        cert_file: str | None = None,
        key_file: str | None = None,
        client_ca_file: str | None = None,
        out_file: str | None = None,
        echo: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file
        self.out_file = out_file
        self.echo = echo
        self._records: list[SyslogRecord] = []
        self._errors: list[str] = []
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self.connections = 0

    # ---- lifecycle -----------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.cert_file:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # RFC 5425 §5: TLS; IHE ATNA (BCP 195): 1.2 or later.
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            ctx.load_verify_locations(cafile=self.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def start(self) -> SyslogSink:
        """Listen (again) on the same port; returns when accepting connections."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="syslog-sink", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread = None
            raise failure[0]
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, ssl=self.ssl_context()
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        # Closed connections end their handlers (EOF); cancel only what is still stuck.
        handlers = list(self._handlers)
        if handlers:
            _, stuck = await asyncio.wait(handlers, timeout=2.0)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        self._handlers.clear()
        if self._server is not None:
            await self._server.wait_closed()
        self._server = None

    def stop(self) -> None:
        """Close the listener and every connection (an ARR outage); `start()` resumes."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> SyslogSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- receiving -----------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else ""
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        self.connections += 1
        try:
            while True:
                frame = await read_frame(reader)
                if frame is None:
                    break
                self._record(parse_message(frame, peer))
        except SyslogFormatError as exc:
            with self._cond:
                self._errors.append(str(exc))
                self._cond.notify_all()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            with self._cond:
                self._errors.append(f"{type(exc).__name__}")
                self._cond.notify_all()
        finally:
            self._writers.discard(writer)
            writer.close()

    def _record(self, record: SyslogRecord) -> None:
        with self._cond:
            self._records.append(record)
            self._cond.notify_all()
        if self.out_file:
            with Path(self.out_file).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record.to_json()) + "\n")
        if self.echo:
            sys.stdout.write(
                f"{record.timestamp} {record.hostname} {record.app_name} {record.msgid} "
                f"{len(record.msg)} bytes\n"
            )
            sys.stdout.flush()

    # ---- reading the results -------------------------------------------------------------------
    def messages(self) -> list[SyslogRecord]:
        with self._cond:
            return list(self._records)

    def errors(self) -> list[str]:
        with self._cond:
            return list(self._errors)

    def clear(self) -> None:
        with self._cond:
            self._records.clear()
            self._errors.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[SyslogRecord]:
        """Block until at least `count` messages arrived (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._records) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._records)} of {count} syslog messages arrived")
                self._cond.wait(left)
            return list(self._records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RFC 5425 syslog receiver (ATNA ARR stand-in)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6514)
    parser.add_argument("--cert", help="server certificate (PEM); omit for plain TCP")
    parser.add_argument("--key", help="server private key (PEM)")
    parser.add_argument("--ca", help="CA bundle to require and verify client certificates")
    parser.add_argument("--out", help="append each message as a JSON line to this file")
    args = parser.parse_args(argv)
    sink = SyslogSink(
        args.port,
        host=args.host,
        cert_file=args.cert,
        key_file=args.key,
        client_ca_file=args.ca,
        out_file=args.out,
        echo=True,
    ).start()
    mode = "tls" if args.cert else "tcp"
    sys.stdout.write(f"syslog sink listening on {args.host}:{sink.port} ({mode})\n")
    sys.stdout.flush()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    while not stopped.wait(1.0):
        pass
    sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
