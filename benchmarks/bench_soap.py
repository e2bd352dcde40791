"""SOAP parse and serialise cost per transaction, in-process (no network, no backends).

    .venv/bin/python benchmarks/bench_soap.py [--repeat 7] [--out benchmarks/results/soap.json]

Parse = what soap-edge does with a request before the transaction runs: HTTP body split (MTOM
when multipart), hardened lxml parse with the depth check, xop:Include resolution, envelope
shape, mustUnderstand, WS-Addressing, then the transaction's own parser (PDQ query, stored
query with parameter validation, retrieve requests). Requests are built by the partner client
with an XUA assertion, as partners send them.

Serialise = building the answer: the transaction's payload (HL7 PRPA_IN201306UV02 with one
subject, an AdhocQueryResponse with one full DocumentEntry, a RetrieveDocumentSetResponse), the
SOAP envelope with WS-A headers, and for ITI-39 the MTOM package around a CCD of the size the
sandbox's full record converts to (about 120 KB). A Sender fault is measured too.

Reported: median microseconds per operation over --repeat runs (each run sized to take about
0.2 s), and operations per second on one core. Machine load is recorded alongside.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import machine  # noqa: E402

from soap_edge import iti38, iti39, iti47  # noqa: E402
from soap_edge.app import render_fault  # noqa: E402
from soap_edge.backends import Hl7Outcome  # noqa: E402
from soap_edge.config import Settings  # noqa: E402
from soap_edge.iti47 import Match, build_response, subject_element  # noqa: E402
from soap_edge.patient_ids import nhs_cx  # noqa: E402
from soap_edge.soap.envelope import build_envelope, read_envelope  # noqa: E402
from soap_edge.soap.faults import sender  # noqa: E402
from soap_edge.soap.mtom import (  # noqa: E402
    Attachment,
    decode_http_body,
    new_content_id,
    package_mtom,
    resolve_xop,
)
from soap_edge.soap.parsing import parse_untrusted  # noqa: E402
from soap_edge.soap.wsa import check_must_understand, read_addressing, response_headers  # noqa: E402
from soap_edge.store import DocumentRecord  # noqa: E402
from soap_edge.xds import EntryView, entry_uuid_for, extrinsic_object  # noqa: E402
from xcagw.pds.v1 import pds_adapter_pb2  # noqa: E402
from xcagw_devstack import partner  # noqa: E402

SOAP_CT = "application/soap+xml; charset=UTF-8"
CCD_BYTES = 120_176  # the sandbox's full record for 9000000009, converted (soap-edge log)
NHS = "9000000009"


def settings() -> Settings:
    return Settings(
        redis_url="redis://127.0.0.1:1/0",
        home_community_id="2.16.840.1.113883.3.9999.1",
        repository_unique_id="2.16.840.1.113883.3.9999.1.1",
        allow_insecure_dev_partners=True,
    )


def request(tx: str, body: etree._Element) -> bytes:
    data, _ = partner.envelope(
        partner.ACTIONS[tx],
        body,
        to=f"https://gw.example/{tx}",
        assertion=partner.xua_assertion(partner.Requester()),
    )
    return data


def mtom(envelope: bytes) -> tuple[bytes, str]:
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    body = (
        (
            f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; "
            'type="application/soap+xml"\r\nContent-Transfer-Encoding: binary\r\n'
            "Content-ID: <root@bench>\r\n\r\n"
        ).encode()
        + envelope
        + f"\r\n--{boundary}--\r\n".encode()
    )
    ctype = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        'start="<root@bench>"; start-info="application/soap+xml"'
    )
    return body, ctype


def parser_for(tx: str) -> Callable[[etree._Element], Any]:
    return {
        "ITI-47": iti47.parse_query,
        "ITI-55": iti47.parse_query,
        "ITI-38": iti38.parse_request,
        "ITI-39": iti39.parse_requests,
    }[tx]


def parse_op(raw: bytes, ctype: str, tx: str) -> Callable[[], Any]:
    parse_payload = parser_for(tx)

    def op() -> Any:
        inbound = decode_http_body(ctype, raw, max_parts=16)
        root = parse_untrusted(inbound.envelope, max_bytes=10 * 1024 * 1024, max_depth=64)
        resolve_xop(root, inbound.attachments)
        env = read_envelope(root)
        check_must_understand(env)
        read_addressing(env)
        return parse_payload(env.payload)

    return op


def record(cfg: Settings) -> DocumentRecord:
    uid = "2.25.123456789012345678901234567890"
    return DocumentRecord(
        unique_id=uid,
        entry_uuid=entry_uuid_for(uid),
        nhs_number=NHS,
        hash="0" * 40,
        size=CCD_BYTES,
        creation_time="20260101120000",
        title="GP Connect summary (CCD)",
        content=b"x" * CCD_BYTES,
        service_start="20100101",
        service_stop="20260101",
        gp_ods_code="Y12345",
        family="SMITH",
        given="Jane",
        birth_date="20101022",
        gender="F",
        cda_id=f"{cfg.home_community_id}.1^{uuid.uuid4()}",
    )


class _Gw:
    def __init__(self, cfg: Settings) -> None:
        self.settings = cfg


def serialise_ops(cfg: Settings, requests: dict[str, bytes]) -> dict[str, Callable[[], Any]]:
    doc = record(cfg)
    patient = pds_adapter_pb2.Patient(
        nhs_number=NHS,
        names=[pds_adapter_pb2.HumanName(use="usual", family="SMITH", given=["Jane"])],
        gender="female",
        birth_date="2010-10-22",
        gp_ods_code="Y12345",
        addresses=[pds_adapter_pb2.Address(use="home", line=["1 Street"], city="Leeds")],
    )
    pdq_env = read_envelope(parse_untrusted(requests["ITI-47"], max_bytes=1 << 24, max_depth=64))
    query = iti47.parse_query(pdq_env.payload)
    gw = _Gw(cfg)
    relates = "urn:uuid:11111111-2222-3333-4444-555555555555"

    def iti47_answer() -> bytes:
        subject = subject_element(Match(patient, 1.0), False, cfg.home_community_id)
        payload = build_response(
            gw,  # type: ignore[arg-type]
            pdq_env.payload,
            Hl7Outcome("AA", "OK"),
            subjects=[subject],
            query_id=query.query_id,
            qbp=query.qbp,
            total=1,
            remaining=0,
        )
        return build_envelope(response_headers(iti47.RESPONSE_ACTION, relates), payload)

    def iti38_answer() -> bytes:
        view = EntryView(doc.entry_uuid, doc.unique_id, False, doc.title, doc)
        payload = iti38._response(
            "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success",
            [],
            [extrinsic_object(view, nhs_cx(NHS), cfg)],
            cfg.hcid,
        )
        return build_envelope(response_headers(iti38.RESPONSE_ACTION, relates), payload)

    def iti39_answer() -> tuple[bytes, str]:
        found = iti39.Found(
            iti39.DocumentRequest(cfg.hcid, cfg.repository_unique_id, doc.unique_id), doc, False
        )
        resp = etree.Element(
            f"{{{partner.NS['xdsb']}}}RetrieveDocumentSetResponse",
            nsmap={"xdsb": partner.NS["xdsb"], "rs": partner.NS["rs"]},
        )
        rr = etree.SubElement(resp, f"{{{partner.NS['rs']}}}RegistryResponse")
        rr.set("status", "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success")
        cid = new_content_id("soap-edge.xcagw")
        resp.append(iti39._document_response(found, cfg.hcid, cfg.repository_unique_id, cid))
        envelope = build_envelope(response_headers(iti39.RESPONSE_ACTION, relates), resp)
        return package_mtom(envelope, [Attachment(cid, "text/xml", doc.content)], "soap-edge.xcagw")

    def fault() -> tuple[bytes, int]:
        return render_fault(sender("wsa:Action is not supported at this endpoint"), relates)

    return {
        "ITI-47/55 response (1 subject)": iti47_answer,
        "ITI-38 response (1 DocumentEntry)": iti38_answer,
        "ITI-39 response (MTOM, 120 KB CCD)": iti39_answer,
        "SOAP Sender fault": fault,
    }


def timeit(op: Callable[[], Any], repeat: int) -> dict[str, float]:
    op()
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < 0.05:
        op()
        n += 1
    per_run = max(10, int(n * 4))  # about 0.2 s per run
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(per_run):
            op()
        samples.append((time.perf_counter() - t0) / per_run)
    med = statistics.median(samples)
    return {
        "median_us": round(med * 1e6, 1),
        "min_us": round(min(samples) * 1e6, 1),
        "ops_per_s": round(1 / med),
        "iterations": per_run * repeat,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "soap.json")
    args = parser.parse_args()
    cfg = settings()
    cx = f"{NHS}^^^&{partner.NHS_NUMBER_OID}&ISO"
    doc_ref = partner.DocumentRef(record(cfg).unique_id, cfg.repository_unique_id, cfg.hcid)
    requests = {
        "ITI-47": request("iti47", partner.pdq_query(nhs_number=NHS)),
        "ITI-55": request(
            "iti55",
            partner.pdq_query(family="SMITH", given="Jane", birth_date="20101022", gender="F"),
        ),
        "ITI-38": request("iti38", partner.find_documents(cx)),
        "ITI-39": request("iti39", partner.retrieve([doc_ref])),
    }
    report: dict[str, Any] = {"machine_before": machine(), "command": " ".join(sys.argv)}
    parse: dict[str, Any] = {}
    for tx, raw in requests.items():
        parse[f"{tx} request ({len(raw)} B)"] = timeit(parse_op(raw, SOAP_CT, tx), args.repeat)
        body, ctype = mtom(raw)
        parse[f"{tx} request, MTOM"] = timeit(parse_op(body, ctype, tx), args.repeat)
    serialise = {name: timeit(op, args.repeat) for name, op in serialise_ops(cfg, requests).items()}
    report["parse"] = parse
    report["serialise"] = serialise
    report["machine_after"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    width = max(len(k) for k in [*parse, *serialise])
    for title, table in (("parse", parse), ("serialise", serialise)):
        sys.stdout.write(f"\n{title}\n")
        for name, row in table.items():
            sys.stdout.write(
                f"  {name:<{width}}  {row['median_us']:>9.1f} us  {row['ops_per_s']:>8} ops/s\n"
            )
    sys.stdout.write(
        f"\nload average before/after: {report['machine_before']['loadavg_1_5_15']}"
        f" / {report['machine_after']['loadavg_1_5_15']}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
