"""The Redis fault tests' stack: the four services on a private redis-server with the
local stack's persistence (the shared one serves everyone), device credentials in the
shared Redis, which the device broker reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.demo_env import redis_url_with_db
from ops.demo_stack import Stack
from tests.redis_kit import AOF_EVERYSEC, PrivateRedis, running_redis
from tests.stack_kit import running_stack


@pytest.fixture
def redis_node(tmp_path: Path) -> Iterator[PrivateRedis]:
    with running_redis(tmp_path / "redis", extra=AOF_EVERYSEC) as node:
        yield node


@pytest.fixture
def services_redis() -> dict[str, str]:
    """Settings that move services off `redis_node` (a test module overrides it)."""
    return {}


@pytest.fixture
def redis_stack(
    redis_node: PrivateRedis,
    services_redis: dict[str, str],
    kafka_bootstrap: str,
    redis_url: str,
    mqtt_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[Stack]:
    credentials = {"OTA_CREDENTIALS_REDIS_URL": redis_url_with_db(redis_url, 1)}
    with running_stack(
        "redis-fault",
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_node.url(),
        redis_db=0,
        state_dir=tmp_path / "stack",
        extra={**mqtt_env, **credentials, **services_redis, "OTA_LOG_LEVEL": "INFO"},
    ) as stack:
        yield stack
