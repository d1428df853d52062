"""Script runs ride out a cluster node refusing for a while (ota/redis_scripts.py).

A real private cluster refuses one slot's commands: its owner gives the slot up
(CLUSTER DELSLOTS) and answers CLUSTERDOWN until it takes the slot back. The runner's
wait is where the slot comes back, so the test knows the refusal happened first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterDownError

from ota.backoff import RETRIES, Backoff
from ota.redis_scripts import ScriptRunner, call, command
from tests.redis_cluster_kit import HOST, PrivateRedisCluster, running_cluster

COUNT = "return redis.call('INCR', KEYS[1])"
KEY = "ota:{p7}:count"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedisCluster]:
    # Private to this module: the tests take a slot away from its master.
    with running_cluster(tmp_path_factory.mktemp("refusing-cluster")) as formed:
        yield formed


class SlotGivenUp:
    """The master of KEY's slot without that slot until the first `wait` (the runner's
    wait between tries) or `close`."""

    def __init__(self, client: RedisCluster[bytes]) -> None:
        self.slot = key_slot(KEY.encode())
        owner = client.get_node_from_key(KEY)
        assert owner is not None
        self.node: redis.Redis[bytes] = redis.Redis(host=HOST, port=owner.port)
        self.node.execute_command("CLUSTER DELSLOTS", self.slot)
        self.waits: list[float] = []
        self.served = False

    def wait(self, delay_s: float) -> None:
        self.waits.append(delay_s)
        self.serve()

    def serve(self) -> None:
        if not self.served:
            self.node.execute_command("CLUSTER ADDSLOTS", self.slot)
            self.served = True

    def close(self) -> None:
        self.serve()
        self.node.close()


def as_redis(client: RedisCluster[bytes]) -> redis.Redis[bytes]:
    # As the services type it (ota/redis_clients.py): one-slot calls answer the same.
    return cast("redis.Redis[bytes]", client)


def retries() -> float:
    return float(RETRIES.labels("redis.cluster_refusal")._value.get())


@pytest.fixture
def client(cluster: PrivateRedisCluster) -> Iterator[RedisCluster[bytes]]:
    connected = cluster.client()
    as_redis(connected).delete(KEY)
    yield connected
    connected.close()


@pytest.fixture
def gone(client: RedisCluster[bytes]) -> Iterator[SlotGivenUp]:
    given_up = SlotGivenUp(client)
    yield given_up
    given_up.close()


def test_a_refused_script_call_runs_once_when_the_slot_is_served_again(
    client: RedisCluster[bytes], gone: SlotGivenUp
) -> None:
    before = retries()
    with pytest.raises(ClusterDownError):
        client.pipeline(transaction=False).get(KEY).execute()
    runner = ScriptRunner(as_redis(client), [COUNT], wait=gone.wait)
    replies = runner.run([call(COUNT, [KEY], []), command("GET", KEY)])
    # The script ran exactly once (the GET may have run before it: a call of a script
    # the new cluster never loaded is sent again after SCRIPT LOAD).
    assert replies[0] == 1
    assert client.get(KEY) == b"1"
    assert gone.waits
    assert retries() - before == len(gone.waits)


def test_a_refusal_that_outlasts_the_policy_is_raised_and_nothing_ran(
    client: RedisCluster[bytes], gone: SlotGivenUp
) -> None:
    waits: list[float] = []
    runner = ScriptRunner(as_redis(client), [COUNT], policy=Backoff(attempts=2), wait=waits.append)
    with pytest.raises(ClusterDownError):
        runner.run([call(COUNT, [KEY], [])])
    gone.serve()
    assert len(waits) == 2
    assert client.get(KEY) is None
