"""Redis persistence for soap-edge. Every key name and TTL the service uses is defined here.

All keys start with `xcagw:soap-edge:`. Values written by this module only.

- `doc:{uniqueId}` (hash, TTL document_retention_seconds (24 h)):
  a stored C-CDA and its XDS metadata (DocumentRecord).
- `entry:{entryUUID}` (string, TTL document_retention_seconds):
  uniqueId of the stable DocumentEntry.
- `patient-doc:{nhs}` (string, TTL document_retention_seconds):
  uniqueId of the patient's current stable snapshot.
- `ondemand:{uniqueId}` (string, TTL ondemand_retention_seconds (7 d)):
  NHS number behind an on-demand DocumentEntry.
- `ondemand-entry:{entryUUID}` (string, TTL ondemand_retention_seconds):
  uniqueId of the on-demand DocumentEntry.
- `lock:generate:{nhs}` (string, TTL generation_lock_seconds (45 s)):
  owner token while one request builds the patient's document.
- `failed:generate:{nhs}` (string, TTL generation_failure_seconds (10 s)):
  `service|FailureKind` of the build that just failed, so requests that waited on it share the
  outcome instead of each calling GP Connect again.
- `ceid:{domain}:{id}` (string, TTL ceid_mapping_ttl_seconds (30 d)):
  NHS number for a CEID (e.g. an Epic Care Everywhere id).
- `nhs-ceid:{nhs}:{domain}` (string, TTL ceid_mapping_ttl_seconds):
  CEID in that domain for an NHS number.
- `session:{partner}:{uniqueId}` (string, TTL session_ttl_seconds (24 h)):
  JSON: the ITI-38 exchange that gave this partner the document.
- `pdq:{partner}:{queryId}` (string, TTL continuation_ttl_seconds (10 min)):
  JSON: ITI-47/55 continuation state (remaining results).

Keys of the security layer (issue #9), written by soap_edge.security (documented there):
- `ratelimit:{<partner>}:all`, `ratelimit:{<partner>}:<transaction>` (string, expiring with the
  GCRA state): the partner's rate-limit timelines (security/ratelimit.py).
- `{audit}:stream` (stream, no TTL, trimmed as delivered): ATNA audit messages not yet
  delivered to the ARR; `{audit}:cursor` (string): the last delivered entry;
  `{audit}:lease` (string, PX lease): which replica forwards (security/audit.py).

Document retention is deliberately long (24 h, not the prior art's 60 s): initiators may retrieve
hours after their query (ihe-xca-rules §6.4).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, fields
from typing import Any

from redis.asyncio import Redis

from soap_edge.config import Settings

PREFIX = "xcagw:soap-edge:"

# Compare-and-delete so that a request whose lock expired cannot release another request's lock.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def key(*parts: str) -> str:
    return PREFIX + ":".join(parts)


def _text(value: bytes | str | None) -> str | None:
    # The client is created without decode_responses, so values arrive as bytes.
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


@dataclass
class DocumentRecord:
    """A stored document and the metadata ITI-38 advertises for it (ihe-xca-rules §5)."""

    unique_id: str
    entry_uuid: str
    nhs_number: str
    hash: str
    size: int
    creation_time: str
    title: str
    content: bytes
    service_start: str = ""
    service_stop: str = ""
    gp_ods_code: str = ""
    family: str = ""
    given: str = ""
    birth_date: str = ""
    gender: str = ""
    cda_id: str = ""

    def to_redis(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for name, value in asdict(self).items():
            out[name] = value if isinstance(value, bytes) else str(value).encode("utf-8")
        return out

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes]) -> DocumentRecord | None:
        values: dict[str, Any] = {}
        for f in fields(cls):
            data = raw.get(f.name.encode())
            if data is None:
                if f.name in ("unique_id", "entry_uuid", "nhs_number", "content"):
                    return None
                continue
            if f.name == "content":
                values[f.name] = data
            elif f.name == "size":
                values[f.name] = int(data)
            else:
                values[f.name] = data.decode("utf-8")
        return cls(**values)


class Store:
    """Typed access to soap-edge's Redis keys."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # Documents -------------------------------------------------------------------------------
    async def save_document(
        self, record: DocumentRecord, *, also_for: tuple[str, ...] = ()
    ) -> None:
        """Store the document, its entryUUID index and the patient pointer(s) atomically."""
        ttl = self.settings.document_retention_seconds
        async with self.redis.pipeline(transaction=True) as pipe:
            doc_key = key("doc", record.unique_id)
            pipe.delete(doc_key)
            pipe.hset(doc_key, mapping=record.to_redis())  # type: ignore[arg-type]
            pipe.expire(doc_key, ttl)
            pipe.set(key("entry", record.entry_uuid), record.unique_id, ex=ttl)
            for nhs in {record.nhs_number, *also_for}:
                pipe.set(key("patient-doc", nhs), record.unique_id, ex=ttl)
            await pipe.execute()

    async def document(self, unique_id: str) -> DocumentRecord | None:
        raw = await self.redis.hgetall(key("doc", unique_id))
        if not raw:
            return None
        return DocumentRecord.from_redis({_raw(k): _raw(v) for k, v in raw.items()})

    async def document_by_entry(self, entry_uuid: str) -> DocumentRecord | None:
        uid = _text(await self.redis.get(key("entry", entry_uuid)))
        return await self.document(uid) if uid else None

    async def current_document(self, nhs_number: str) -> DocumentRecord | None:
        uid = _text(await self.redis.get(key("patient-doc", nhs_number)))
        return await self.document(uid) if uid else None

    # On-demand entries ------------------------------------------------------------------------
    async def register_on_demand(self, unique_id: str, entry_uuid: str, nhs_number: str) -> None:
        ttl = self.settings.ondemand_retention_seconds
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key("ondemand", unique_id), nhs_number, ex=ttl)
            pipe.set(key("ondemand-entry", entry_uuid), unique_id, ex=ttl)
            await pipe.execute()

    async def on_demand_patient(self, unique_id: str) -> str | None:
        return _text(await self.redis.get(key("ondemand", unique_id)))

    async def on_demand_by_entry(self, entry_uuid: str) -> str | None:
        return _text(await self.redis.get(key("ondemand-entry", entry_uuid)))

    # Generation lock -------------------------------------------------------------------------
    async def acquire_generation_lock(self, nhs_number: str) -> str | None:
        token = secrets.token_hex(16)
        ok = await self.redis.set(
            key("lock", "generate", nhs_number),
            token,
            nx=True,
            px=int(self.settings.generation_lock_seconds * 1000),
        )
        return token if ok else None

    async def generation_locked(self, nhs_number: str) -> bool:
        return bool(await self.redis.exists(key("lock", "generate", nhs_number)))

    async def release_generation_lock(self, nhs_number: str, token: str) -> None:
        await self.redis.eval(_RELEASE, 1, key("lock", "generate", nhs_number), token)

    async def record_generation_failure(self, nhs_number: str, kind: str) -> None:
        await self.redis.set(
            key("failed", "generate", nhs_number),
            kind,
            px=int(self.settings.generation_failure_seconds * 1000),
        )

    async def generation_failure(self, nhs_number: str) -> str | None:
        return _text(await self.redis.get(key("failed", "generate", nhs_number)))

    async def clear_generation_failure(self, nhs_number: str) -> None:
        await self.redis.delete(key("failed", "generate", nhs_number))

    # CEID <-> NHS number ----------------------------------------------------------------------
    async def save_ceid_mapping(self, domain: str, ceid: str, nhs_number: str) -> None:
        ttl = self.settings.ceid_mapping_ttl_seconds
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key("ceid", domain, ceid), nhs_number, ex=ttl)
            pipe.set(key("nhs-ceid", nhs_number, domain), ceid, ex=ttl)
            await pipe.execute()

    async def nhs_for_ceid(self, domain: str, ceid: str) -> str | None:
        return _text(await self.redis.get(key("ceid", domain, ceid)))

    async def ceid_for_nhs(self, nhs_number: str, domain: str) -> str | None:
        return _text(await self.redis.get(key("nhs-ceid", nhs_number, domain)))

    # Partner sessions (query -> retrieve correlation) ------------------------------------------
    async def record_session(
        self, partner: str, unique_ids: list[str], query_message_id: str, transaction: str
    ) -> None:
        if not unique_ids:
            return
        value = json.dumps({"query_message_id": query_message_id, "transaction": transaction})
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid in unique_ids:
                pipe.set(key("session", partner, uid), value, ex=self.settings.session_ttl_seconds)
            await pipe.execute()

    async def session(self, partner: str, unique_id: str) -> dict[str, str] | None:
        raw = await self.redis.get(key("session", partner, unique_id))
        if not raw:
            return None
        data = json.loads(raw)
        return data if isinstance(data, dict) else None

    # PDQ continuation -------------------------------------------------------------------------
    async def save_continuation(self, partner: str, query_id: str, state: dict[str, Any]) -> None:
        await self.redis.set(
            key("pdq", partner, query_id),
            json.dumps(state),
            ex=self.settings.continuation_ttl_seconds,
        )

    async def continuation(self, partner: str, query_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(key("pdq", partner, query_id))
        if not raw:
            return None
        data = json.loads(raw)
        return data if isinstance(data, dict) else None

    async def drop_continuation(self, partner: str, query_id: str) -> None:
        await self.redis.delete(key("pdq", partner, query_id))
