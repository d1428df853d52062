"""Every master of the services' Redis Cluster killed mid-rollout, each replaced by its
replica: the rollout completes with exact counts.

The workers, the gateway, the download edge and the scheduler run on a private
three-master cluster with a replica each (tests/redis_cluster_kit.py, no persistence),
device credentials in the shared Redis the device broker reads. Once half the fleet is released,
each master is killed with SIGKILL in turn and its replica promoted after the node
timeout. A write the master acknowledged and had not yet passed to its replica is lost
with it: the workers find their Redis calls failing, stop, are started again by their
supervisor, and replay from the offsets the promoted replicas hold; the scheduler's
calls are retried on the promoted master, or the scheduler stops and is started again. Every device must
succeed at its first try, no command or device result may go out twice under a new id,
one job start record id per device, and every device result must reach the webhook.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.demo_stack import Stack
from tests.faults.redis.half_released import (
    FLEET,
    assert_one_start_each,
    rollout_killed_half_released,
)
from tests.faults.restart_run import assert_paused_not_lost
from tests.redis_cluster_kit import PrivateRedisCluster, running_cluster


class KilledMasters:
    """The run's part: `kill` is SIGKILL of every master in turn, each waited for until its
    replica serves its slots; the cluster answers again when `kill` returns."""

    def __init__(self, cluster: PrivateRedisCluster) -> None:
        self.cluster = cluster

    def kill(self) -> None:
        for master in range(self.cluster.masters):
            self.cluster.kill_master(master)

    def start(self) -> float:
        return time.monotonic()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[PrivateRedisCluster]:
    with running_cluster(tmp_path / "cluster", replicas=True) as started:
        yield started


@pytest.fixture
def services_redis(cluster: PrivateRedisCluster) -> dict[str, str]:
    return {"OTA_REDIS_URL": cluster.url}


@pytest.mark.timeout(400)
async def test_every_master_killed_mid_rollout_and_the_rollout_ends_exact(
    cluster: PrivateRedisCluster, redis_stack: Stack, kafka_bootstrap: str
) -> None:
    run = await rollout_killed_half_released(KilledMasters(cluster), redis_stack, kafka_bootstrap)
    assert_paused_not_lost(run, FLEET, "every Redis Cluster master")
    assert_one_start_each(redis_stack, kafka_bootstrap)
