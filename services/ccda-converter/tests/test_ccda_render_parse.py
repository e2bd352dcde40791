"""parse_ccd (RenderHtml, ``ccda-converter render``) refuses hostile XML with fixed messages.

A CDA document has no DOCTYPE, so any DOCTYPE is refused (the simplest defence against entity
tricks); nesting is bounded; and the caller never sees the parser's own text (it quotes input).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import grpc
import pytest
from ccda_testkit import Stub, collection, patient, thread_pool_stub

from ccda_converter.convert import ConvertOptions, convert_bundle
from ccda_converter.render import MAX_CCD_DEPTH, RenderError, parse_ccd, render_html
from xcagw.ccda.v1 import ccda_converter_pb2, ccda_converter_pb2_grpc
from xcagw_common.errors import error_reason

HL7 = "urn:hl7-org:v3"
DOCTYPE = "CCD XML with a DOCTYPE is not accepted"
DEEP = f"CCD XML is nested deeper than {MAX_CCD_DEPTH} levels"


def valid_ccd() -> bytes:
    bundle = collection(
        patient(pid="p", nhs_number=None, name_use=None, gender=None, practice=None)
    )
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return convert_bundle(bundle, options=ConvertOptions(effective_time=when)).ccd_xml


def with_doctype(doctype: str, body: str = "") -> bytes:
    return (
        f'<?xml version="1.0"?>\n{doctype}\n<ClinicalDocument xmlns="{HL7}">'
        f"<title>{body}</title></ClinicalDocument>"
    ).encode()


def nested(levels: int) -> bytes:
    """A ClinicalDocument with ``levels`` elements on its deepest path (itself included)."""
    inner = "<component>" * (levels - 1) + "</component>" * (levels - 1)
    return f'<ClinicalDocument xmlns="{HL7}">{inner}</ClinicalDocument>'.encode()


HOSTILE = [
    pytest.param(
        with_doctype(
            '<!DOCTYPE ClinicalDocument [<!ENTITY e SYSTEM "file:///etc/passwd">]>', "&e;"
        ),
        DOCTYPE,
        id="external-entity",
    ),
    pytest.param(
        with_doctype(
            '<!DOCTYPE ClinicalDocument [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>',
            "&b;",
        ),
        DOCTYPE,
        id="entity-expansion",
    ),
    pytest.param(with_doctype("<!DOCTYPE ClinicalDocument>"), DOCTYPE, id="bare-doctype"),
    pytest.param(nested(MAX_CCD_DEPTH + 44), DEEP, id="deeper-than-libxml2-allows"),
    pytest.param(
        b"<ClinicalDocument><unclosed></ClinicalDocument>",
        "CCD is not well-formed XML",
        id="malformed",
    ),
]


@pytest.mark.parametrize(("payload", "message"), HOSTILE)
def test_hostile_ccd_is_refused_with_a_fixed_message(payload: bytes, message: str) -> None:
    with pytest.raises(RenderError) as err:
        parse_ccd(payload)
    assert str(err.value) == message


def test_depth_limit_is_checked_by_the_converter_too() -> None:
    # Below libxml2's own cap of 256 levels: the limit is the converter's, not the parser's.
    assert parse_ccd(nested(12), max_depth=12) is not None
    with pytest.raises(RenderError, match="^CCD XML is nested deeper than 12 levels$"):
        parse_ccd(nested(13), max_depth=12)


def test_deepest_accepted_ccd_parses() -> None:
    assert len(parse_ccd(nested(MAX_CCD_DEPTH))) == 1


def test_valid_ccd_still_parses_and_renders() -> None:
    ccd = valid_ccd()
    root = parse_ccd(ccd)
    assert root.tag == f"{{{HL7}}}ClinicalDocument"
    assert "Jane SMITH" in render_html(ccd)


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    async with thread_pool_stub() as client:
        yield client


@pytest.mark.parametrize(("payload", "message"), HOSTILE)
async def test_render_html_maps_refusal_to_invalid_argument(
    stub: ccda_converter_pb2_grpc.CcdaConverterServiceStub, payload: bytes, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RenderHtml(ccda_converter_pb2.RenderHtmlRequest(ccd_xml=payload))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == message
    assert error_reason(err.value) == "INVALID_CCD"
