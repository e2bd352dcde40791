"""Conversion state shared by the header and the section builders."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from lxml import etree

from ccda_converter import cda
from ccda_converter.bundle import BundleIndex, Resource, as_list, text_of
from ccda_converter.codes import IDENTIFIER_SYSTEMS, RFC3986_OID, concept, is_oid
from ccda_converter.dates import sort_key, ts_of
from ccda_converter.model import ConvertOptions, CoverageCount
from ccda_converter.ns import PROTO_NSMAP, v3
from ccda_converter.template import E, Template

_NS = uuid.UUID("9f0c6a62-3c1e-5f57-9a55-2f1b6a1c7c11")

_VARIANT = {c: "89AB"[int(c, 16) & 3] for c in "0123456789ABCDEF"}

MAPPED = 3
NARRATIVE = 2
SKIPPED = 1


class Context:
    """Index, options, deterministic ids, narrative ids, coverage and warnings of one conversion."""

    def __init__(self, idx: BundleIndex, options: ConvertOptions, doc_ts: str, seed: str) -> None:
        self.idx = idx
        self.options = options
        self.doc_ts = doc_ts
        self.seed = seed
        self.warnings: list[str] = []
        self._disposition: dict[int, tuple[Resource, int, str]] = {}
        self._counters: dict[str, int] = {}
        self._dates: dict[str, None] = {}
        self._author_tpl: dict[tuple[str, bool], Template] = {}
        self._author_by_ref: dict[tuple[Any, bool], Template | None] = {}
        self.entry_ids: dict[str, str] = {}
        self.section_of: dict[int, str] = {}
        # Where the next Section is created (a <component> of the document body); None: detached.
        self.section_parent: cda.Element | None = None
        # Section key -> (label, text) notices from GP Connect Lists (warnings, emptyReason, notes).
        self.notices: dict[str, list[tuple[str, str]]] = {}

    # ---- ids ----------------------------------------------------------------------------------
    @property
    def seed(self) -> str:
        return self._seed

    @seed.setter
    def seed(self, value: str) -> None:
        self._seed = value
        # The keyed hash state after "<seed>|" is computed once; uid() copies it.
        self._hasher = hashlib.blake2b(digest_size=16, key=_NS.bytes)
        self._hasher.update((value + "|").encode())

    def uid(self, key: str) -> str:
        """Deterministic entry id: UUID v5 of the record identity and the resource key, so the
        same record gives the same ids on every run (CDA UUIDs are upper case)."""
        # A name-based UUID (RFC 4122 layout, version 5 bits) from BLAKE2b: cheaper than
        # uuid.uuid5 and just as stable.
        hasher = self._hasher.copy()
        hasher.update(key.encode())
        h = hasher.hexdigest().upper()
        return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"

    def entry_id(self, parent: cda.Element, res: Resource, suffix: str = "") -> str:
        value = self.entry_uid(res, suffix)
        cda.ii(parent, value)
        return value

    def entry_uid(self, res: Resource, suffix: str = "") -> str:
        """The deterministic entry id of a resource (``suffix`` for its sub-entries)."""
        value = self.uid(res.key + suffix)
        if not suffix:
            self.entry_ids[res.key] = value
        return value

    def narrative_id(self, prefix: str) -> str:
        n = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = n
        return f"{prefix}{n}"

    # codes.concept (memoised for the conversion by ``codes.concept_memo``).
    concept = staticmethod(concept)

    # ---- dates ----------------------------------------------------------------------------------
    def ts(self, value: Any) -> str | None:
        """to_ts, remembering every clinical date seen (``earliest``: serviceEvent low)."""
        if value.__class__ is not str:
            return None
        out = ts_of(value)
        if out is not None:
            self._dates[out] = None
        return out

    @property
    def earliest(self) -> str | None:
        """The earliest clinical date converted so far (offsets ignored; of equal ones, the first
        seen: the dict keeps insertion order and min() returns the first minimum)."""
        return min(self._dates, key=sort_key) if self._dates else None

    # ---- coverage ----------------------------------------------------------------------------
    def mark(self, res: Resource, level: int, reason: str = "") -> None:
        """Record how a resource was carried; the best disposition wins."""
        current = self._disposition.get(id(res))
        if current is None or level > current[1]:
            self._disposition[id(res)] = (res, level, reason)

    def mapped(self, res: Resource) -> None:
        self.mark(res, MAPPED)

    def narrative(self, res: Resource) -> None:
        self.mark(res, NARRATIVE)

    def skipped(self, res: Resource, reason: str) -> None:
        self.mark(res, SKIPPED, reason)

    def is_marked(self, res: Resource) -> bool:
        return id(res) in self._disposition

    def coverage(self) -> dict[str, CoverageCount]:
        out: dict[str, CoverageCount] = {}
        for res in self.idx.resources:
            count = out.get(res.rtype)
            if count is None:
                count = out[res.rtype] = CoverageCount(res.rtype)
            disp = self._disposition.get(id(res))
            if disp is None:
                count.skipped += 1
                count.skip_reasons.append("no mapping for this resource")
            elif disp[1] == MAPPED:
                count.mapped += 1
            elif disp[1] == NARRATIVE:
                count.narrative_only += 1
            else:
                count.skipped += 1
                count.skip_reasons.append(disp[2])
        return out

    def warn(self, message: str) -> None:
        """A conversion warning. Never put patient identifiers in it (resource keys are fine)."""
        self.warnings.append(message)

    # ---- people and organisations -----------------------------------------------------------
    def author(
        self,
        parent: cda.Element,
        ref: Any,
        time: str | None,
        context: Resource | None = None,
        before: cda.Element | None = None,
    ) -> None:
        """Author Participation (4.119) for a Practitioner/PractitionerRole/Organization reference.
        Left out when the reference does not resolve (dangling references are common in GP
        Connect captures). ``before``: insert before that child of ``parent``."""
        timed = bool(time)
        ref_text = ref.get("reference") if isinstance(ref, dict) else ref
        # Absolute and relative references resolve the same from any context: memoise them.
        cacheable = isinstance(ref_text, str) and not ref_text.startswith("#")
        tpl = self._author_by_ref.get((ref_text, timed)) if cacheable else None
        if tpl is None:
            if cacheable and (ref_text, timed) in self._author_by_ref:
                return  # known not to resolve to an author
            tpl = self._author_template(ref, context, timed)
            if cacheable:
                self._author_by_ref[(ref_text, timed)] = tpl
            if tpl is None:
                return
        author = tpl.stamp_root(parent, {"time": time} if timed else None)
        if before is not None:
            before.addprevious(author)

    def _author_template(self, ref: Any, context: Resource | None, timed: bool) -> Template | None:
        target = self.idx.resolve(ref, context)
        if target is None:
            return None
        if target.rtype == "PractitionerRole":
            practitioner = self.idx.resolve(target.data.get("practitioner"), target)
            if practitioner is None:
                return None
            target = practitioner
        if target.rtype not in ("Practitioner", "Organization"):
            return None
        tpl = self._author_tpl.get((target.key, timed))
        if tpl is None:
            tpl = self._author_tpl[(target.key, timed)] = Template(
                E.author(
                    E.templateId(root="2.16.840.1.113883.10.20.22.4.119"),
                    E.time(value="$time") if timed else E.time(nullFlavor="UNK"),
                ),
                tail=(self._assigned_author(target),),
            )
        return tpl

    def _assigned_author(self, target: Resource) -> cda.Element:
        """assignedAuthor for a practitioner or organisation, built once per conversion."""
        holder = etree.Element(v3("holder"), nsmap=PROTO_NSMAP)
        assigned = cda.sub(holder, "assignedAuthor")
        self.identifiers(assigned, target.data, target.key)
        if target.rtype == "Practitioner":
            person = cda.sub(assigned, "assignedPerson")
            self.person_name(person, first_name(target.data))
        else:
            org = cda.sub(assigned, "representedOrganization")
            self.identifiers(org, target.data, target.key)
            name = text_of(target.data.get("name"))
            if name:
                cda.text_el(org, "name", name)
        return assigned

    def identifiers(
        self, parent: cda.Element, data: dict[str, Any], key: str, local: str = "id"
    ) -> int:
        """CDA ids for FHIR identifiers (mappingGuidance): known system -> OID, urn:oid: -> root,
        UUID -> upper-case root, other URL -> 2.16.840.1.113883.4.873 with system/value.
        Falls back to a deterministic UUID of the resource."""
        count = 0
        for ident in as_list(data.get("identifier")):
            if not isinstance(ident, dict):
                continue
            value = text_of(ident.get("value"))
            system = text_of(ident.get("system"))
            if not value:
                continue
            root = IDENTIFIER_SYSTEMS.get(system)
            if root:
                cda.ii(parent, root, value, local)
            elif system.startswith("urn:oid:") and is_oid(system[8:]):
                cda.ii(parent, system[8:], value, local)
            elif system in (
                "urn:ietf:rfc:3986",
                "https://tools.ietf.org/html/rfc4122",
            ) and _is_uuid(value):
                cda.ii(parent, _uuid_root(value), None, local)
            elif system:
                cda.ii(parent, RFC3986_OID, f"{system}/{value}", local)
            else:
                continue
            count += 1
        if count == 0:
            cda.ii(parent, self.uid(key), None, local)
            count = 1
        return count

    def person_name(
        self, parent: cda.Element, name: dict[str, Any] | None, fielded: bool = True
    ) -> None:
        """A PN/PTN: prefix, given, family, suffix. PTN.US.FIELDED needs given and family
        (CONF:81-7157, 81-7159): a missing part gets a nullFlavor rather than free text."""
        el = cda.sub(parent, "name")
        if not isinstance(name, dict):
            if fielded:
                cda.fixed(el, "given", {"nullFlavor": "UNK"})
                cda.fixed(el, "family", {"nullFlavor": "UNK"})
            return
        use = text_of(name.get("use"))
        if use in ("official", "usual"):
            el.set("use", "L")
        elif use == "nickname":
            el.set("use", "P")
        for prefix in as_list(name.get("prefix")):
            if isinstance(prefix, str) and prefix.strip():
                cda.text_el(el, "prefix", prefix.strip())
        givens = [g.strip() for g in as_list(name.get("given")) if isinstance(g, str) and g.strip()]
        family = text_of(name.get("family"))
        text = text_of(name.get("text"))
        if not givens and not family and text:
            parts = text.replace(",", " ").split()
            if len(parts) >= 2:
                givens, family = parts[:-1], parts[-1]
            elif parts:
                family = parts[0]
        for given in givens:
            cda.text_el(el, "given", given)
        if not givens and fielded:
            cda.fixed(el, "given", {"nullFlavor": "UNK"})
        if family:
            cda.text_el(el, "family", family)
        elif fielded:
            cda.fixed(el, "family", {"nullFlavor": "UNK"})
        for suffix in as_list(name.get("suffix")):
            if isinstance(suffix, str) and suffix.strip():
                cda.text_el(el, "suffix", suffix.strip())

    def address(self, parent: cda.Element, addr: Any) -> None:
        """US Realm Address (AD.US.FIELDED) for a UK address: 1-4 street lines, city, postcode,
        country GB (ccda-requirements section 1; state only required for US addresses)."""
        if not isinstance(addr, dict):
            cda.fixed(parent, "addr", {"nullFlavor": "UNK"})
            return
        el = cda.sub(parent, "addr")
        use = text_of(addr.get("use"))
        code = {"home": "H", "work": "WP", "temp": "TMP", "old": "OLD"}.get(use)
        if code:
            el.set("use", code)
        lines = [x.strip() for x in as_list(addr.get("line")) if isinstance(x, str) and x.strip()]
        if len(lines) > 4:
            lines = [*lines[:3], ", ".join(lines[3:])]
        if not lines:
            cda.fixed(el, "streetAddressLine", {"nullFlavor": "UNK"})
        for line in lines:
            cda.text_el(el, "streetAddressLine", line)
        city = text_of(addr.get("city")) or text_of(addr.get("district"))
        if city:
            cda.text_el(el, "city", city)
        else:
            cda.fixed(el, "city", {"nullFlavor": "UNK"})
        district = text_of(addr.get("district"))
        if district and district != city:
            cda.text_el(el, "county", district)
        postcode = text_of(addr.get("postalCode"))
        if postcode:
            cda.text_el(el, "postalCode", postcode)
        cda.text_el(el, "country", "GB")

    def telecoms(
        self, parent: cda.Element, data: dict[str, Any], required: bool = True, single: bool = False
    ) -> None:
        """telecom elements (tel:/mailto:/fax: URLs); nullFlavor UNK when none and required."""
        count = 0
        for tel in as_list(data.get("telecom")):
            if not isinstance(tel, dict):
                continue
            value = text_of(tel.get("value"))
            if not value:
                continue
            system = text_of(tel.get("system"))
            scheme = {"email": "mailto:", "fax": "fax:", "url": ""}.get(system, "tel:")
            url = value if scheme == "" else scheme + "".join(value.split())
            attrib = {"value": url}
            use = {"home": "HP", "work": "WP", "mobile": "MC", "temp": "TMP"}.get(
                text_of(tel.get("use"))
            )
            if use:
                attrib["use"] = use
            cda.sub(parent, "telecom", attrib)
            count += 1
            if single:
                return
        if count == 0 and required:
            cda.fixed(parent, "telecom", {"nullFlavor": "UNK"})


def first_name(data: dict[str, Any]) -> dict[str, Any] | None:
    """The name to show: official, else usual, else the first (GP data may lack official)."""
    names = [n for n in as_list(data.get("name")) if isinstance(n, dict)]
    for use in ("official", "usual"):
        for n in names:
            if n.get("use") == use:
                return n
    return names[0] if names else None


def name_text(name: dict[str, Any] | None) -> str:
    """'Miss Nichole Gilbert' for narrative."""
    if not isinstance(name, dict):
        return ""
    text = text_of(name.get("text"))
    if text:
        return text
    parts = [p for p in as_list(name.get("prefix")) if isinstance(p, str)]
    parts += [g for g in as_list(name.get("given")) if isinstance(g, str)]
    family = text_of(name.get("family"))
    if family:
        parts.append(family)
    return " ".join(p.strip() for p in parts if p.strip())


def _is_uuid(value: str) -> bool:
    value = value.removeprefix("urn:uuid:")
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def _uuid_root(value: str) -> str:
    return str(uuid.UUID(value.removeprefix("urn:uuid:"))).upper()
