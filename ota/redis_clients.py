"""Redis client factories (hiredis-backed when installed, decoded as bytes).

Credentials and TLS come from the common settings (ota/client_security.py).

A URL whose scheme ends in `+cluster` (`redis+cluster://host:port`, `rediss+cluster://`)
names a Redis Cluster by one node or several (`redis+cluster://h1:7001,h2:7001,h3:7001`:
tried in turn at start, so a lost node does not stop a restarted service): the client is
redis-py's RedisCluster, which learns the slot map from a node that answers and sends
each command to the master of its keys' slot.
Such a client serves every command whose keys share one slot, pipelines (grouped per
node), and EVALSHA; it refuses a command or script whose keys span slots (CROSSSLOT)
and a MULTI over several slots. The services keep every script, transaction and
multi-key command on one slot by hash tags:

- keys of one Kafka partition share `{p<partition>}` (`partition_tag`, the workers);
- keys of the download edge's progress share `{dl<shard>}` (download_edge/progress.py);
- every key of the scheduler shares `{sched}` (scheduler/keys.py).

tests/unit/ota/test_redis_slots.py and tests/unit/scheduler/test_sched_key_layout.py
check that.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

from ota.settings import CommonSettings

CLUSTER_SUFFIX = "+cluster"
# What a client raises when Redis is unreachable or refuses: RedisCluster's own errors
# (no node reachable, slot map unreadable) are not RedisErrors.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme.endswith(CLUSTER_SUFFIX)


def make_redis(settings: CommonSettings, url: str | None = None) -> redis.Redis[bytes]:
    """A client of OTA_REDIS_URL (or `url`) with the configured credentials and TLS; a
    RedisCluster for a `+cluster` URL."""
    target = settings.redis_url if url is None else url
    extras = settings.redis_security.client_kwargs(target)
    if not is_cluster_url(target):
        return redis.Redis.from_url(target, health_check_interval=30, **extras)
    node_url, others = _cluster_nodes(target)
    cluster: RedisCluster[bytes] = RedisCluster.from_url(
        node_url, startup_nodes=others, health_check_interval=30, **extras
    )
    # Typed as the standalone client the services are written against: RedisCluster
    # answers the same calls for keys of one slot, which is all these services send.
    return cast("redis.Redis[bytes]", cluster)


def make_async_redis(settings: CommonSettings, url: str) -> redis.asyncio.Redis[bytes]:
    """An asyncio client of `url` with the configured credentials and TLS; an asyncio
    RedisCluster for a `+cluster` URL. A dropped connection (restart, failover, a killed
    client) is retried on a fresh one instead of failing the caller's step. Gathers may
    want more connections than redis-py's default 100 per pool, which raises past it: the
    standalone pool makes them wait instead, the cluster's allows more per node."""
    options: dict[str, Any] = {
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
        "health_check_interval": 30,
        **settings.redis_security.client_kwargs(url),
    }
    if is_cluster_url(url):
        node_url, others = _cluster_nodes(url)
        cluster: AsyncRedisCluster[bytes] = AsyncRedisCluster.from_url(
            node_url,
            startup_nodes=[AsyncClusterNode(n.host, n.port) for n in others],
            max_connections=1024,
            # A master's failover (its replica promoted after the node timeout) takes
            # seconds: about 11 s of attempts, each after a refresh of the slot map.
            retry=AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), retries=15),  # type: ignore[arg-type]  # stubs name the sync Retry
            **options,
        )
        return cast("redis.asyncio.Redis[bytes]", cluster)  # as make_redis says
    pool: redis.asyncio.BlockingConnectionPool[Connection] = (
        redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=256,
            timeout=30,
            retry=AsyncRetry(ExponentialBackoff(cap=1.0, base=0.02), retries=5),
            **options,
        )
    )
    # from_pool: closing the client closes the pool (stubs predate it).
    client: redis.asyncio.Redis[bytes] = redis.asyncio.Redis.from_pool(pool)  # type: ignore[attr-defined]
    return client


def _cluster_nodes(target: str) -> tuple[str, list[ClusterNode]]:
    """The URL of a cluster URL's first node, and its other nodes."""
    parts = urlsplit(target)
    user, at, hosts = parts.netloc.rpartition("@")
    first, *others = hosts.split(",")
    node_url = urlunsplit(
        parts._replace(
            scheme=parts.scheme.removesuffix(CLUSTER_SUFFIX), netloc=f"{user}{at}{first}"
        )
    )
    return node_url, [_node(address) for address in others]


def _node(address: str) -> ClusterNode:
    host, _, port = address.rpartition(":")  # host:port, checked with the settings
    return ClusterNode(host, int(port))


def partition_tag(partition: int) -> str:
    """The key prefix holding every key of one inbox partition on one cluster slot."""
    return f"ota:{{p{partition}}}:"
