"""The document pipeline behind ITI-38 and ITI-39: PDS check -> GP Connect -> C-CDA -> Redis, once.

One stored snapshot per patient at a time. Concurrent requests for the same patient share one
generation (a Redis lock), so the GP record is fetched once per miss (Xhuma fetched it twice).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import re
import time
import uuid

from soap_edge.backends import BackendFailure, Backends, FailureKind
from soap_edge.cache import TtlCache
from soap_edge.config import Settings
from soap_edge.metrics import DOCUMENTS_GENERATED
from soap_edge.soap.ns import HL7, q
from soap_edge.soap.parsing import XmlRejected, parse_untrusted
from soap_edge.store import DocumentRecord, Store
from soap_edge.xds import entry_uuid_for
from xcagw.common.v1 import common_pb2
from xcagw.pds.v1 import pds_adapter_pb2
from xcagw_common.logging import pseudonymise
from xcagw_common.metrics import CACHE_REQUESTS

log = logging.getLogger(__name__)

DEFAULT_TITLE = "GP Connect summary (CCD)"
# An XDS uniqueId OID: dotted numbers, no leading zeros (ITI TF-3 4.2.3.2.26), at most 64 chars.
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
# HL7 TS: yyyy[mm[dd[hh[mm[ss[.f]]]]]][+/-zzzz]
_TS = re.compile(r"^(\d{4,14})(?:\.\d+)?([+-]\d{4})?$")
_POLL_SECONDS = 0.05


def xds_unique_id(cda_document_id: str) -> str:
    """The XDS uniqueId for a C-CDA id `root^extension`: the CDA id when it fits (TF-3 4.2.3.2.26).

    `OID^extension` needs a root of at most 64 characters and an extension of at most 16; a UUID
    extension or root becomes its 2.25 OID (ITU-T X.667); anything else gets a fresh 2.25 OID.
    """
    root, _, ext = cda_document_id.partition("^")
    for candidate in (ext, root):
        try:
            return f"2.25.{uuid.UUID(candidate).int}"
        except ValueError:
            continue
    if _OID.match(root) and len(root) <= 64:
        if not ext:
            return root
        if len(ext) <= 16 and ext.isalnum() and len(root) + 1 + len(ext) <= 64:
            return f"{root}^{ext}"
    return f"2.25.{uuid.uuid4().int}"


def hl7_ts_to_dtm(value: str) -> str:
    """HL7 TS -> XDS DTM in UTC (ITI TF-3 Table 4.2.3.1.7-2), or "" if it cannot be read.

    serviceStartTime/serviceStopTime are R2, "required if known" (ITI TF-3 4.3.1), so a TS that is
    not a real instant (29 February of a common year, month 13) yields "" and the entry goes
    without it: the document is still stored and served, and no query fails on it.
    """
    match = _TS.match(value.strip())
    if not match:
        return ""
    digits, zone = match.groups()
    if len(digits) % 2:
        # TS precisions are YYYY, then two digits per unit: an odd length is not a TS.
        return ""
    parts = [int(digits[:4])] + [int(digits[i : i + 2]) for i in range(4, len(digits), 2)]
    # Missing units at their smallest, only so that the given ones can be validated.
    year, month, day, hour, minute, second = parts + [1, 1, 0, 0, 0][len(parts) - 1 :]
    try:
        stamp = dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return ""
    if not zone or len(digits) < 12:
        return digits
    hours, minutes = int(zone[1:3]), int(zone[3:5])
    if hours > 23 or minutes > 59:
        return ""
    offset = dt.timedelta(hours=hours, minutes=minutes)
    try:
        utc = stamp - offset if zone[0] == "+" else stamp + offset
    except OverflowError:
        # Shifted out of datetime's range (year 1 or 9999): not a document's service time.
        return ""
    # Formatted by hand: strftime's %Y does not zero-pad years before 1000 on glibc.
    out = f"{utc.year:04d}{utc.month:02d}{utc.day:02d}{utc.hour:02d}{utc.minute:02d}"
    return out + digits[12:14] if len(digits) >= 14 else out


def _ccd_facts(ccd: bytes, max_depth: int) -> tuple[str, str, str]:
    """(title, serviceStartTime, serviceStopTime) from the CCD header (C-CDA R2.1 §1.1)."""
    try:
        root = parse_untrusted(ccd, max_bytes=len(ccd) + 1, max_depth=max_depth * 4)
    except XmlRejected:
        return "", "", ""
    title = " ".join((root.findtext(q(HL7, "title")) or "").split())
    eff = root.find(
        f"{q(HL7, 'documentationOf')}/{q(HL7, 'serviceEvent')}/{q(HL7, 'effectiveTime')}"
    )
    start = stop = ""
    if eff is not None:
        low, high = eff.find(q(HL7, "low")), eff.find(q(HL7, "high"))
        start = hl7_ts_to_dtm(low.get("value", "")) if low is not None else ""
        stop = hl7_ts_to_dtm(high.get("value", "")) if high is not None else ""
    return title[:256], start, stop


_GENDER = {"male": "M", "female": "F", "other": "U", "unknown": "U"}


def _name_parts(patient: pds_adapter_pb2.Patient) -> tuple[str, str]:
    # PDS INT records often have only a "usual" name: prefer official, fall back to the first.
    names = sorted(patient.names, key=lambda n: n.use != "official")
    if not names:
        return "", ""
    return names[0].family, "&".join(names[0].given[:1])


class DocumentService:
    """Get the patient's current C-CDA from Redis, or build and store it exactly once."""

    def __init__(self, settings: Settings, store: Store, backends: Backends) -> None:
        self.settings = settings
        self.store = store
        self.backends = backends
        # Passed restriction checks (issue #9) by NHS number, reused for pds_check_cache_seconds
        # when serving stored data (issue #11: a gRPC round trip to pds-adapter per cached
        # query). Safe because pds-adapter itself answers an unrestricted patient from its 60 s
        # PDS read cache (pds_adapter/servicer.py), so a restriction made at PDS already takes
        # up to a minute to be seen; this adds at most a few seconds to that. Refusals
        # (restricted, unknown) and failures are never cached, and a document is never built
        # on a cached check (current_or_generate asks PDS afresh on a miss).
        self._checked: TtlCache[str, pds_adapter_pb2.Patient] = TtlCache(
            settings.pds_check_cache_seconds, max_entries=50_000
        )

    async def check_patient(
        self, ctx: common_pb2.RequestContext, nhs_number: str, *, fresh: bool = False
    ) -> pds_adapter_pb2.Patient:
        """PDS lookup before anything is advertised or fetched; restricted -> BackendFailure.

        A check passed in the last pds_check_cache_seconds is reused unless `fresh`.
        """
        if not fresh:
            passed = self._checked.get(nhs_number)
            if passed is not None:
                return passed
        patient = await self.backends.get_patient(ctx, nhs_number)
        self._checked.put(nhs_number, patient)
        return patient

    async def disclosable(self, ctx: common_pb2.RequestContext, nhs_number: str) -> bool:
        """Whether stored data about this patient may be shown: PDS knows the patient and the
        record is not restricted now. Other failures (PDS down) propagate."""
        try:
            await self.check_patient(ctx, nhs_number)
        except BackendFailure as failure:
            if failure.kind in (FailureKind.RESTRICTED, FailureKind.NOT_FOUND):
                return False
            raise
        return True

    async def current_or_generate(
        self, ctx: common_pb2.RequestContext, nhs_number: str
    ) -> DocumentRecord:
        """The stored snapshot, or a new one. Raises BackendFailure or redis errors.

        PDS is asked also when a snapshot is stored: a patient restricted (R/V/S) since the
        snapshot was made must not get it disclosed from the cache (issue #9). A stored snapshot
        may be served on a check passed in the last pds_check_cache_seconds; a miss always asks
        PDS afresh, before GP Connect is called.
        """
        passed = self._checked.get(nhs_number)
        if passed is None:
            patient = await self.check_patient(ctx, nhs_number, fresh=True)
        else:
            patient = passed
        existing = await self.store.current_document(nhs_number)
        if existing is not None:
            CACHE_REQUESTS.labels("ccd", "hit").inc()
            return existing
        CACHE_REQUESTS.labels("ccd", "miss").inc()
        if passed is not None:
            patient = await self.check_patient(ctx, nhs_number, fresh=True)
        deadline = time.monotonic() + self.settings.generation_lock_seconds
        while True:
            token = await self.store.acquire_generation_lock(nhs_number)
            if token is not None:
                try:
                    # Another request may have finished between our miss and the lock.
                    existing = await self.store.current_document(nhs_number)
                    if existing is not None:
                        return existing
                    try:
                        doc = await self._generate(ctx, nhs_number, patient)
                    except BackendFailure as failure:
                        # Waiters share this outcome rather than each retrying GP Connect
                        # serially, past their partners' deadlines.
                        await self.store.record_generation_failure(
                            nhs_number, f"{failure.service}|{failure.kind.value}"
                        )
                        raise
                    await self.store.clear_generation_failure(nhs_number)
                    return doc
                finally:
                    await self.store.release_generation_lock(nhs_number, token)
            # Someone else is generating: wait for their result instead of calling GP Connect again.
            waited = False
            while await self.store.generation_locked(nhs_number):
                waited = True
                if time.monotonic() > deadline:
                    raise BackendFailure("soap-edge", FailureKind.BUSY)
                await asyncio.sleep(_POLL_SECONDS)
            existing = await self.store.current_document(nhs_number)
            if existing is not None:
                return existing
            failed = await self.store.generation_failure(nhs_number) if waited else None
            if failed is not None:
                service, _, kind = failed.partition("|")
                raise BackendFailure(service, FailureKind(kind))
            if time.monotonic() > deadline:
                raise BackendFailure("soap-edge", FailureKind.BUSY)

    async def _generate(
        self, ctx: common_pb2.RequestContext, nhs_number: str, patient: pds_adapter_pb2.Patient
    ) -> DocumentRecord:
        # Restricted records never reach GP Connect (Xhuma's rule, nhs-apis §1.6): `patient`
        # passed the PDS check in current_or_generate.
        current = patient.nhs_number or nhs_number
        record = await self.backends.structured_record(ctx, current)
        converted = await self.backends.convert(ctx, record.bundle_json)
        content = converted.ccd_xml
        unique_id = xds_unique_id(converted.document_id)
        title, start, stop = _ccd_facts(content, self.settings.max_xml_depth)
        family, given = _name_parts(patient)
        doc = DocumentRecord(
            unique_id=unique_id,
            entry_uuid=entry_uuid_for(unique_id),
            nhs_number=current,
            # ITI TF-3 4.2.3.2.10/.18: SHA-1 and size of exactly the bytes ITI-39 returns.
            hash=hashlib.sha1(content, usedforsecurity=False).hexdigest(),
            size=len(content),
            creation_time=dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S"),
            title=title or DEFAULT_TITLE,
            content=content,
            service_start=start,
            service_stop=stop,
            gp_ods_code=record.ods_code or patient.gp_ods_code,
            family=family,
            given=given,
            birth_date=patient.birth_date.replace("-", ""),
            gender=_GENDER.get(patient.gender, ""),
            cda_id=converted.document_id,
        )
        await self.store.save_document(doc, also_for=(nhs_number,))
        DOCUMENTS_GENERATED.inc()
        log.info(
            "document generated",
            extra={
                "ecs": {"xcagw.patient": pseudonymise(current), "xcagw.document.size": doc.size}
            },
        )
        return doc
