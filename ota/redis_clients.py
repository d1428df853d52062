"""Redis client factories (hiredis-backed when installed, decoded as bytes).

Credentials and TLS come from the common settings (ota/client_security.py).
Keys of one Kafka partition share a hash tag, `ota:{p<partition>}:...`, so a Redis
Cluster keeps them on one slot and one Lua script may touch them together.
"""

from __future__ import annotations

import redis

from ota.settings import CommonSettings


def make_redis(settings: CommonSettings, url: str | None = None) -> redis.Redis[bytes]:
    """A client of OTA_REDIS_URL (or `url`) with the configured credentials and TLS."""
    target = settings.redis_url if url is None else url
    return redis.Redis.from_url(
        target, health_check_interval=30, **settings.redis_security.client_kwargs(target)
    )


def partition_tag(partition: int) -> str:
    """The key prefix holding every key of one inbox partition on one cluster slot."""
    return f"ota:{{p{partition}}}:"
