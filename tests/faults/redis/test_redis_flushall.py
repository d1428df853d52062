"""The services' Redis emptied (FLUSHALL) mid-rollout: every service rebuilds what it held
from Kafka and the rollout completes with exact counts.

The suite runs its own redis-server for the four services (device credentials stay in the
shared Redis, which the device broker reads: they are not in Kafka, by design, and a
FLUSHALL of their store would refuse every device's next connection). A fleet of
simulated devices is upgraded at a fixed release rate with a webhook registered for
device results; once half is released, Redis is emptied. The scheduler and the workers
find their state gone and stop; the supervisor starts them again, and they rebuild: the
workers replay the inbox, the scheduler restores its catalog and rebuilds the task from
its recorded device list and its job events. Every device must succeed at its first try,
no device may be released twice (one job start record id per device), and every device
result must reach the webhook.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.structs import TopicPartition

from ops.demo_env import redis_url_with_db
from ota.kafka_clients import make_consumer
from ota.kafka_consumer import read_to_end
from ota.records import JobStartRecord, decode_inbox
from ota.settings import CommonSettings
from tests.faults.restart_run import assert_paused_not_lost, rollout_across_restart
from tests.redis_kit import AOF_EVERYSEC, FlushedRedis, PrivateRedis, running_redis
from tests.stack_kit import running_stack

FLEET = 120
RATE_PER_MIN = 1200  # 20 devices/s: the release takes 6 s, devices are at every stage


@pytest.fixture
def redis_node(tmp_path: Path) -> Iterator[PrivateRedis]:
    with running_redis(tmp_path / "redis", extra=AOF_EVERYSEC) as node:
        yield node


def start_ids(kafka_bootstrap: str, inbox: str) -> dict[str, set[str]]:
    """Each device's job start record ids, read back from the inbox."""
    consumer = make_consumer(
        CommonSettings.from_env({"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap}), group_id=None
    )
    ids: dict[str, set[str]] = defaultdict(set)
    try:
        parts = [TopicPartition(inbox, p) for p in consumer.partitions_for_topic(inbox) or ()]
        for _, records in read_to_end(consumer, parts):
            for record in records:
                if b'"kind":"job_start"' in (record.value or b""):
                    start = decode_inbox(record.value or b"")
                    assert isinstance(start, JobStartRecord)
                    ids[start.device_id].add(start.id)
    finally:
        consumer.close()
    return ids


@pytest.mark.timeout(400)
async def test_redis_emptied_mid_rollout_is_rebuilt_and_the_rollout_ends_exact(
    redis_node: PrivateRedis,
    kafka_bootstrap: str,
    redis_url: str,
    mqtt_env: dict[str, str],
    tmp_path: Path,
) -> None:
    credentials = {"OTA_CREDENTIALS_REDIS_URL": redis_url_with_db(redis_url, 1)}
    with running_stack(
        "redis-flushall",
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_node.url(),
        redis_db=0,
        state_dir=tmp_path / "stack",
        extra={**mqtt_env, **credentials, "OTA_LOG_LEVEL": "INFO"},
    ) as stack:
        run = await rollout_across_restart(
            FlushedRedis(redis_node),
            stack.plan,
            stack.env,
            kafka_bootstrap=kafka_bootstrap,
            size=FLEET,
            rate_per_min=RATE_PER_MIN,
            kill_on="released",
            kill_after_share=0.5,
            outage_s=0.0,
            timeout_s=240,
        )
        logs = stack.plan.log_dir
        stopped = {
            name: "RedisFlushedError" in (logs / f"{name}.log").read_text(errors="replace")
            for name in ("scheduler", "workers")
        }
        starts = start_ids(kafka_bootstrap, stack.plan.topic_prefix + "ota.inbox")
    assert_paused_not_lost(run, FLEET, "Redis")
    assert stopped == {"scheduler": True, "workers": True}, "a service ran on over the flush"
    assert len(starts) == FLEET
    assert {d: s for d, s in starts.items() if len(s) != 1} == {}
