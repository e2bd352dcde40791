"""`xcagw`: developer commands against a running stack (by default the one `make run` started).

`xcagw demo --nhs-number N [--out DIR]` performs ITI-47 -> ITI-38 -> ITI-39 as an XCA partner
would, shows each step with its timing, writes the retrieved CCD and its HTML view.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from xcagw_devstack.launcher import REPO_ROOT
from xcagw_devstack.partner import (
    NS,
    PartnerClient,
    Reply,
    documents_in,
    retrieved_documents,
)


def _stack_info(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _first(reply: Reply, path: str) -> str:
    found = reply.envelope.xpath(path, namespaces=NS)
    return str(found[0]) if found else ""


async def _render_html(ccda_addr: str, ccd: bytes) -> str:
    import grpc

    from xcagw.ccda.v1 import ccda_converter_pb2, ccda_converter_pb2_grpc

    async with grpc.aio.insecure_channel(ccda_addr) as channel:
        stub = ccda_converter_pb2_grpc.CcdaConverterServiceStub(channel)
        response = await stub.RenderHtml(
            ccda_converter_pb2.RenderHtmlRequest(ccd_xml=ccd), timeout=30
        )
    return str(response.html)


def _write_outputs(out: Path, nhs_number: str, ccd: bytes, html: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ccd_path = out / f"ccd-{nhs_number}.xml"
    ccd_path.write_bytes(ccd)
    _say(f"   CCD written to  {ccd_path.resolve()}")
    if html:
        html_path = out / f"ccd-{nhs_number}.html"
        html_path.write_text(html)
        _say(f"   HTML written to {html_path.resolve()}")


async def demo(soap_edge_url: str, nhs_number: str, out: Path, ccda_addr: str) -> int:
    client = PartnerClient(soap_edge_url)
    try:
        _say(f"Partner flow against {soap_edge_url} for NHS number {nhs_number}")
        start = time.perf_counter()
        pdq = await client.pdq(nhs_number=nhs_number)
        took = (time.perf_counter() - start) * 1000
        ack = _first(pdq, "//hl7:acknowledgement/hl7:typeCode/@code")
        code = _first(pdq, "//hl7:queryAck/hl7:queryResponseCode/@code")
        family = _first(pdq, "//hl7:patientPerson/hl7:name/hl7:family/text()")
        _say(f"1. ITI-47 PDQ            {took:7.1f} ms  ack={ack} response={code} family={family}")
        if code != "OK":
            _say("   patient not found; stopping")
            return 1

        start = time.perf_counter()
        query = await client.find_documents(nhs_number)
        took = (time.perf_counter() - start) * 1000
        status = _first(query, "//query:AdhocQueryResponse/@status").rsplit(":", 1)[-1]
        docs = documents_in(query)
        _say(f"2. ITI-38 query          {took:7.1f} ms  status={status} documents={len(docs)}")
        for err in query.xpath("//rs:RegistryError"):
            _say(f"   error {err.get('errorCode')}: {err.get('codeContext')}")
        stable = [d for d in docs if d.unique_id]
        if not stable:
            return 1

        start = time.perf_counter()
        retrieved = await client.retrieve(stable[:1])
        took = (time.perf_counter() - start) * 1000
        status = _first(retrieved, "//rs:RegistryResponse/@status").rsplit(":", 1)[-1]
        documents = retrieved_documents(retrieved)
        size = sum(len(data) for _, data in documents)
        _say(f"3. ITI-39 retrieve       {took:7.1f} ms  status={status} bytes={size}")
        if not documents:
            return 1
        ccd = documents[0][1]
        html = await _render_html(ccda_addr, ccd) if ccda_addr else ""
        await asyncio.to_thread(_write_outputs, out, nhs_number, ccd, html)
        return 0
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> None:
    stack_file = REPO_ROOT / ".devstack" / "stack.json"
    parser = argparse.ArgumentParser(prog="xcagw", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("demo", help="ITI-47 -> ITI-38 -> ITI-39 for one patient")
    run.add_argument("--nhs-number", required=True)
    run.add_argument("--out", type=Path, default=Path("out"), help="where the CCD goes")
    run.add_argument("--url", default="", help="soap-edge base URL (default: make run's)")
    run.add_argument("--ccda-addr", default="", help="ccda-converter host:port for the HTML view")
    run.add_argument("--stack-file", type=Path, default=stack_file)
    ns = parser.parse_args(argv)
    info = _stack_info(ns.stack_file)
    url = ns.url or info.get("soap_edge_url", "")
    if not url:
        parser.error(f"no running stack found ({ns.stack_file}); start one with `make run`")
    ccda = ns.ccda_addr or info.get("grpc", {}).get("ccda-converter", "")
    raise SystemExit(asyncio.run(demo(url, ns.nhs_number.replace(" ", ""), ns.out, ccda)))


if __name__ == "__main__":
    main()
