"""Redis killed with SIGKILL mid-rollout and restarted on its append-only file: nothing is
lost and nothing is done twice in a way a device or an application would act on.

The suite runs its own redis-server (the shared one serves everyone) with the local
stack's persistence (AOF, fsync every second: a kill loses up to the last second of
writes), the four services as processes on it and on the shared Kafka, and device
credentials in the shared Redis (the device broker reads them there). A fleet of simulated
devices is upgraded at a fixed release rate with a webhook registered for device results;
once half is released, Redis is killed and started again 2 s later. Redis forgetting
its last second makes the workers and the scheduler apply that second's records again:
commands they send again carry the same event ids (devices ignore a repeated event id) and
device results go out again with the same notification ids (receivers deduplicate).
"""

from __future__ import annotations

import pytest

from ops.demo_stack import Stack
from tests.faults.redis.half_released import FLEET, rollout_killed_half_released
from tests.faults.restart_run import assert_paused_not_lost
from tests.redis_kit import PrivateRedis

OUTAGE_S = 2.0


@pytest.mark.timeout(400)
async def test_a_redis_restart_mid_rollout_loses_nothing_and_repeats_nothing_devices_act_on(
    redis_node: PrivateRedis, redis_stack: Stack, kafka_bootstrap: str
) -> None:
    run = await rollout_killed_half_released(
        redis_node, redis_stack, kafka_bootstrap, outage_s=OUTAGE_S
    )
    assert_paused_not_lost(run, FLEET, "Redis")
