"""Redis client construction with fast, predictable failure, for one server or a Redis Cluster.

`REDIS_URL` chooses the client (issue #11):

- `redis://[user:password@]host:port/db` (`rediss://` for TLS): one Redis server, or a proxy in
  front of several. `create_redis` returns `redis.asyncio.Redis`.
- `redis+cluster://[user:password@]host:port[,host:port...][/0][?option=value...]`
  (`rediss+cluster://` for TLS): a Redis Cluster. The hosts are startup nodes only; the client
  asks one of them for the slot map (CLUSTER SLOTS), talks to each master directly and follows
  MOVED/ASK redirections when slots move. Cluster mode has only database 0. `create_redis`
  returns `redis.asyncio.cluster.RedisCluster`.

Both clients expose the same commands, so the services type them as `RedisClient`. What differs
is what one command may touch: in a cluster, a multi-key command, a MULTI/EXEC pipeline or a Lua
script may only use keys of one hash slot (otherwise CROSSSLOT). Keys used together therefore
share a hash tag (`{...}`, Redis Cluster specification "Hash tags"), and each service documents
its keys in one module (see docs/architecture/state.md).
"""

from __future__ import annotations

import asyncio
from typing import TypeAlias
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

RedisClient: TypeAlias = Redis | RedisCluster
"""What `create_redis` returns: a single-server client or a cluster client."""

# The cluster schemes and the plain scheme redis-py parses once the extra hosts are removed.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
DEFAULT_PORT = 6379


def is_cluster_url(url: str) -> bool:
    """True for `redis+cluster://` and `rediss+cluster://` URLs."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> tuple[str, list[tuple[str, int]]]:
    """(`redis://` URL of the first startup node with the options, every startup node).

    The first URL keeps credentials, database and query options so that redis-py parses them
    exactly as for a single server.
    """
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError("not a redis+cluster:// or rediss+cluster:// URL")
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        if not item.strip():
            continue
        node = urlsplit(f"//{item.strip()}")
        if not node.hostname:
            raise ValueError("empty host in the Redis Cluster URL")
        nodes.append((node.hostname, node.port or DEFAULT_PORT))
    if not nodes:
        raise ValueError("a Redis Cluster URL needs at least one host:port")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("Redis Cluster has only database 0")
    host, port = nodes[0]
    netloc = f"{userinfo}{at}{f'[{host}]' if ':' in host else host}:{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}/0{query}", nodes


def create_redis(url: str, *, timeout: float = 1.0, retries: int = 1) -> RedisClient:
    """A redis.asyncio client that fails within about `timeout` when Redis is down.

    redis-py 8 retries 3 times with backoff by default: a killed server then takes seconds to
    surface and a stopped one far longer, which would hold requests and readiness hostage.
    The cluster client gets the same budget for connection errors; redirections (MOVED, ASK)
    are not errors and are followed regardless (up to redis-py's 16 per command).
    """
    if is_cluster_url(url):
        first, nodes = parse_cluster_url(url)
        return RedisCluster.from_url(
            first,
            startup_nodes=[ClusterNode(host, port) for host, port in nodes[1:]],
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries),
            health_check_interval=30,
        )
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries),
        health_check_interval=30,
    )


async def ping(client: RedisClient) -> bool:
    """Readiness PING: the server, or every master of a cluster.

    redis-py sends a cluster PING to one node only, which answers even while other masters (and
    their slots) are unreachable; a key on any of them would fail, so each one must answer.
    One PING per master with every outcome collected: redis-py's own multi-node PING leaves the
    other nodes' failures unretrieved ("Task exception was never retrieved").
    """
    if isinstance(client, RedisCluster):
        await client.initialize()  # the slot map (a no-op once known)
        replies = await asyncio.gather(
            *(client.ping(target_nodes=node) for node in client.get_primaries()),
            return_exceptions=True,
        )
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return bool(replies) and all(replies)
    return bool(await client.ping())
