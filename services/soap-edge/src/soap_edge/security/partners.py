"""The partner registry: who may call us, with which certificate, SAML issuer and limits.

Loaded once at start-up from a YAML or JSON file (`SOAP_EDGE_PARTNERS_FILE`); a change needs a
restart (or a rolling restart of the replicas), so every replica always applies one reviewed
configuration. Certificates may be given as a path (relative to the file) or inline PEM.

Format (YAML shown; JSON has the same structure)::

    anonymous_partner: dev          # optional: partner for requests WITHOUT a client certificate
                                    # (only for development, never with mTLS required)
    partners:
      - id: nhn-test                # [A-Za-z0-9_.-]{1,64}; used in logs and metric labels
        name: Norsk Helsenett test  # free text
        client_certificates:        # the TLS client certificate(s) this partner connects with
          - sha256: "3F:2A:...:9C"  # SHA-256 fingerprint of the DER certificate (preferred)
          - subject: "CN=xca.partner.example,O=Partner,C=NO"   # RFC 4514; with `issuer` too
            issuer: "CN=Partner CA,O=Partner,C=NO"             # when several CAs are trusted
        home_community_ids: ["urn:oid:2.16.578.1.12.4.1.7.1.1"]
        transactions: [ITI-38, ITI-39, ITI-47, ITI-55]          # omitted = all
        saml:
          required: true            # false: an assertion is verified when present, else allowed
          verify: true              # false (development only): read attributes unverified
          issuer_certificates: [certs/helseid-saml.pem]        # pinned issuer certificates
          issuers: ["https://helseid-xdssaml.test.nhn.no"]     # optional saml:Issuer allow-list
          audiences: ["nhn:dokumentdeling-saml"]               # added to the global audiences
          subject_confirmation_methods: [bearer]               # bearer and/or holder-of-key
          purposes_of_use: [TREATMENT, TREAT]
          required_attributes: [subject-id, organization, organization-id, role,
                                purpose-of-use, home-community-id]
          check_resource_id: true   # resource-id, when present, must name the queried patient
        rate_limit: {per_second: 20, burst: 40}                # whole partner
        transaction_rate_limits:                               # optional, per transaction
          ITI-39: {per_second: 5, burst: 10}
        async_reply_to: ["https://xca.partner.example/replies/"]   # ReplyTo allow-list

Matching a certificate: a `sha256` entry matches that exact certificate; a `subject` entry
matches the subject Name (and the issuer Name when given). The TLS layer (uvicorn with a client
CA bundle, or an ingress) has already verified the chain; this registry only says *which*
partner a verified certificate belongs to.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# IHE transaction ids the gateway answers (ihe-xca-rules §1.3), incl. the XDS aliases.
KNOWN_TRANSACTIONS = frozenset({"ITI-18", "ITI-38", "ITI-39", "ITI-43", "ITI-47", "ITI-55"})

BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
HOLDER_OF_KEY = "urn:oasis:names:tc:SAML:2.0:cm:holder-of-key"
_CONFIRMATION_ALIASES = {"bearer": BEARER, "holder-of-key": HOLDER_OF_KEY}

# Short names of the XUA attributes a partner policy can require (xua.py maps them to the
# ITI-40 attribute names).
XUA_ATTRIBUTES = frozenset(
    {
        "subject-id",
        "organization",
        "organization-id",
        "role",
        "purpose-of-use",
        "home-community-id",
        "resource-id",
        "npi",
    }
)
DEFAULT_REQUIRED_ATTRIBUTES = (
    "subject-id",
    "organization",
    "organization-id",
    "role",
    "purpose-of-use",
    "home-community-id",
)
_PARTNER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class PartnerConfigError(ValueError):
    """The partners file is unreadable or invalid (start-up fails with this message)."""


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, lowercase hex without separators."""
    from cryptography.hazmat.primitives.serialization import Encoding

    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def normalise_fingerprint(value: str) -> str:
    cleaned = re.sub(r"[\s:]", "", value).lower()
    if not _HEX.fullmatch(cleaned):
        raise ValueError("sha256 must be 64 hex digits (colons allowed)")
    return cleaned


def normalise_hcid(value: str) -> str:
    """homeCommunityId in `urn:oid:` form (partners and assertions also send the bare OID)."""
    value = value.strip()
    if not value:
        return ""
    return value if value.lower().startswith("urn:") else f"urn:oid:{value}"


class RateLimit(BaseModel):
    """GCRA parameters: `per_second` sustained, bursts of up to `burst` requests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_second: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)


class CertificateMatch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str | None = None
    subject: str | None = None
    issuer: str | None = None

    @field_validator("sha256")
    @classmethod
    def _fp(cls, value: str | None) -> str | None:
        return normalise_fingerprint(value) if value else None

    @field_validator("subject", "issuer")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value:
            try:
                x509.Name.from_rfc4514_string(value)
            except ValueError as exc:
                raise ValueError(f"not an RFC 4514 name: {value!r}") from exc
        return value or None

    @model_validator(mode="after")
    def _one_of(self) -> CertificateMatch:
        if not self.sha256 and not self.subject:
            raise ValueError("a client certificate entry needs sha256 or subject")
        return self

    def matches(self, cert: x509.Certificate, cert_fingerprint: str) -> bool:
        if self.sha256 and self.sha256 != cert_fingerprint:
            return False
        if self.subject and x509.Name.from_rfc4514_string(self.subject) != cert.subject:
            return False
        return not (self.issuer and x509.Name.from_rfc4514_string(self.issuer) != cert.issuer)


class SamlPolicy(BaseModel):
    """How this partner's XUA assertions are checked (ihe-xca-rules §10.1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    required: bool = True
    # Development only (refused unless SOAP_EDGE_ALLOW_INSECURE_DEV_PARTNERS): read the
    # attributes of an assertion without verifying it, e.g. the unsigned one of the e2e partner.
    verify: bool = True
    issuer_certificates: list[str] = Field(default_factory=list)
    issuers: list[str] = Field(default_factory=list)
    audiences: list[str] = Field(default_factory=list)
    subject_confirmation_methods: list[str] = Field(default_factory=lambda: [BEARER])
    purposes_of_use: list[str] = Field(default_factory=lambda: ["TREATMENT", "TREAT"])
    required_attributes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REQUIRED_ATTRIBUTES)
    )
    check_resource_id: bool = True

    @field_validator("subject_confirmation_methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        out = [_CONFIRMATION_ALIASES.get(v, v) for v in value]
        unknown = set(out) - {BEARER, HOLDER_OF_KEY}
        if unknown or not out:
            raise ValueError("subject_confirmation_methods: bearer and/or holder-of-key")
        return out

    @field_validator("required_attributes")
    @classmethod
    def _attrs(cls, value: list[str]) -> list[str]:
        unknown = set(value) - XUA_ATTRIBUTES
        if unknown:
            known = sorted(XUA_ATTRIBUTES)
            raise ValueError(f"unknown XUA attributes {sorted(unknown)}; use {known}")
        return value

    @field_validator("purposes_of_use")
    @classmethod
    def _purposes(cls, value: list[str]) -> list[str]:
        return [v.strip().upper() for v in value if v.strip()]


class PartnerModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str = ""
    client_certificates: list[CertificateMatch] = Field(default_factory=list)
    home_community_ids: list[str] = Field(default_factory=list)
    transactions: list[str] = Field(default_factory=lambda: sorted(KNOWN_TRANSACTIONS))
    saml: SamlPolicy = Field(default_factory=SamlPolicy)
    rate_limit: RateLimit | None = None
    transaction_rate_limits: dict[str, RateLimit] = Field(default_factory=dict)
    async_reply_to: list[str] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _PARTNER_ID.fullmatch(value):
            raise ValueError("partner id must match [A-Za-z0-9_.-]{1,64}")
        return value

    @field_validator("home_community_ids")
    @classmethod
    def _hcids(cls, value: list[str]) -> list[str]:
        return [normalise_hcid(v) for v in value if v.strip()]

    @field_validator("transactions")
    @classmethod
    def _txns(cls, value: list[str]) -> list[str]:
        unknown = set(value) - KNOWN_TRANSACTIONS
        if unknown:
            raise ValueError(f"unknown transactions {sorted(unknown)}")
        return value

    @field_validator("transaction_rate_limits")
    @classmethod
    def _txn_limits(cls, value: dict[str, RateLimit]) -> dict[str, RateLimit]:
        unknown = set(value) - KNOWN_TRANSACTIONS
        if unknown:
            raise ValueError(f"unknown transactions in transaction_rate_limits {sorted(unknown)}")
        return value

    @field_validator("async_reply_to")
    @classmethod
    def _https(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not entry.lower().startswith("https://"):
                raise ValueError("async_reply_to entries must be https URLs")
        return value


class RegistryModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anonymous_partner: str | None = None
    partners: list[PartnerModel] = Field(default_factory=list)


@dataclass(frozen=True)
class Partner:
    """One partner, with its issuer certificates loaded."""

    config: PartnerModel
    issuer_certificates: tuple[x509.Certificate, ...]

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def saml(self) -> SamlPolicy:
        return self.config.saml

    @property
    def home_community_ids(self) -> frozenset[str]:
        return frozenset(self.config.home_community_ids)

    def allows(self, transaction: str) -> bool:
        return transaction in self.config.transactions

    def issuer_fingerprints(self) -> dict[str, x509.Certificate]:
        return {fingerprint(c): c for c in self.issuer_certificates}


class PartnerRegistry:
    """Partners by id and the lookup from a verified client certificate."""

    def __init__(self, partners: Iterable[Partner], anonymous_partner: str | None = None) -> None:
        self._by_id: dict[str, Partner] = {}
        for partner in partners:
            if partner.id in self._by_id:
                raise PartnerConfigError(f"duplicate partner id {partner.id!r}")
            self._by_id[partner.id] = partner
        if anonymous_partner is not None and anonymous_partner not in self._by_id:
            raise PartnerConfigError(f"anonymous_partner {anonymous_partner!r} is not defined")
        self.anonymous_partner_id = anonymous_partner
        self._check_overlaps()

    def _check_overlaps(self) -> None:
        seen: dict[str, str] = {}
        for partner in self._by_id.values():
            for match in partner.config.client_certificates:
                if match.sha256:
                    other = seen.setdefault(match.sha256, partner.id)
                    if other != partner.id:
                        raise PartnerConfigError(
                            f"certificate {match.sha256[:16]}... is registered for both "
                            f"{other!r} and {partner.id!r}"
                        )

    @classmethod
    def empty(cls) -> PartnerRegistry:
        return cls([])

    @classmethod
    def load(cls, path: str | Path) -> PartnerRegistry:
        """Read a YAML (.yaml/.yml) or JSON file; raises PartnerConfigError."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise PartnerConfigError(f"cannot read partners file {file}: {exc}") from exc
        data: Any
        try:
            if file.suffix.lower() in (".yaml", ".yml"):
                import yaml  # type: ignore[import-untyped,unused-ignore]

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # noqa: BLE001 - any parse error is a config error
            raise PartnerConfigError(f"partners file {file} is not valid: {exc}") from exc
        return cls.from_mapping(data or {}, base_dir=file.parent)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base_dir: Path) -> PartnerRegistry:
        try:
            model = RegistryModel.model_validate(data)
        except ValueError as exc:
            raise PartnerConfigError(f"invalid partner registry: {exc}") from exc
        partners = [
            Partner(p, tuple(_load_certs(p.saml.issuer_certificates, base_dir, p.id)))
            for p in model.partners
        ]
        return cls(partners, model.anonymous_partner)

    def insecure_settings(self) -> list[str]:
        """What in this registry is only acceptable in development (empty in production)."""
        problems = []
        if self.anonymous_partner_id is not None:
            problems.append(f"anonymous_partner {self.anonymous_partner_id!r}")
        problems += [f"partner {p.id!r} saml.verify false" for p in self if not p.saml.verify]
        return problems

    def get(self, partner_id: str) -> Partner | None:
        return self._by_id.get(partner_id)

    @property
    def anonymous_partner(self) -> Partner | None:
        if self.anonymous_partner_id is None:
            return None
        return self._by_id[self.anonymous_partner_id]

    def __iter__(self) -> Iterator[Partner]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def match_certificate(self, cert: x509.Certificate) -> Partner | None:
        """The partner a verified client certificate belongs to; fingerprints win over names."""
        fp = fingerprint(cert)
        by_name: list[Partner] = []
        for partner in self._by_id.values():
            for match in partner.config.client_certificates:
                if match.sha256 and match.matches(cert, fp):
                    return partner
                if not match.sha256 and match.matches(cert, fp):
                    by_name.append(partner)
        # Two partners claiming the same subject would make the identity ambiguous: refuse.
        return by_name[0] if len({p.id for p in by_name}) == 1 else None


def _load_certs(entries: list[str], base_dir: Path, partner_id: str) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for entry in entries:
        if "-----BEGIN CERTIFICATE-----" in entry:
            pem = entry.encode("ascii")
        else:
            path = Path(entry)
            if not path.is_absolute():
                path = base_dir / path
            try:
                pem = path.read_bytes()
            except OSError as exc:
                raise PartnerConfigError(
                    f"partner {partner_id!r}: cannot read issuer certificate {path}: {exc}"
                ) from exc
        try:
            certs.extend(x509.load_pem_x509_certificates(pem))
        except ValueError as exc:
            raise PartnerConfigError(
                f"partner {partner_id!r}: issuer certificate is not PEM: {exc}"
            ) from exc
    return certs
