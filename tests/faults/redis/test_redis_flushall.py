"""The services' Redis emptied (FLUSHALL) mid-rollout: every service rebuilds what it held
from Kafka and the rollout completes with exact counts.

The suite runs its own redis-server for the four services (device credentials stay in the
shared Redis, which the shared device broker reads; putting an emptied credential store
back from Kafka is tested in tests/integration/scheduler/test_sched_credential_log.py). A fleet of
simulated devices is upgraded at a fixed release rate with a webhook registered for
device results; once half is released, Redis is emptied. The scheduler and the workers
find their state gone and stop; the supervisor starts them again, and they rebuild: the
workers replay the inbox, the scheduler restores its catalog and rebuilds the task from
its recorded device list and its job events. Every device must succeed at its first try,
no device may be released twice (one job start record id per device), and every device
result must reach the webhook.
"""

from __future__ import annotations

import pytest

from ops.demo_stack import Stack
from tests.faults.restart_run import assert_paused_not_lost, rollout_across_restart, start_ids
from tests.redis_kit import FlushedRedis, PrivateRedis

FLEET = 120
RATE_PER_MIN = 1200  # 20 devices/s: the release takes 6 s, devices are at every stage


@pytest.mark.timeout(400)
async def test_redis_emptied_mid_rollout_is_rebuilt_and_the_rollout_ends_exact(
    redis_node: PrivateRedis, redis_stack: Stack, kafka_bootstrap: str
) -> None:
    run = await rollout_across_restart(
        FlushedRedis(redis_node),
        redis_stack.plan,
        redis_stack.env,
        kafka_bootstrap=kafka_bootstrap,
        size=FLEET,
        rate_per_min=RATE_PER_MIN,
        kill_on="released",
        kill_after_share=0.5,
        outage_s=0.0,
        timeout_s=240,
    )
    logs = redis_stack.plan.log_dir
    stopped = {
        name: "RedisFlushedError" in (logs / f"{name}.log").read_text(errors="replace")
        for name in ("scheduler", "workers")
    }
    starts = start_ids(kafka_bootstrap, redis_stack.plan.topic_prefix + "ota.inbox")
    assert_paused_not_lost(run, FLEET, "Redis")
    assert stopped == {"scheduler": True, "workers": True}, "a service ran on over the flush"
    assert len(starts) == FLEET
    assert {d: s for d, s in starts.items() if len(s) != 1} == {}
