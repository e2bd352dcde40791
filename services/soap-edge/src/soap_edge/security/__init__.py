"""soap-edge security layer (issue #9): partner identity, XUA, rate limits, ATNA audit, hardening.

Order for every SOAP request (`gate.SecurityGate`), before any transaction processing:

1. partner from the verified TLS client certificate (`mtls`, `partners`); unknown -> fault;
2. the routed transaction must be allowed for the partner;
3. per-partner / per-transaction rate limit (`ratelimit`), before the costly signature check;
4. XUA assertion verified against the partner's pinned issuers (`xua`);
5. after the transaction: one ATNA audit message buffered in Redis before the response is
   released, forwarded to the ARR in the background (`audit`).

`headers.HardeningMiddleware` wraps the whole ASGI app (security headers, CORS, size limits).
"""
