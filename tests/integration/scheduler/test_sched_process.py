"""`python -m scheduler` as a process: it serves, and SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from kafka.admin import KafkaAdminClient, NewTopic

from ops.demo_env import free_port
from ota.settings import Topics
from tests.integration.scheduler.sched_harness import WRITE_KEY, db_url


@pytest.fixture
def prefixed_topics(kafka_bootstrap: str) -> Iterator[str]:
    prefix = f"t-{uuid.uuid4().hex[:10]}."
    names = [getattr(Topics.with_prefix(prefix), f) for f in Topics.__dataclass_fields__]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="sched-process-test")
    try:
        admin.create_topics([NewTopic(n, 1, 1) for n in names])
        yield prefix
    finally:
        admin.delete_topics(names)
        admin.close()


def test_serves_then_stops_cleanly_on_sigterm(
    kafka_bootstrap: str,
    redis_url: str,
    prefixed_topics: str,
    sched_redis: redis.Redis[bytes],
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "OTA_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "OTA_REDIS_URL": db_url(redis_url),
        "OTA_TOPIC_PREFIX": prefixed_topics,
        "OTA_API_KEYS": f"{WRITE_KEY}:read+write",
        "OTA_PACKAGE_DIR": str(tmp_path / "packages"),
        "OTA_SCHEDULER_PORT": str(port),
        "OTA_SCHEDULER_GROUP": f"{prefixed_topics}sched",
    }
    process = subprocess.Popen([sys.executable, "-m", "scheduler"], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the scheduler exited early"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the scheduler never answered"
            time.sleep(0.2)
        # Its heartbeats (ota/health.py): live, and ready once its three consumers polled.
        live = httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5)
        assert live.status_code == 200
        assert live.text.startswith("ok\nfresh: event-loop\n"), live.text
        while (ready := httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)).status_code != 200:
            assert ready.status_code == 503
            assert ready.text.startswith("starting: kafka-poll "), ready.text
            assert time.monotonic() < deadline, "the scheduler never got ready"
            time.sleep(0.2)
        fresh = ready.text.splitlines()
        for group in ("registry", "jobs", "dead-letters"):  # every consumer polled
            assert f"fresh: kafka-poll {prefixed_topics}sched-{group}" in fresh, fresh
        listed = httpx.get(
            f"http://127.0.0.1:{port}/v1/tasks", headers={"Authorization": f"Bearer {WRITE_KEY}"}
        )
        assert listed.json() == {"items": [], "next_cursor": None}
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        _, err = process.communicate()
        assert code == 0, err.decode()[-2000:]
        assert b'"msg":"scheduler stopped"' in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
