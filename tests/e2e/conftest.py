"""The e2e session's stack: the four services as real processes under `ota up`, on this
suite's own topic prefix, Redis db 10, consumer groups and free ports, so other suites
running at the same time on the same Kafka, Redis and broker are not disturbed."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from kafka.admin import KafkaAdminClient

from ota.demo_env import Ports, StackPlan, redis_url_with_db
from ota.demo_stack import Stack

sys.path.insert(0, str(Path(__file__).parent))
from e2e_support import E2E, WEBHOOK_SECRET, WebhookReceiver

REDIS_DB = 10


@pytest.fixture(scope="session")
def e2e(
    kafka_bootstrap: str,
    redis_url: str,
    mqtt_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[E2E]:
    run = uuid.uuid4().hex[:8]
    url = redis_url_with_db(redis_url, REDIS_DB)
    redis.Redis.from_url(url).flushdb()
    plan = StackPlan(
        state_dir=tmp_path_factory.mktemp("e2e-stack"),
        name=f"e2e-{run}",
        topic_prefix=f"e2e-{run}.",
        redis_db=REDIS_DB,
        partitions=4,
        ports=Ports.free(),
        extra={
            **mqtt_env,
            "OTA_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "OTA_RECONCILE_INTERVAL_S": "0.2",
            "OTA_WEBHOOK_BACKOFF_S": "0.05",
            "OTA_WEBHOOK_TIMEOUT_S": "2",
            "OTA_WORKER_SWEEP_IDLE_MS": "100",
            "OTA_EDGE_PROGRESS_FLUSH_MS": "100",
        },
    )
    stack = Stack(plan, base_env={"OTA_REDIS_URL": url, "PATH": "/usr/bin:/bin"})
    webhooks = WebhookReceiver()
    stack.start()
    try:
        hook = httpx.post(
            f"{plan.api_url}/v1/webhooks",
            headers={"Authorization": f"Bearer {plan.write_key}"},
            json={"url": webhooks.url, "secret": WEBHOOK_SECRET},
        )
        assert hook.status_code == 201, hook.text
        yield E2E(plan, stack.env, webhooks)
    finally:
        stack.stop()
        webhooks.close()
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="e2e-cleanup")
        try:
            admin.delete_topics([t for t in admin.list_topics() if t.startswith(plan.topic_prefix)])
        finally:
            admin.close()
        redis.Redis.from_url(url).flushdb()
