"""Redis client factories (hiredis-backed when installed, decoded as bytes).

Keys of one Kafka partition share a hash tag, `ota:{p<partition>}:...`, so a Redis
Cluster keeps them on one slot and one Lua script may touch them together.
"""

from __future__ import annotations

import redis

from ota.settings import CommonSettings


def make_redis(settings: CommonSettings) -> redis.Redis[bytes]:
    return redis.Redis.from_url(settings.redis_url, health_check_interval=30)


def partition_tag(partition: int) -> str:
    """The key prefix holding every key of one inbox partition on one cluster slot."""
    return f"ota:{{p{partition}}}:"
