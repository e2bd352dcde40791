"""Realistic XCA partner load on soap-edge: ITI-47 -> ITI-38 -> ITI-39, repeats and bad requests.

Run it against any stack whose patients are the NHS sandbox panel:

    locust -f tests-e2e/load/locustfile.py --headless -u 20 -r 5 -t 5m \
        --host http://127.0.0.1:8080 --csv out/load/load

(`make load` does this on a stack of its own via tests-e2e/load/run_load.py.)

Every request checks its answer, so a "failure" in the stats is an *unexpected* outcome: an error
where success was due, the wrong IHE error code, a non-SOAP body, a document whose bytes do not
match the advertised hash. Deliberately bad requests succeed when they get the right fault.
Throttling is expected under load and is not a failure: pds-adapter shares the NHS quota of 5 PDS
calls per second across the deployment, and queries, retrieves and PDQs need a PDS read (the
restriction check of issue #9) unless pds-adapter cached the patient in the last 60 s. A request
answered "busy" (XDSRegistryBusy / XDSRepositoryBusy, or HL7 AE/AE INTERR "busy") is counted
as a success and also reported as "<name> (throttled)", so the stats show how often it happens.

Environment: XCAGW_LOAD_PATIENTS (comma-separated NHS numbers; default: sandbox patients with a
GP record that no other e2e test needs as a cache miss), XCAGW_LOAD_XUA=0 to send no assertion.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from typing import Any

import httpx
from locust import HttpUser, between, events, task
from lxml import etree

from xcagw_devstack.partner import (
    ACTIONS,
    NHS_NUMBER_OID,
    DocumentRef,
    Reply,
    Requester,
    documents_in,
    envelope,
    find_documents,
    parse_reply,
    pdq_query,
    retrieve,
    retrieved_documents,
    xua_assertion,
)

# 9000000017 is left alone: test_e2e_traces needs its first ITI-38 to be a cache miss.
DEFAULT_PATIENTS = ("9000000009", "9000000068", "9000000114", "9000000122", "9000000033")
PATIENTS = tuple(
    p.strip() for p in os.environ.get("XCAGW_LOAD_PATIENTS", ",".join(DEFAULT_PATIENTS)).split(",")
)
# Valid Modulus 11, not on the sandbox panel: PDS answers 404.
UNKNOWN_PATIENT = "9000000173"
SEND_XUA = os.environ.get("XCAGW_LOAD_XUA", "1") != "0"
SOAP_CT = "application/soap+xml; charset=UTF-8"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
RIM = {"rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"}


class Unexpected(Exception):
    """The answer was not what a correct gateway gives."""


BUSY_CODES = frozenset({"XDSRegistryBusy", "XDSRepositoryBusy"})


def throttled(reply: Reply) -> bool:
    """The gateway said "busy, try again later" (the NHS PDS quota is used up), correctly."""
    if reply.status_code != 200:
        return False
    codes = {str(c) for c in reply.xpath("//rs:RegistryError/@errorCode")}
    if codes and codes <= BUSY_CODES:
        return True
    ack = _one(reply, "//hl7:acknowledgement/hl7:typeCode/@code")
    detail = _one(reply, "//hl7:acknowledgementDetail/hl7:code/@code")
    text = _one(reply, "//hl7:acknowledgementDetail/hl7:text/text()")
    return ack == "AE" and detail == "INTERR" and "busy" in text.lower()


@dataclass
class Known:
    """What this simulated partner learned from its queries."""

    docs: dict[str, tuple[DocumentRef, str, int]] = field(default_factory=dict)


def _reply(resp: Any) -> Reply:
    """locust's requests-style response -> the partner client's parsed Reply."""
    return parse_reply(
        httpx.Response(resp.status_code, headers=dict(resp.headers), content=resp.content or b"")
    )


def _one(reply: Reply, path: str) -> str:
    found = reply.xpath(path)
    return str(found[0]) if found else ""


class XcaPartner(HttpUser):
    """One initiating gateway's user population: mostly repeat traffic, some first contacts."""

    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.known = Known()
        self.rng = random.Random()  # noqa: S311 - load mix, not security

    # ---- plumbing -------------------------------------------------------------------------
    def _post(self, transaction: str, body: etree._Element, name: str) -> Any:
        assertion = xua_assertion(Requester()) if SEND_XUA else None
        url = f"{(self.host or '').rstrip('/')}/{transaction}"
        payload, _ = envelope(ACTIONS[transaction], body, to=url, assertion=assertion)
        return self.client.post(
            f"/{transaction}",
            data=payload,
            headers={"Content-Type": SOAP_CT},
            name=name,
            catch_response=True,
        )

    def _check(self, resp: Any, check: Any) -> Any:
        """Run `check(reply)`; an exception marks the request as an unexpected failure."""
        reply: Reply | None = None
        try:
            reply = _reply(resp)
            result = check(reply)
        except Unexpected as exc:
            if reply is not None and throttled(reply):
                resp.success()
                _note(f"{resp.request_meta['name']} (throttled)")
                return None
            resp.failure(f"Unexpected: {exc}"[:300])
            return None
        except (etree.XMLSyntaxError, ValueError, IndexError) as exc:
            resp.failure(f"{type(exc).__name__}: {exc}"[:300])
            return None
        resp.success()
        return result

    # ---- the partner flow -----------------------------------------------------------------
    def pdq(self, nhs: str) -> None:
        def ok(reply: Reply) -> None:
            ack = _one(reply, "//hl7:acknowledgement/hl7:typeCode/@code")
            code = _one(reply, "//hl7:queryAck/hl7:queryResponseCode/@code")
            if reply.status_code != 200 or (ack, code) != ("AA", "OK"):
                raise Unexpected(f"HTTP {reply.status_code} ack={ack} queryResponse={code}")

        with self._post("iti47", pdq_query(nhs_number=nhs), "iti47 by NHS number") as resp:
            self._check(resp, ok)

    def query(self, nhs: str, name: str) -> None:
        cx = f"{nhs}^^^&{NHS_NUMBER_OID}&ISO"

        def ok(reply: Reply) -> None:
            status = _one(reply, "//query:AdhocQueryResponse/@status")
            if reply.status_code != 200 or status != SUCCESS:
                errors = reply.xpath("//rs:RegistryError/@errorCode")
                raise Unexpected(f"HTTP {reply.status_code} {status} {errors}")
            objects = reply.xpath("//rim:ExtrinsicObject")
            refs = documents_in(reply)
            if not refs:
                raise Unexpected("Success without a DocumentEntry")
            for obj, ref in zip(objects, refs, strict=True):
                sha1 = obj.xpath("rim:Slot[@name='hash']//rim:Value/text()", namespaces=RIM)
                size = obj.xpath("rim:Slot[@name='size']//rim:Value/text()", namespaces=RIM)
                if ref.unique_id and sha1 and size:
                    self.known.docs[nhs] = (ref, str(sha1[0]), int(size[0]))

        with self._post("iti38", find_documents(cx), name) as resp:
            self._check(resp, ok)

    def fetch(self, nhs: str, name: str) -> None:
        known = self.known.docs.get(nhs)
        if known is None:
            return
        ref, sha1, size = known

        def ok(reply: Reply) -> None:
            status = _one(reply, "//rs:RegistryResponse/@status")
            if reply.status_code != 200 or status != SUCCESS:
                errors = reply.xpath("//rs:RegistryError/@errorCode")
                raise Unexpected(f"HTTP {reply.status_code} {status} {errors}")
            if not reply.content_type.startswith("multipart/related"):
                raise Unexpected("ITI-39 answer is not MTOM")
            ((uid, data),) = retrieved_documents(reply)
            digest = hashlib.sha1(data, usedforsecurity=False).hexdigest()
            if uid != ref.unique_id or digest != sha1 or len(data) != size:
                raise Unexpected("retrieved bytes differ from the advertised hash/size")

        with self._post("iti39", retrieve([ref]), name) as resp:
            self._check(resp, ok)

    @task(3)
    def first_contact(self) -> None:
        """ITI-47 -> ITI-38 -> ITI-39, as a partner meeting the patient for the first time."""
        nhs = self.rng.choice(PATIENTS)
        self.pdq(nhs)
        self.query(nhs, "iti38 find documents")
        self.fetch(nhs, "iti39 retrieve")

    @task(4)
    def repeat_query(self) -> None:
        self.query(self.rng.choice(PATIENTS), "iti38 find documents (repeat)")

    @task(3)
    def retrieve_cached(self) -> None:
        if self.known.docs:
            self.fetch(self.rng.choice(list(self.known.docs)), "iti39 retrieve (cached)")

    @task(1)
    def demographics(self) -> None:
        """Demographic PDQ: PDS searches are rate limited (5/s for the deployment) by design."""

        def ok(reply: Reply) -> None:
            ack = _one(reply, "//hl7:acknowledgement/hl7:typeCode/@code")
            code = _one(reply, "//hl7:queryAck/hl7:queryResponseCode/@code")
            if reply.status_code != 200 or ack != "AA" or code not in ("OK", "NF"):
                raise Unexpected(f"HTTP {reply.status_code} ack={ack} queryResponse={code}")

        body = pdq_query(family="SMITH", given="Jane", birth_date="20101022", gender="F")
        with self._post("iti47", body, "iti47 demographics") as resp:
            self._check(resp, ok)

    @task(1)
    def unknown_patient(self) -> None:
        cx = f"{UNKNOWN_PATIENT}^^^&{NHS_NUMBER_OID}&ISO"

        def ok(reply: Reply) -> None:
            status = _one(reply, "//query:AdhocQueryResponse/@status")
            errors = [str(e) for e in reply.xpath("//rs:RegistryError/@errorCode")]
            if reply.status_code != 200 or status != FAILURE or errors != ["XDSUnknownPatientId"]:
                raise Unexpected(f"HTTP {reply.status_code} {status} {errors}")

        with self._post("iti38", find_documents(cx), "bad: unknown patient") as resp:
            self._check(resp, ok)

    @task(1)
    def malformed_xml(self) -> None:
        with self.client.post(
            "/iti38",
            data=b"<env:Envelope xmlns:env='http://www.w3.org/2003/05/soap-envelope'><env:Body>",
            headers={"Content-Type": SOAP_CT},
            name="bad: malformed XML",
            catch_response=True,
        ) as resp:
            self._check(resp, _expect_fault(400, "env:Sender"))

    @task(1)
    def wrong_endpoint(self) -> None:
        """An ITI-38 sent to the ITI-39 endpoint: wsa:ActionNotSupported, HTTP 400."""
        cx = f"{PATIENTS[0]}^^^&{NHS_NUMBER_OID}&ISO"
        url = f"{(self.host or '').rstrip('/')}/iti39"
        payload, _ = envelope(ACTIONS["iti38"], find_documents(cx), to=url)
        with self.client.post(
            "/iti39",
            data=payload,
            headers={"Content-Type": SOAP_CT},
            name="bad: action at the wrong endpoint",
            catch_response=True,
        ) as resp:
            self._check(resp, _expect_fault(400, "env:Sender", "wsa:ActionNotSupported"))


def _note(name: str) -> None:
    """An INFO entry in the stats (count only): how often something expected happened."""
    events.request.fire(  # type: ignore[no-untyped-call]
        request_type="INFO",
        name=name,
        response_time=0,
        response_length=0,
        exception=None,
        context={},
    )


def _expect_fault(status: int, code: str, subcode: str = "") -> Any:
    def ok(reply: Reply) -> None:
        got = _one(reply, "//env:Fault/env:Code/env:Value/text()")
        sub = _one(reply, "//env:Fault/env:Code/env:Subcode/env:Value/text()")
        if reply.status_code != status or got != code or (subcode and sub != subcode):
            raise Unexpected(f"HTTP {reply.status_code} fault {got} {sub}")

    return ok
