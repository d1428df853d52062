"""The leader of every inbox partition of a three-node Kafka killed with SIGKILL
mid-rollout: a pause while the cluster fails over, never a loss.

The suite runs its own three-node KRaft cluster (tests.kafka_cluster_kit; the shared
Kafka serves everyone) with the project's topics at replication factor 3 and
min.insync.replicas 2, and the four services as processes on it, with Redis db 6 (the
Kafka fault tests' db; a stack holds it while it runs) and the shared device broker.
Before the task, one node is made the leader of every inbox partition and the coordinator
of every consumer group; once half of the fleet has been released, that node is killed and
stays dead. The two survivors take over its partitions once the controller fences it
(Kafka's 9 s broker session timeout). Every
device must succeed at its first attempt, nothing may go out twice, and what waited must
flow within seconds of the new leaders.

It runs once per Kafka client the services can use (OTA_KAFKA_CLIENT).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.restart_run import assert_paused_not_lost, rollout_across_restart
from tests.kafka_cluster_kit import (
    MIN_INSYNC_REPLICAS,
    REPLICAS,
    InboxLeaderKill,
    KafkaCluster,
    running_cluster,
)
from tests.stack_kit import running_stack

REDIS_DB = 6
FLEET = 120
RATE_PER_MIN = 1200  # 20 devices/s: the release takes 6 s, devices are at every stage


@pytest.fixture
def cluster() -> Iterator[KafkaCluster]:
    # Refused connections to the dead node are expected; kafka-python logs them with their
    # traceback, and a captured record would keep the refused socket alive past the test.
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        with running_cluster("leader-kill-test") as started:
            yield started
    finally:
        kafka_log.setLevel(level)
    gc.collect()  # the refused sockets below, under this test's filter


# kafka-python 3.0.12 leaves the socket of every refused connection to the garbage
# collector; after the kill, every client in this process (the failover polls, the
# read-back, the stack's topic clean-up) is refused by the dead node at least once.
@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")
@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    "client",
    [
        "kafka-python",
        "confluent-kafka",
    ],
)
async def test_killing_the_inbox_leader_mid_rollout_costs_no_device_a_timeout(
    client: str,
    cluster: KafkaCluster,
    redis_url: str,
    mqtt_env: dict[str, str],
    tmp_path: Path,
) -> None:
    with running_stack(
        "kafka-leader",
        kafka_bootstrap=cluster.bootstrap,
        redis_url=redis_url,
        redis_db=REDIS_DB,
        state_dir=tmp_path / "stack",
        replicas=REPLICAS,
        min_insync_replicas=MIN_INSYNC_REPLICAS,
        extra={**mqtt_env, "OTA_LOG_LEVEL": "INFO", "OTA_KAFKA_CLIENT": client},
    ) as stack:
        inbox = stack.plan.topic_prefix + "ota.inbox"
        fault = InboxLeaderKill(cluster, inbox)
        run = await rollout_across_restart(
            fault,
            stack.plan,
            stack.env,
            kafka_bootstrap=cluster.bootstrap,
            size=FLEET,
            rate_per_min=RATE_PER_MIN,
            kill_on="released",  # steady at the release rate; finishes may come in bursts
            kill_after_share=0.5,
            outage_s=0.0,  # the node stays dead: the outage is the failover
            timeout_s=240,
        )
        leaders_after = cluster.partitions(inbox)
    assert fault.leader not in {leader for leader, _, _ in leaders_after.values()}
    assert_paused_not_lost(run, FLEET, "the inbox partitions' leader")
    assert run.repeats.transitions == 0, run.repeats
    assert run.repeats.commands_same_id == 0, run.repeats
    assert run.webhooks.same_id == 0, run.webhooks
    # Everything pending flowed within seconds of the new leaders (windows are 45 s+).
    last = max(t for t, n in run.samples if n < FLEET)
    assert last - run.answered_at < 30, f"{last - run.answered_at:.1f}s to finish"
