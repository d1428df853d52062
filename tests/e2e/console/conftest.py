"""The console suite's stack: the four services as processes under `ota up`, on their
own topic prefix, Redis db 13, consumer groups and free ports (module scope: it stops
before other e2e modules start theirs), and a headless Chromium."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kafka.admin import KafkaAdminClient

from ota.demo_env import Ports, StackPlan, redis_url_with_db
from ota.demo_stack import Stack

sys.path.insert(0, str(Path(__file__).parent))
from console_kit import Browser, browser_paths, chromium

from tests.conftest import missing

REDIS_DB = 13


@pytest.fixture(scope="module")
def console_stack(
    kafka_bootstrap: str,
    redis_url: str,
    mqtt_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackPlan]:
    run = uuid.uuid4().hex[:8]
    url = redis_url_with_db(redis_url, REDIS_DB)
    redis.Redis.from_url(url).flushdb()
    plan = StackPlan(
        state_dir=tmp_path_factory.mktemp("console-stack"),
        name=f"console-{run}",
        topic_prefix=f"console-{run}.",
        redis_db=REDIS_DB,
        partitions=2,
        ports=Ports.free(),
        extra={
            **mqtt_env,
            "OTA_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "OTA_RECONCILE_INTERVAL_S": "0.2",
            "OTA_WORKER_SWEEP_IDLE_MS": "100",
            "OTA_EDGE_PROGRESS_FLUSH_MS": "100",
            "OTA_CONSOLE_LIVE_INTERVAL_S": "0.3",
        },
    )
    stack = Stack(plan, base_env={"OTA_REDIS_URL": url, "PATH": "/usr/bin:/bin"})
    stack.start()
    try:
        yield plan
    finally:
        stack.stop()
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="console-cleanup")
        try:
            admin.delete_topics([t for t in admin.list_topics() if t.startswith(plan.topic_prefix)])
        finally:
            admin.close()
        redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="module")
def browser(console_stack: StackPlan) -> Iterator[Browser]:
    paths = browser_paths()
    if paths is None:
        missing("chromium and chromium-driver are not installed (deploy/local/up installs them)")
    driver = chromium(*paths)
    try:
        yield Browser(driver, console_stack.api_url)
    finally:
        driver.quit()
