"""Redis client factories (hiredis-backed when installed, decoded as bytes).

Credentials and TLS come from the common settings (ota/client_security.py).

A URL whose scheme ends in `+cluster` (`redis+cluster://host:port`, `rediss+cluster://`)
names a Redis Cluster by one node or several (`redis+cluster://h1:7001,h2:7001,h3:7001`:
tried in turn at start, so a lost node does not stop a restarted service): the client is
redis-py's RedisCluster, which learns the slot map from a node that answers and sends
each command to the master of its keys' slot.
Such a client serves every command whose keys share one slot, pipelines (grouped per
node), and EVALSHA; it refuses a command or script whose keys span slots (CROSSSLOT)
and a MULTI over several slots. The services that take it (workers, download edge)
keep every script and multi-key command on one slot by hash tags:

- keys of one Kafka partition share `{p<partition>}` (`partition_tag`);
- keys of the download edge's progress share `{dl<shard>}` (download_edge/progress.py).

tests/unit/ota/test_redis_slots.py checks each script's keys for one slot.
"""

from __future__ import annotations

from typing import cast
from urllib.parse import urlsplit, urlunsplit

import redis
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
    parts = urlsplit(target)
    user, at, hosts = parts.netloc.rpartition("@")
    first, *others = hosts.split(",")
    node_url = urlunsplit(
        parts._replace(
            scheme=parts.scheme.removesuffix(CLUSTER_SUFFIX), netloc=f"{user}{at}{first}"
        )
    )
    cluster: RedisCluster[bytes] = RedisCluster.from_url(
        node_url,
        startup_nodes=[_node(address) for address in others],
        health_check_interval=30,
        **extras,
    )
    # Typed as the standalone client the services are written against: RedisCluster
    # answers the same calls for keys of one slot, which is all these services send.
    return cast("redis.Redis[bytes]", cluster)


def _node(address: str) -> ClusterNode:
    host, _, port = address.rpartition(":")  # host:port, checked with the settings
    return ClusterNode(host, int(port))


def partition_tag(partition: int) -> str:
    """The key prefix holding every key of one inbox partition on one cluster slot."""
    return f"ota:{{p{partition}}}:"
