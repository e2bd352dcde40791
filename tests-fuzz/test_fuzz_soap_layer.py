"""Fuzz the SOAP/MTOM layer through the whole app: random bytes, random XML, broken MTOM packages.

Properties for every input: no exception escapes the app, nothing is logged with a stack trace,
every reply is a SOAP 1.2 envelope (plain or MTOM), HTTP 4xx only with env:Sender and 5xx only
with the faults SOAP 1.2 Part 2 Table 20 maps to 500 (Receiver, MustUnderstand,
VersionMismatch).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from soapfuzz_kit import (
    BYTE_OPS,
    CONTENT_TYPES,
    ENDPOINTS,
    SOAP12,
    SoapEdgeHarness,
    check_response,
    mtom_wrap,
    mutate_bytes,
    xop_replace,
)

XML_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, codec="utf-8"),
    max_size=40,
)


def _send(harness: SoapEdgeHarness, path: str, body: bytes, content_type: str | None) -> None:
    harness.exceptions.records.clear()
    resp = harness.post(path, body, content_type)
    check_response(resp)
    assert not harness.exceptions.records, [r.getMessage() for r in harness.exceptions.records]


@given(
    path=st.sampled_from((*ENDPOINTS, "/", "/nowhere", "/xca/../iti38")),
    body=st.binary(max_size=2048),
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_random_bytes_get_a_soap_answer(
    harness: SoapEdgeHarness, path: str, body: bytes, content_type: str | None
) -> None:
    _send(harness, path, body, content_type)


@st.composite
def xml_trees(draw: st.DrawFn, harness: SoapEdgeHarness) -> bytes:
    """Random element trees over the vocabulary of real requests, inside a SOAP 1.2 envelope."""
    tags, attrs, texts = harness.vocab
    values = st.one_of(st.sampled_from(texts), XML_TEXT)

    def leaf(tag: str, text: str, attr: tuple[str, str] | None) -> etree._Element:
        el = etree.Element(tag)
        el.text = text
        if attr is not None:
            el.set(*attr)
        return el

    leaves = st.builds(
        leaf,
        st.sampled_from(tags),
        values,
        st.none() | st.tuples(st.sampled_from(attrs), values),
    )

    def node(children: list[etree._Element], tag: str) -> etree._Element:
        el = etree.Element(tag)
        for c in children:
            el.append(c)
        return el

    trees = st.recursive(
        leaves,
        lambda kids: st.builds(node, st.lists(kids, max_size=4), st.sampled_from(tags)),
        max_leaves=25,
    )
    env = etree.Element(f"{{{SOAP12}}}Envelope")
    if draw(st.booleans()):
        header = etree.SubElement(env, f"{{{SOAP12}}}Header")
        for block in draw(st.lists(trees, max_size=4)):
            header.append(block)
    body = etree.SubElement(env, f"{{{SOAP12}}}Body")
    for payload in draw(st.lists(trees, min_size=0, max_size=2)):
        body.append(payload)
    return bytes(etree.tostring(env))


@given(data=st.data(), path=st.sampled_from(ENDPOINTS))
def test_random_xml_envelopes_get_a_soap_answer(
    harness: SoapEdgeHarness, data: st.DataObject, path: str
) -> None:
    body = data.draw(xml_trees(harness))
    _send(harness, path, body, "application/soap+xml")


@given(
    data=st.data(),
    op=st.sampled_from(BYTE_OPS),
    pos=st.integers(min_value=0, max_value=1 << 16),
    blob=st.binary(min_size=1, max_size=64),
)
def test_byte_damaged_requests_get_a_soap_answer(
    harness: SoapEdgeHarness, data: st.DataObject, op: str, pos: int, blob: bytes
) -> None:
    seed = data.draw(st.sampled_from(harness.seeds.items))
    body = mutate_bytes(seed.envelope_bytes(), op, pos, blob)
    _send(harness, seed.path, body, "application/soap+xml; charset=UTF-8")


@given(
    data=st.data(),
    attachments=st.dictionaries(
        st.sampled_from(["a@x", "b@x", "root@fuzz", "%40", ""]), st.binary(max_size=64), max_size=3
    ),
    boundary=st.sampled_from(["", "b", "==x==", "MIMEBoundary_1", "a" * 80]),
    start=st.sampled_from([None, "<root@fuzz>", "<missing@x>", "root@fuzz", ""]),
    encoding=st.sampled_from(["binary", "8bit", "base64", "quoted-printable", "x"]),
    root_type=st.sampled_from(
        [
            'application/xop+xml; charset=UTF-8; type="application/soap+xml"',
            "application/soap+xml",
            "text/plain",
            "",
        ]
    ),
    line_end=st.sampled_from([b"\r\n", b"\n"]),
    xop_at=st.none() | st.integers(min_value=0, max_value=500),
    cid=st.sampled_from(["a@x", "b@x", "missing@x", "a%40x"]),
    cut=st.none() | st.integers(min_value=0, max_value=1 << 14),
)
def test_mtom_packages_get_a_soap_answer(
    harness: SoapEdgeHarness,
    data: st.DataObject,
    attachments: dict[str, bytes],
    boundary: str,
    start: str | None,
    encoding: str,
    root_type: str,
    line_end: bytes,
    xop_at: int | None,
    cid: str,
    cut: int | None,
) -> None:
    seed = data.draw(st.sampled_from(harness.seeds.items))
    tree = seed.envelope_tree()
    if xop_at is not None:
        xop_replace(tree, xop_at, cid)
    envelope = bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))
    body, ctype = mtom_wrap(
        envelope,
        attachments,
        boundary=boundary,
        start=start,
        transfer_encoding=encoding,
        root_type=root_type,
        line_end=line_end,
    )
    if cut is not None:
        body = body[: cut % (len(body) + 1)]
    _send(harness, seed.path, body, ctype)


def test_valid_mtom_request_is_answered_like_the_plain_one(harness: SoapEdgeHarness) -> None:
    """Sanity for the MTOM strategy: a well-formed package of a valid request succeeds."""
    for seed in harness.seeds.items:
        body, ctype = mtom_wrap(seed.envelope_bytes(), {})
        verdict = check_response(harness.post(seed.path, body, ctype))
        assert verdict.fault_code is None, seed.name
