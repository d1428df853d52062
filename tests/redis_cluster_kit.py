"""A private Redis Cluster of three masters (optionally each with a replica) for tests
that run the services on a cluster.

The shared local stack runs one standalone Redis; a cluster is started here from Debian's
redis-server: three processes in cluster mode on free loopback ports (each with its own
cluster-bus port, so nothing assumes port + 10000 is free), data in a directory of their
own and no persistence. The kit splits the 16384 slots in three ranges
(CLUSTER ADDSLOTSRANGE), introduces the nodes to each other (CLUSTER MEET with the bus
port) and waits until every node reports `cluster_state:ok` and knows three masters.

`url` is the cluster URL the services take (`redis+cluster://`, see
ota/redis_clients.py); `flush()` empties every master. `stop()` ends each server by its
own process id. Every failure raises `RedisClusterKitError`; `running_cluster()`, for
fixtures, turns it into `tests.conftest.missing`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from ops.demo_env import free_port
from tests.conftest import missing

HOST = "127.0.0.1"
SLOTS = 16384
START_TIMEOUT_S = 30.0
NODE_TIMEOUT_MS = 2000  # a killed master's replica takes over after about twice this


class RedisClusterKitError(RuntimeError):
    """The private cluster could not be started or did not come together."""


class PrivateRedisCluster:
    def __init__(self, directory: Path, *, masters: int = 3, replicas: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisClusterKitError("redis-server is not installed (deploy/local/up does)")
        self.binary = binary
        self.directory = directory
        nodes = 2 * masters if replicas else masters  # replica i follows master i
        ports = _distinct_free_ports(2 * nodes)
        self.masters = masters
        self.ports, self.bus_ports = ports[:nodes], ports[nodes:]
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        nodes = ",".join(f"{HOST}:{port}" for port in self.ports)
        return f"redis+cluster://{nodes}/0"

    def start(self) -> None:
        for port, bus in zip(self.ports, self.bus_ports, strict=True):
            self.processes.append(self._spawn(port, bus))
        nodes = [redis.Redis(host=HOST, port=port) for port in self.ports]
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            for node, process in zip(nodes, self.processes, strict=True):
                _until(deadline, partial(_answers, node, process), "a node to answer PING")
            bounds = [SLOTS * i // self.masters for i in range(self.masters + 1)]
            for i, node in enumerate(nodes[: self.masters]):
                node.execute_command("CLUSTER ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)
            for port, bus in zip(self.ports[1:], self.bus_ports[1:], strict=True):
                nodes[0].execute_command("CLUSTER MEET", HOST, port, bus)
            for node in nodes:
                _until(deadline, partial(self._formed, node), "cluster_state:ok on every node")
            for master, replica in zip(nodes, nodes[self.masters :], strict=False):
                master_id = master.execute_command("CLUSTER MYID")
                master_id = master_id.decode() if isinstance(master_id, bytes) else master_id
                _until(deadline, partial(_replicates, replica, master_id), "replicas in sync")
        except (redis.RedisError, OSError) as exc:
            self.stop()
            raise RedisClusterKitError(f"the private cluster did not form: {exc}") from exc
        except BaseException:
            self.stop()
            raise
        finally:
            for node in nodes:
                node.close()

    def _spawn(self, port: int, bus: int) -> subprocess.Popen[bytes]:
        data = self.directory / str(port)
        data.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--bind", HOST,
            "--port", str(port),
            "--cluster-enabled", "yes",
            "--cluster-port", str(bus),
            "--cluster-config-file", str(data / "nodes.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--dir", str(data),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(data / "redis.log"),
        ]  # fmt: skip
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _formed(self, node: redis.Redis[bytes]) -> bool:
        info = node.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
        fields = {str(k): str(v) for k, v in info.items()}
        return (
            fields.get("cluster_state") == "ok"
            and fields.get("cluster_known_nodes") == str(len(self.ports))
            and fields.get("cluster_size") == str(self.masters)
        )

    def flush(self) -> None:
        for port in self.ports:
            with redis.Redis(host=HOST, port=port) as node:
                if _role(node) == "master":
                    node.flushall()

    def failover(self, master: int) -> None:
        """The replica of master `master` takes over, in sync (CLUSTER FAILOVER without
        FORCE: the master stops writes until its replica caught up); waits until every
        node sees the new master."""
        old = redis.Redis(host=HOST, port=self.ports[master])
        new = redis.Redis(host=HOST, port=self.ports[self.masters + master])
        try:
            new.execute_command("CLUSTER FAILOVER")
            deadline = time.monotonic() + START_TIMEOUT_S
            _until(deadline, lambda: _role(new) == "master", "the replica to become master")
            _until(deadline, lambda: _role(old) == "slave", "the old master to follow it")
            for port in self.ports:
                with redis.Redis(host=HOST, port=port) as node:
                    _until(deadline, partial(self._formed, node), "cluster_state:ok again")
        finally:
            old.close()
            new.close()

    def client(self) -> RedisCluster[bytes]:
        return RedisCluster(host=HOST, port=self.ports[0])

    def kill_master(self, master: int) -> None:
        """`kill -9` of master `master` (no persistence: its data is gone); waits until its
        replica was promoted and the cluster serves every slot again."""
        process = self.processes[master]
        process.kill()
        process.wait(10)
        deadline = time.monotonic() + START_TIMEOUT_S
        with redis.Redis(host=HOST, port=self.ports[self.masters + master]) as new:
            _until(deadline, lambda: _role(new) == "master", "the replica to take over")
            _until(deadline, partial(self._serving, new), "cluster_state:ok again")

    def _serving(self, node: redis.Redis[bytes]) -> bool:
        info = node.execute_command("CLUSTER INFO")
        return str(info.get("cluster_state")) == "ok"

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes.clear()


def _answers(node: redis.Redis[bytes], process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RedisClusterKitError(f"redis-server exited with {process.returncode} (see its log)")
    return bool(node.ping())


def _role(node: redis.Redis[bytes]) -> str:
    role = node.execute_command("ROLE")[0]
    return role.decode() if isinstance(role, bytes) else str(role)


def _replicates(replica: redis.Redis[bytes], master_id: str) -> bool:
    """Asks `replica` to follow `master_id` until it does, with its link up (it may not
    know the master's id yet just after CLUSTER MEET)."""
    role = replica.execute_command("ROLE")
    if _role(replica) == "slave" and (role[3] == b"connected" or role[3] == "connected"):
        return True
    if _role(replica) == "master":
        replica.execute_command("CLUSTER REPLICATE", master_id)
    return False


def _distinct_free_ports(count: int) -> list[int]:
    # free_port releases the port it found, so two calls may name the same one.
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _until(deadline: float, condition: Callable[[], bool], what: str) -> None:
    while True:
        try:
            if condition():
                return
        except (redis.ConnectionError, redis.ResponseError):
            pass  # not up yet, or the cluster still forming
        if time.monotonic() > deadline:
            raise RedisClusterKitError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a server we do not control; bounded by the deadline


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedisCluster]:
    """One private cluster for the whole session (tests flush it themselves)."""
    with running_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@contextmanager
def running_cluster(directory: Path, *, replicas: bool = False) -> Iterator[PrivateRedisCluster]:
    """A formed three-master cluster (each master with a replica if `replicas`) for the
    duration of the block (a fixture's body)."""
    try:
        cluster = PrivateRedisCluster(directory, replicas=replicas)
        cluster.start()
    except RedisClusterKitError as exc:
        missing(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()
