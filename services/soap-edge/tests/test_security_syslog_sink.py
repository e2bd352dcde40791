"""The RFC 5425 syslog sink used as the test ARR is strict about framing and RFC 5424."""

from __future__ import annotations

import socket

import pytest

from xcagw_devstack.syslog_sink import SyslogFormatError, SyslogSink, parse_message

GOOD = b"<85>1 2026-01-02T03:04:05.678Z host app 12 IHE+RFC-3881 - \xef\xbb\xbf<AuditMessage/>"


def test_parse_rfc5424_with_and_without_structured_data() -> None:
    record = parse_message(GOOD)
    assert (record.facility, record.severity, record.msgid) == (10, 5, "IHE+RFC-3881")
    assert record.msg == b"<AuditMessage/>" and record.has_bom
    sd = parse_message(b'<13>1 - h a - ID [x@1 a="b\\]c"][y@1] hello')
    assert sd.structured_data == '[x@1 a="b\\]c"][y@1]' and sd.msg == b"hello"


@pytest.mark.parametrize(
    "raw",
    [
        b"<85> 2026 host app 1 ID - x",  # no VERSION
        b"85>1 2026 host app 1 ID - x",  # no PRI
        b"<999>1 2026 host app 1 ID - x",  # PRI out of range
        b"<85>1 2026 host app 1 ID x",  # no STRUCTURED-DATA
    ],
)
def test_malformed_messages(raw: bytes) -> None:
    with pytest.raises(SyslogFormatError):
        parse_message(raw)


def test_plain_tcp_octet_counting_and_refusal_of_lf_framing() -> None:
    with SyslogSink() as sink:
        with socket.create_connection(("127.0.0.1", sink.port)) as sock:
            sock.sendall(
                str(len(GOOD)).encode() + b" " + GOOD + str(len(GOOD)).encode() + b" " + GOOD
            )
        assert len(sink.wait_for(2)) == 2
        with socket.create_connection(("127.0.0.1", sink.port)) as sock:
            sock.sendall(GOOD + b"\n")  # non-transparent framing: not RFC 5425
            sock.recv(1)  # the sink closes the connection
        assert sink.errors() and "octet counting" in sink.errors()[0]
        assert len(sink.messages()) == 2
