"""Security failures, each a specific exception that maps to one SOAP fault.

WS-Security 1.1 SOAP Message Security §12 (Table 4/5) defines the fault codes; with SOAP 1.2 they
go in `env:Code/env:Subcode/env:Value` under `env:Sender` (ihe-xca-rules §2: "XUA failure ->
Fault with WS-Security code"). Reasons are what the partner sees: they say which check failed so
an integrator can fix their side, but never echo assertion content, certificate details,
signature internals or patient data (ihe-xca-rules §2: "no details that help an attacker").
`metric_reason` is a bounded label for `xcagw_security_rejections_total`.
"""

from __future__ import annotations

from typing import ClassVar

WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"

# WS-Security 1.1 §12: "An error was discovered processing the <wsse:Security> header".
INVALID_SECURITY = "InvalidSecurity"
# WS-Security 1.1 §12: "The security token could not be authenticated or authorized".
FAILED_AUTHENTICATION = "FailedAuthentication"


class SecurityError(Exception):
    """Base class: a request refused by the security layer before any processing."""

    subcode: ClassVar[str] = INVALID_SECURITY
    reason: ClassVar[str] = "The request could not be authenticated."
    metric_reason: ClassVar[str] = "security"
    # SOAP 1.2 Part 2 §7.5.2.2: env:Sender faults are sent with HTTP 400.
    http_status: ClassVar[int] = 400

    def __init__(self, detail: str = "") -> None:
        # `detail` is for our own logs only (never sent): it must not carry PHI or secrets.
        super().__init__(detail or self.reason)
        self.detail = detail

    @property
    def partner_reason(self) -> str:
        """The text for env:Reason."""
        return self.reason


# ---- XUA: structure of the wsse:Security header (InvalidSecurity) -----------------------------
class MissingAssertion(SecurityError):
    reason = "A signed XUA SAML 2.0 assertion is required in the wsse:Security header."
    metric_reason = "xua_missing"


class AssertionCount(SecurityError):
    reason = "The wsse:Security header must carry exactly one SAML 2.0 assertion."
    metric_reason = "xua_assertion_count"


class MalformedSecurityHeader(SecurityError):
    reason = "The wsse:Security header or its SAML assertion is malformed."
    metric_reason = "xua_malformed"


class UnsignedAssertion(SecurityError):
    reason = "The SAML assertion is not signed."
    metric_reason = "xua_unsigned"


class UnsupportedSignatureAlgorithm(SecurityError):
    reason = (
        "The SAML assertion signature uses an algorithm that is not accepted "
        "(exclusive c14n with RSA or ECDSA and SHA-256 or stronger are required)."
    )
    metric_reason = "xua_algorithm"


class InvalidSignature(SecurityError):
    """Bad digest, bad signature value, or a Reference that does not cover the assertion."""

    reason = "The SAML assertion signature is not valid."
    metric_reason = "xua_signature"


# ---- XUA: trust and validity (FailedAuthentication) -------------------------------------------
class UntrustedIssuer(SecurityError):
    subcode = FAILED_AUTHENTICATION
    reason = "The SAML assertion was not issued by an issuer trusted for this partner."
    metric_reason = "xua_untrusted_issuer"


class AssertionExpired(SecurityError):
    subcode = FAILED_AUTHENTICATION
    reason = "The SAML assertion has expired."
    metric_reason = "xua_expired"


class AssertionNotYetValid(SecurityError):
    subcode = FAILED_AUTHENTICATION
    reason = "The SAML assertion is not valid yet."
    metric_reason = "xua_not_yet_valid"


class AudienceMismatch(SecurityError):
    subcode = FAILED_AUTHENTICATION
    reason = "The SAML assertion is not intended for this gateway (AudienceRestriction)."
    metric_reason = "xua_audience"


class SubjectConfirmationFailed(SecurityError):
    subcode = FAILED_AUTHENTICATION
    reason = "The SAML assertion subject confirmation is not accepted for this partner."
    metric_reason = "xua_subject_confirmation"


class MissingAttribute(SecurityError):
    subcode = FAILED_AUTHENTICATION
    reason = "The SAML assertion lacks a required XUA attribute."
    metric_reason = "xua_attribute"

    def __init__(self, attribute: str) -> None:
        super().__init__(f"missing or malformed XUA attribute {attribute}")
        self.attribute = attribute

    @property
    def partner_reason(self) -> str:
        # The attribute name is public (ITI-40), naming it saves the partner a support call.
        return f"The SAML assertion lacks the required XUA attribute {self.attribute}."


class PurposeOfUseNotPermitted(SecurityError):
    subcode = FAILED_AUTHENTICATION
    reason = "The SAML assertion purpose of use is missing or not permitted."
    metric_reason = "xua_purpose_of_use"


class HomeCommunityMismatch(SecurityError):
    subcode = FAILED_AUTHENTICATION
    reason = "The SAML assertion homeCommunityId is not registered for this partner."
    metric_reason = "xua_home_community"


class ResourceIdMismatch(SecurityError):
    subcode = FAILED_AUTHENTICATION
    reason = "The SAML assertion resource-id does not match the patient in the request."
    metric_reason = "xua_resource_id"


# ---- Partner identity (mutual TLS) ------------------------------------------------------------
class ClientCertificateRequired(SecurityError):
    subcode = FAILED_AUTHENTICATION
    reason = "A verified client certificate is required."
    metric_reason = "mtls_missing"


class UnknownPartner(SecurityError):
    subcode = FAILED_AUTHENTICATION
    reason = "The client certificate is not registered for any partner."
    metric_reason = "mtls_unknown_partner"


class TransactionNotAllowed(SecurityError):
    subcode = FAILED_AUTHENTICATION
    reason = "This partner is not allowed to use this transaction."
    metric_reason = "partner_transaction"


# ---- Rate limiting ----------------------------------------------------------------------------
class RateLimited(Exception):
    """The partner sent more than its agreed rate: a fault that says when to retry.

    Not a WS-Security failure: the message was fine, we decline it for now. It is answered with
    `env:Receiver` / subcode `xcagw:RateLimited`, HTTP 429 (RFC 6585 §4) and Retry-After
    (RFC 9110 §10.2.3).
    """

    metric_reason = "rate_limited"
    http_status = 429

    def __init__(self, scope: str, retry_after: float) -> None:
        super().__init__(f"rate limit {scope}: retry in {retry_after:.3f}s")
        self.scope = scope
        self.retry_after = retry_after

    @property
    def retry_after_seconds(self) -> int:
        """Whole seconds for the Retry-After header (at least 1)."""
        return max(1, int(-(-self.retry_after // 1)))

    @property
    def reason(self) -> str:
        return (
            "Too many requests from this partner; retry after "
            f"{self.retry_after_seconds} second(s)."
        )
