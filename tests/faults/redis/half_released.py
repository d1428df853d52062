"""The Redis fault tests' rollout: 120 devices released at 20 a second, the part killed
once half are released (devices are then at every stage), and the checks they share."""

from __future__ import annotations

from ops.demo_stack import Stack
from tests.faults.restart_run import Restartable, RestartRun, rollout_across_restart, start_ids

FLEET = 120
RATE_PER_MIN = 1200  # 20 devices/s: the release takes 6 s


async def rollout_killed_half_released(
    part: Restartable, stack: Stack, kafka_bootstrap: str, *, outage_s: float = 0.0
) -> RestartRun:
    return await rollout_across_restart(
        part,
        stack.plan,
        stack.env,
        kafka_bootstrap=kafka_bootstrap,
        size=FLEET,
        rate_per_min=RATE_PER_MIN,
        kill_on="released",  # steady at the release rate; finishes may come in bursts
        kill_after_share=0.5,
        outage_s=outage_s,
        timeout_s=240,
    )


def assert_one_start_each(stack: Stack, kafka_bootstrap: str) -> None:
    """Every device released exactly once: one job start record id each on the inbox."""
    starts = start_ids(kafka_bootstrap, stack.plan.topic_prefix + "ota.inbox")
    assert len(starts) == FLEET
    assert {d: s for d, s in starts.items() if len(s) != 1} == {}
