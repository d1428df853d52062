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
from tests.faults.redis.half_released import (
    FLEET,
    assert_one_start_each,
    rollout_killed_half_released,
)
from tests.faults.restart_run import assert_paused_not_lost
from tests.redis_kit import FlushedRedis, PrivateRedis


@pytest.mark.timeout(400)
async def test_redis_emptied_mid_rollout_is_rebuilt_and_the_rollout_ends_exact(
    redis_node: PrivateRedis, redis_stack: Stack, kafka_bootstrap: str
) -> None:
    run = await rollout_killed_half_released(FlushedRedis(redis_node), redis_stack, kafka_bootstrap)
    logs = redis_stack.plan.log_dir
    stopped = {
        name: "RedisFlushedError" in (logs / f"{name}.log").read_text(errors="replace")
        for name in ("scheduler", "workers")
    }
    assert_paused_not_lost(run, FLEET, "Redis")
    assert stopped == {"scheduler": True, "workers": True}, "a service ran on over the flush"
    assert_one_start_each(redis_stack, kafka_bootstrap)
