"""The gRPC servicer on a real grpc.aio server and socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest
from ccda_testkit import Stub, cc, collection, condition, patient, thread_pool_stub

from xcagw.ccda.v1 import ccda_converter_pb2, ccda_converter_pb2_grpc
from xcagw.common.v1 import common_pb2
from xcagw_common.errors import error_reason

BUNDLE = collection(
    patient(pid="p", name_use=None, birth_date="1980", practice=None),
    condition("c", cc("38341003", "Hypertension")),
)


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    async with thread_pool_stub(document_id_root="2.16.840.1.113883.3.9999.2") as client:
        yield client


async def test_convert_and_render(stub: ccda_converter_pb2_grpc.CcdaConverterServiceStub) -> None:
    ctx = common_pb2.RequestContext(correlation_id="c1", organization_name="St Elsewhere")
    resp = await stub.ConvertBundle(
        ccda_converter_pb2.ConvertBundleRequest(
            context=ctx, bundle_json=json.dumps(BUNDLE).encode()
        )
    )
    assert resp.ccd_xml.startswith(b"<?xml")
    assert resp.document_id.startswith("2.16.840.1.113883.3.9999.2^")
    coverage = {c.resource_type: c for c in resp.coverage}
    assert coverage["Condition"].mapped == 1
    assert b"St Elsewhere" in resp.ccd_xml
    page = await stub.RenderHtml(ccda_converter_pb2.RenderHtmlRequest(ccd_xml=resp.ccd_xml))
    assert "Jane SMITH" in page.html and "Hypertension" in page.html


@pytest.mark.parametrize(
    ("payload", "root", "reason", "text"),
    [
        (b"", "", "EMPTY_BUNDLE", "empty"),
        (b"{not json", "", "INVALID_BUNDLE", "not valid JSON"),
        (b'{"resourceType": "OperationOutcome"}', "", "INVALID_BUNDLE", "OperationOutcome"),
        (json.dumps(BUNDLE).encode(), "urn:uuid:nope", "INVALID_DOCUMENT_ID_ROOT", "OID"),
    ],
)
async def test_bad_input_is_invalid_argument(
    stub: ccda_converter_pb2_grpc.CcdaConverterServiceStub,
    payload: bytes,
    root: str,
    reason: str,
    text: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ConvertBundle(
            ccda_converter_pb2.ConvertBundleRequest(bundle_json=payload, document_id_root=root)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert text in (err.value.details() or "")
    assert error_reason(err.value) == reason


async def test_render_rejects_non_cda(
    stub: ccda_converter_pb2_grpc.CcdaConverterServiceStub,
) -> None:
    for payload in (
        b"<html/>",
        b"<a>",
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.RenderHtml(ccda_converter_pb2.RenderHtmlRequest(ccd_xml=payload))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
