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
- `ceid:{partner}:{domain}:{id}` (string, TTL ceid_mapping_ttl_seconds (30 d)):
  NHS number for a CEID (e.g. an Epic Care Everywhere id), as that partner paired them.
- `nhs-ceid:{partner}:{nhs}:{domain}` (string, TTL ceid_mapping_ttl_seconds):
  CEID in that domain for an NHS number, as that partner paired them.
  Both are per partner: a CEID is whatever the sending partner says it is, so one partner's
  pairing must never decide which patient another partner's query by that CEID reaches (a
  partner could otherwise point someone else's CEID at any NHS number it knows).
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

Above, `{name}` is a placeholder; `{<name>}` is a literal Redis Cluster hash tag around the value.

Redis Cluster (issue #11, `redis+cluster://` REDIS_URL): a MULTI/EXEC or a Lua script may only
touch keys of one hash slot. The document, its entry index and the patient pointers are looked
up by different ids, so no hash tag can put them in one slot: `save_document` writes the
document atomically on its own first and the pointers after it, so a reader never follows a
pointer to a document that is not there yet. Every other write here is one key, or independent
keys in a plain pipeline (split per node by the cluster client); the lock release script has
one key. The security keys share the `{<partner>}` and `{audit}` tags for their multi-key
scripts. No key was renamed for the cluster, so tests and tools keep their key names (and this
new product has no deployed data to migrate).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, fields
from typing import Any

from soap_edge.cache import TtlCache
from soap_edge.config import Settings
from soap_edge.redisbatch import AutoPipeline
from xcagw_common.redis import RedisClient, ping

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


def _session(raw: bytes | str | None) -> dict[str, str] | None:
    if not raw:
        return None
    data = json.loads(raw)
    return data if isinstance(data, dict) else None


class Store:
    """Typed access to soap-edge's Redis keys."""

    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        # Documents by uniqueId, in process (issue #11): a stored document is never rewritten
        # with other bytes under the same uniqueId (its hash and size were advertised), so a
        # copy read once is the document. Lookups still read the key that says which document
        # is current or whether it still exists (patient pointer, HMGET before a retrieve).
        # The small commands of the cached-query path share round trips (redisbatch.py).
        self.batch = AutoPipeline(redis)
        self.documents: TtlCache[str, DocumentRecord] = TtlCache(
            settings.document_cache_seconds,
            max_entries=4096,
            max_cost=settings.document_cache_bytes,
            cost=lambda record: len(record.content) + 2048,
        )

    async def ping(self) -> bool:
        return await ping(self.redis)

    # Documents -------------------------------------------------------------------------------
    async def save_document(
        self, record: DocumentRecord, *, also_for: tuple[str, ...] = ()
    ) -> None:
        """Store the document atomically, then its entryUUID index and the patient pointer(s).

        Two steps because the keys hash to different cluster slots (see the module docstring);
        a failure between them leaves an unreferenced document that expires with its TTL.
        """
        ttl = self.settings.document_retention_seconds
        async with self.redis.pipeline(transaction=True) as pipe:
            doc_key = key("doc", record.unique_id)
            pipe.delete(doc_key)
            pipe.hset(doc_key, mapping=record.to_redis())  # type: ignore[arg-type]
            pipe.expire(doc_key, ttl)
            await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
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
        """The patient's current snapshot: the pointer is read every time (it moves when a new
        snapshot is stored, and expires with it); the document it names may come from process
        memory, since it was stored with the pointer, with the same TTL."""
        uid = _text(await self.batch.execute("GET", key("patient-doc", nhs_number)))
        if not uid:
            return None
        record = self.documents.get(uid)
        if record is None:
            record = await self.document(uid)
            if record is not None:
                self.documents.put(uid, record)
        return record

    async def retrieval(
        self, partner: str, unique_id: str
    ) -> tuple[dict[str, str] | None, DocumentRecord | None]:
        """(query session, stored document) for an ITI-39 DocumentRequest in one round trip.

        The HMGET says whether the document still exists and which bytes it has (SHA-1); only
        when they are not in process memory are they read.
        """
        raw_session, (digest, nhs) = await self.batch.execute_many(
            [
                ("GET", key("session", partner, unique_id)),
                ("HMGET", key("doc", unique_id), "hash", "nhs_number"),
            ]
        )
        session = _session(raw_session)
        if digest is None or nhs is None:
            return session, None
        record = self.documents.get(unique_id)
        if record is None or record.hash != _text(digest):
            record = await self.document(unique_id)
            if record is not None:
                self.documents.put(unique_id, record)
        return session, record

    # On-demand entries ------------------------------------------------------------------------
    async def register_on_demand(self, unique_id: str, entry_uuid: str, nhs_number: str) -> None:
        ttl = self.settings.ondemand_retention_seconds
        # Not MULTI: the two keys are in different cluster slots. The ids are fixed per patient
        # (xds.on_demand_unique_id), so a re-registration writes the same values again and a
        # reader between the two writes sees what it saw before.
        async with self.redis.pipeline(transaction=False) as pipe:
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
    async def save_ceid_mapping(
        self, partner: str, domain: str, ceid: str, nhs_number: str
    ) -> None:
        """Record the partner's CEID for an NHS number; only that partner's lookups see it."""
        ttl = self.settings.ceid_mapping_ttl_seconds
        # Not MULTI: the two directions are in different cluster slots, and each is complete on
        # its own (a failed write fails the request, which writes both again when retried).
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(key("ceid", partner, domain, ceid), nhs_number, ex=ttl)
            pipe.set(key("nhs-ceid", partner, nhs_number, domain), ceid, ex=ttl)
            await pipe.execute()

    async def nhs_for_ceid(self, partner: str, domain: str, ceid: str) -> str | None:
        return _text(await self.redis.get(key("ceid", partner, domain, ceid)))

    async def ceid_for_nhs(self, partner: str, nhs_number: str, domain: str) -> str | None:
        return _text(await self.redis.get(key("nhs-ceid", partner, nhs_number, domain)))

    # Partner sessions (query -> retrieve correlation) ------------------------------------------
    async def record_session(
        self, partner: str, unique_ids: list[str], query_message_id: str, transaction: str
    ) -> None:
        if not unique_ids:
            return
        value = json.dumps({"query_message_id": query_message_id, "transaction": transaction})
        ttl = self.settings.session_ttl_seconds
        await self.batch.execute_many(
            [("SET", key("session", partner, uid), value, "EX", ttl) for uid in unique_ids]
        )

    async def session(self, partner: str, unique_id: str) -> dict[str, str] | None:
        return _session(await self.redis.get(key("session", partner, unique_id)))

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
