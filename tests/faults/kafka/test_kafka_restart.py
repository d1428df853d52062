"""Kafka killed with SIGKILL mid-rollout and restarted: a pause, never a loss.

The suite runs its own one-node Kafka (the shared one serves everyone) and the four
services as processes on it, with Redis db 6 and the shared device broker. A fleet of
simulated devices is upgraded at a fixed release rate; once half is released, Kafka
is killed and started again on its data 12 s later. Every device must succeed in its
first attempt: no job may record a failure cause, a retry or a second attempt, which is
what a message lost (or stuck until its window closed) across the restart would cause.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.restart_run import assert_paused_not_lost, rollout_across_restart
from tests.kafka_kit import PrivateKafka, running_kafka
from tests.stack_kit import running_stack

REDIS_DB = 6  # db 8 is the demo's (ops/demo.py)
FLEET = 120
RATE_PER_MIN = 1200  # 20 devices/s: the release takes 6 s, devices are at every stage
OUTAGE_S = 12.0


@pytest.fixture
def kafka_node(tmp_path: Path) -> Iterator[PrivateKafka]:
    with running_kafka(tmp_path / "kafka") as node:
        yield node


@pytest.mark.timeout(400)
async def test_a_kafka_restart_mid_rollout_costs_no_device_a_timeout(
    kafka_node: PrivateKafka,
    redis_url: str,
    mqtt_env: dict[str, str],
    tmp_path: Path,
) -> None:
    with running_stack(
        "kafka-restart",
        kafka_bootstrap=kafka_node.bootstrap,
        redis_url=redis_url,
        redis_db=REDIS_DB,
        state_dir=tmp_path / "stack",
        extra={**mqtt_env, "OTA_LOG_LEVEL": "INFO"},
    ) as stack:
        run = await rollout_across_restart(
            kafka_node,
            stack.plan,
            stack.env,
            kafka_bootstrap=kafka_node.bootstrap,
            size=FLEET,
            rate_per_min=RATE_PER_MIN,
            kill_on="released",  # steady at the release rate; finishes may come in bursts
            kill_after_share=0.5,
            outage_s=OUTAGE_S,
            timeout_s=240,
            timelines_of=3,  # a failure shows what the topics hold about three of them
        )
    assert_paused_not_lost(run, FLEET, "Kafka")
    # Everything pending flowed within seconds of Kafka answering (windows are 45 s+).
    last = max(t for t, n in run.samples if n < FLEET) if run.samples else run.answered_at
    assert last - run.answered_at < 30, f"{last - run.answered_at:.1f}s to finish"
