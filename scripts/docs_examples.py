"""Capture the partner documentation's example messages from a real stack (`make docs-examples`).

Starts the whole local stack on free ports (or uses `--url` of a running soap-edge), sends the
requests a partner would, and writes what went over the wire, pretty-printed (the stack's address
shown as make run's), to docs/partners/examples/: one `<name>.request.xml` / `.response.xml` pair
per example, and docs/partners/sandbox-outcomes.md with what every sandbox test patient produces
at the XCA level.

The examples are committed. They are not checked for staleness by the fast tests (that needs the
whole stack); re-run this script when soap-edge's messages change.
"""

from __future__ import annotations

import argparse
import asyncio
import email.parser
import email.policy
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from lxml import etree

from xcagw_devstack import partner
from xcagw_devstack.partner import NS

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "partners" / "examples"
OUTCOMES = REPO / "docs" / "partners" / "sandbox-outcomes.md"
SOAP_CT = "application/soap+xml; charset=UTF-8"
# Panel patients, plus one valid number unknown to PDS and one that fails Modulus 11
# (SANDBOX.md "Numbers that are not in the panel").
NOT_IN_PANEL = ("9111231130", "valid NHS number that PDS does not know")
INVALID = ("9000000000", "fails the Modulus 11 check")
_PRETTY = etree.XMLParser(
    remove_blank_text=True, resolve_entities=False, no_network=True, load_dtd=False
)
# soap-edge's address under `make run` (dev.env SOAP_EDGE_PORT), shown in wsa:To.
SHOWN_BASE_URL = "http://127.0.0.1:8080"
# The first bytes of a retrieved C-CDA shown in the ITI-39 example; the rest is elided.
CCD_PREVIEW_BYTES = 700


def pretty(data: bytes) -> str:
    root = etree.fromstring(data, _PRETTY)
    return str(etree.tostring(root, pretty_print=True, encoding="unicode"))


@dataclass
class Exchange:
    """One request/response pair as it went over the wire."""

    url: str
    request_headers: dict[str, str]
    request: bytes
    status: int
    response_headers: dict[str, str]
    response: bytes

    def reply(self) -> partner.Reply:
        resp = httpx.Response(self.status, headers=self.response_headers, content=self.response)
        return partner.parse_reply(resp)


class Capture:
    """Sends requests to soap-edge and keeps the raw bytes of both directions."""

    def __init__(self, base_url: str, client: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client
        # The partner client's XUA assertion (ITI-40), as tests-e2e and `xcagw demo` send it.
        self.partner = partner.PartnerClient(self.base_url, client=client)

    async def post(self, path: str, body: bytes, content_type: str = SOAP_CT) -> Exchange:
        url = f"{self.base_url}/{path}"
        headers = {"Content-Type": content_type}
        resp = await self.client.post(url, content=body, headers=headers)
        keep = {k: v for k, v in resp.headers.items() if k.lower() == "content-type"}
        return Exchange(url, headers, body, resp.status_code, keep, resp.content)

    async def send(self, transaction: str, payload: etree._Element, action: str = "") -> Exchange:
        url = f"{self.base_url}/{transaction}"
        body, _ = partner.envelope(
            action or partner.ACTIONS[transaction],
            payload,
            to=url,
            assertion=self.partner.assertion(),
        )
        return await self.post(transaction, body)


def http_head(ex: Exchange, *, request: bool) -> str:
    """The HTTP start line and Content-Type, as an XML comment above the message."""
    if request:
        path = "/" + ex.url.split("/", 3)[-1]
        return f"<!-- POST {path}\n     Content-Type: {ex.request_headers['Content-Type']} -->\n"
    ctype = ex.response_headers.get("content-type", "")
    return f"<!-- HTTP {ex.status}\n     Content-Type: {ctype} -->\n"


def render_response(ex: Exchange) -> str:
    """Plain SOAP pretty-printed; MTOM as its MIME parts with the document cut short."""
    ctype = ex.response_headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/"):
        return http_head(ex, request=False) + pretty(ex.response)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + ex.response
    )
    parts = list(message.iter_parts())
    out = [http_head(ex, request=False)]
    for i, part in enumerate(parts):
        headers = "\n".join(f"     {k}: {v}" for k, v in part.items())
        data = bytes(part.get_payload(decode=True))
        out.append(f"<!-- MIME part {i + 1}\n{headers} -->\n")
        if i == 0:
            out.append(pretty(data))
        else:
            preview = data[:CCD_PREVIEW_BYTES].decode("utf-8", "replace")
            out.append(
                f"{preview}\n<!-- ... {len(data)} bytes in this part; the rest is elided -->\n"
            )
    return "".join(out)


def write_pair(name: str, ex: Exchange, say: Callable[[str], None]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    request = http_head(ex, request=True) + pretty(ex.request)
    response = render_response(ex)
    # The stack ran on free ports: show make run's address instead, so re-captures diff cleanly.
    base = ex.url.rsplit("/", 1)[0]
    (OUT / f"{name}.request.xml").write_text(request.replace(base, SHOWN_BASE_URL))
    (OUT / f"{name}.response.xml").write_text(response.replace(base, SHOWN_BASE_URL))
    say(f"wrote {name}.request.xml / .response.xml (HTTP {ex.status})")


def first(reply: partner.Reply, path: str) -> str:
    found = reply.envelope.xpath(path, namespaces=NS)
    return str(found[0]) if found else ""


def soap11_envelope() -> bytes:
    """A SOAP 1.1 envelope (IHE requires 1.2): answered with env:VersionMismatch."""
    ns = "http://schemas.xmlsoap.org/soap/envelope/"
    env = etree.Element(f"{{{ns}}}Envelope", nsmap={"soap": ns})
    etree.SubElement(env, f"{{{ns}}}Body").append(partner.find_documents("9000000009^^^&x&ISO"))
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))


def without_message_id(body: bytes) -> bytes:
    root = etree.fromstring(body, _PRETTY)
    for el in root.iter(f"{{{NS['wsa']}}}MessageID"):
        el.getparent().remove(el)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


async def capture_examples(cap: Capture, say: Callable[[str], None]) -> None:
    # ITI-47: by NHS number, by demographics, and an invalid NHS number (AE/QE).
    write_pair("iti47", await cap.send("iti47", partner.pdq_query(nhs_number="9000000009")), say)
    demo = partner.pdq_query(family="SMITH", given="Jane", birth_date="20101022", gender="F")
    write_pair("iti47-demographics", await cap.send("iti47", demo), say)
    bad = partner.pdq_query(nhs_number=INVALID[0])
    write_pair("iti47-invalid-nhs-number", await cap.send("iti47", bad), say)
    # ITI-55: XCPD demographics query; the twins give "too many matches" with a refine hint.
    xcpd = partner.pdq_query(family="SMYTH", given="Jayne", birth_date="19820616", gender="F")
    write_pair("iti55", await cap.send("iti55", xcpd), say)
    twins = partner.pdq_query(family="JONES", birth_date="19800412")
    write_pair("iti55-refine", await cap.send("iti55", twins), say)
    # ITI-38: FindDocuments (the first query builds the document, later ones read it).
    patient = f"9000000009^^^&{partner.NHS_NUMBER_OID}&ISO"
    query = await cap.send("iti38", partner.find_documents(patient))
    write_pair("iti38", query, say)
    unknown = f"{NOT_IN_PANEL[0]}^^^&{partner.NHS_NUMBER_OID}&ISO"
    write_pair(
        "iti38-unknown-patient", await cap.send("iti38", partner.find_documents(unknown)), say
    )
    # ITI-39: the document ITI-38 advertised, then an unknown DocumentUniqueId.
    docs = [d for d in partner.documents_in(query.reply()) if d.unique_id]
    if not docs:
        raise SystemExit(
            "ITI-38 returned no document for 9000000009: the stack is not working end to end "
            "(see docs/partners/examples/iti38.response.xml and the services' logs)"
        )
    write_pair("iti39", await cap.send("iti39", partner.retrieve(docs[:1])), say)
    missing = partner.DocumentRef(
        unique_id=f"2.25.{uuid.UUID(int=1).int}",
        repository_unique_id=docs[0].repository_unique_id,
        home_community_id=docs[0].home_community_id,
    )
    write_pair("iti39-unknown-document", await cap.send("iti39", partner.retrieve([missing])), say)
    # SOAP faults.
    write_pair("fault-soap11", await cap.post("iti38", soap11_envelope()), say)
    body, _ = partner.envelope(
        "urn:ihe:iti:2007:RegistryStoredQueryX", partner.find_documents(patient), to=cap.base_url
    )
    write_pair("fault-unknown-action", await cap.post("iti38", body), say)
    body, _ = partner.envelope(partner.ACTIONS["iti38"], partner.find_documents(patient), to="x")
    write_pair("fault-no-message-id", await cap.post("iti38", without_message_id(body)), say)


@dataclass
class Outcome:
    nhs: str
    note: str
    pdq: str
    query: str
    retrieve: str


def _errors(reply: partner.Reply) -> str:
    codes = sorted({str(e.get("errorCode")) for e in reply.xpath("//rs:RegistryError")})
    return ", ".join(f"`{c}`" for c in codes)


async def outcome_for(cap: Capture, nhs: str, note: str) -> Outcome:
    pdq = (await cap.send("iti47", partner.pdq_query(nhs_number=nhs))).reply()
    ack = first(pdq, "//hl7:acknowledgement/hl7:typeCode/@code")
    code = first(pdq, "//hl7:queryAck/hl7:queryResponseCode/@code")
    returned = first(pdq, "//hl7:subject1/hl7:patient/hl7:id/@extension")
    pdq_text = f"{ack} / {code}"
    if returned and returned != nhs:
        pdq_text += f", returns {returned}"
    detail = first(pdq, "//hl7:acknowledgementDetail/hl7:code/@code")
    if detail:
        pdq_text += f" ({detail})"
    patient = f"{nhs}^^^&{partner.NHS_NUMBER_OID}&ISO"
    query = (await cap.send("iti38", partner.find_documents(patient))).reply()
    status = first(query, "//query:AdhocQueryResponse/@status").rsplit(":", 1)[-1]
    docs = [d for d in partner.documents_in(query) if d.unique_id]
    query_text = f"{status}, {len(docs)} document(s)"
    if errors := _errors(query):
        query_text = f"{status}: {errors}"
    retrieve_text = "n/a (nothing to retrieve)"
    if docs:
        got = (await cap.send("iti39", partner.retrieve(docs[:1]))).reply()
        rstatus = first(got, "//rs:RegistryResponse/@status").rsplit(":", 1)[-1]
        size = sum(len(d) for _, d in partner.retrieved_documents(got))
        retrieve_text = (
            f"{rstatus}, {size:,} bytes" if not _errors(got) else f"{rstatus}: {_errors(got)}"
        )
    return Outcome(nhs, note, pdq_text, query_text, retrieve_text)


async def capture_outcomes(cap: Capture, say: Callable[[str], None]) -> None:
    from xcagw_devstack.sandbox.panel import PANEL

    rows = [(p.nhs_number, p.demonstrates) for p in PANEL] + [NOT_IN_PANEL, INVALID]
    outcomes = [await outcome_for(cap, nhs, note) for nhs, note in rows]
    lines = [
        "<!-- Generated by scripts/docs_examples.py against the local stack. Do not edit: run "
        "`make docs-examples`. -->",
        "",
        "# Sandbox outcomes",
        "",
        "What each sandbox test patient produces through the gateway, as recorded by "
        "`make docs-examples` (ITI-47 by NHS number, ITI-38 FindDocuments, then ITI-39 of the "
        "first document). The patients themselves are described in "
        "[Sandbox test patients](../reference/sandbox-panel.md).",
        "",
        "| NHS number | ITI-47 ack / queryResponseCode | ITI-38 | ITI-39 | Patient |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        note = " ".join(o.note.split()).replace("|", "\\|")
        lines.append(f"| `{o.nhs}` | {o.pdq} | {o.query} | {o.retrieve} | {note} |")
    OUTCOMES.write_text("\n".join(lines) + "\n")
    say(f"wrote {OUTCOMES.relative_to(REPO)}")


async def run(url: str, say: Callable[[str], None]) -> None:
    for old in OUT.glob("*.xml") if OUT.exists() else []:
        old.unlink()
    async with httpx.AsyncClient(timeout=120) as client:
        cap = Capture(url, client)
        await capture_examples(cap, say)
        await capture_outcomes(cap, say)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="", help="soap-edge base URL of a running stack")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    if args.url:
        asyncio.run(run(args.url, say))
        return 0
    from xcagw_devstack.launcher import Stack

    with tempfile.TemporaryDirectory(prefix="xcagw-docs-") as tmp:
        stack = Stack(workdir=Path(tmp), free_ports=True, echo=False)
        say("starting the local stack on free ports")
        with stack:
            asyncio.run(run(stack.soap_edge_url, say))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
