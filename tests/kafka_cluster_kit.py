"""A private three-node Kafka cluster (KRaft; every node a broker and a voting controller)
for fault runs that kill a partition leader: topics with replication factor 3 and
min.insync.replicas 2, as the production sizing in deploy/topics.toml.

The nodes run from the jars deploy/local/up installed (tests.kafka_kit.jars_dir), each on
free ports (a client listener and a controller listener) with its own data directory
under `directory` (by default `<state>/kafka-cluster/<name>`, beside the local stack's
own Kafka, which is never touched), and a small heap (`-Xmx512m` by default). Every
topic-level default is the cluster's: internal topics (consumer offsets, transactions)
have three replicas and need two in sync, like the project's topics, which
deploy/local/create_topics.py creates with `--replication-factor 3
--min-insync-replicas 2` (tests.stack_kit.running_stack(replicas=3, min_insync_replicas=2)).

Broker liveness is Kafka's default (`broker.session.timeout.ms` 9 s): a node killed with
SIGKILL keeps its partitions' leadership until the controller fences it; that wait is part
of what a leader failover costs, so the kit does not shorten it.

`InboxLeaderKill` is the fault runs' `Restartable` (tests.faults.restart_run): it first
makes one node the leader of every partition of a topic and of the consumer offsets (so
the coordinator of every group), `kill()` is `kill -9` of that node, and `start()` waits
until every one of those partitions has a leader again on a surviving node (the killed
node stays dead for the run). Failures raise `PrivateKafkaError`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from ops.demo_env import free_port
from tests.conftest import missing
from tests.kafka_kit import HOST, LOG4J, REPO, PrivateKafkaError, jars_dir

REPLICAS = 3
MIN_INSYNC_REPLICAS = 2
PREFERRED_ELECTION = 0  # ElectLeaders election type
CONSUMER_OFFSETS = "__consumer_offsets"


def cluster_root() -> Path:
    """Where clusters keep their data: `<state>/kafka-cluster` (OTA_STATE_DIR or .state)."""
    return Path(os.environ.get("OTA_STATE_DIR", REPO / ".state")) / "kafka-cluster"


@dataclass
class Node:
    node_id: int
    directory: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def accepts(self) -> bool:
        try:
            socket.create_connection((HOST, self.port), timeout=1).close()
        except OSError:
            return False
        return True


class KafkaCluster:
    def __init__(self, directory: Path, *, nodes: int = REPLICAS, heap: str = "512m") -> None:
        self.directory = directory
        self.nodes = {n: Node(n, directory / f"node-{n}") for n in range(1, nodes + 1)}
        jars = jars_dir()
        if not any(jars.glob("kafka_*.jar")):
            raise PrivateKafkaError(f"no Kafka jars in {jars} (deploy/local/up installs them)")
        self._java = [
            "java",
            "-Xms128m",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J}",
            "-cp",
            f"{jars}/*",
        ]

    @property
    def bootstrap(self) -> str:
        """Every node's client listener: clients find the others through any of them."""
        return ",".join(node.address for node in self.nodes.values())

    def live_bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes.values() if node.alive())

    # ------------------------------------------------------------ lifecycle

    def _config(self, node: Node) -> Path:
        voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in self.nodes.values())
        lines = [
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://{node.address},CONTROLLER://{HOST}:{node.controller_port}",
            f"advertised.listeners=PLAINTEXT://{node.address}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={node.directory / 'data'}",
            "num.network.threads=2",
            "num.io.threads=2",
            "num.recovery.threads.per.data.dir=1",
            f"default.replication.factor={REPLICAS}",
            f"min.insync.replicas={MIN_INSYNC_REPLICAS}",
            f"offsets.topic.replication.factor={REPLICAS}",
            "offsets.topic.num.partitions=4",
            f"transaction.state.log.replication.factor={REPLICAS}",
            f"transaction.state.log.min.isr={MIN_INSYNC_REPLICAS}",
            f"share.coordinator.state.topic.replication.factor={REPLICAS}",
            f"share.coordinator.state.topic.min.isr={MIN_INSYNC_REPLICAS}",
            "unclean.leader.election.enable=false",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "delete.topic.enable=true",
            "",
        ]
        conf = node.directory / "server.properties"
        conf.write_text("\n".join(lines))
        return conf

    def _java_for(self, node: Node) -> list[str]:
        return [*self._java, f"-Dkafka.logs.dir={node.directory / 'logs'}"]

    def start(self, timeout_s: float = 180.0) -> float:
        """Format every node's storage with one cluster id (the first time), start them
        all, and wait until every node is a registered broker; returns when. A cluster
        that does not come up is stopped before the error is raised."""
        for node in self.nodes.values():
            (node.directory / "logs").mkdir(parents=True, exist_ok=True)
        formatted = all(
            (n.directory / "data" / "meta.properties").exists() for n in self.nodes.values()
        )
        try:
            if not formatted:
                self._format()
            for node in self.nodes.values():
                self._launch(node)
            answered = self.answering(timeout_s)
            self._groups_ready(timeout_s)
            return answered
        except (PrivateKafkaError, subprocess.CalledProcessError, OSError) as exc:
            self.stop()
            if isinstance(exc, PrivateKafkaError):
                raise
            raise PrivateKafkaError(f"the Kafka cluster could not start: {exc}") from exc

    def _format(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tool = [*self._java, f"-Dkafka.logs.dir={self.directory}", "kafka.tools.StorageTool"]
        cluster = subprocess.run(
            [*tool, "random-uuid"], capture_output=True, text=True, check=True
        ).stdout.strip()
        for node in self.nodes.values():
            conf = self._config(node)
            subprocess.run(
                [*tool, "format", "--cluster-id", cluster, "--config", str(conf)],
                capture_output=True,
                check=True,
            )

    def _launch(self, node: Node) -> None:
        conf = self._config(node)
        with (node.directory / "logs" / "kafka.out").open("ab") as out:
            node.process = subprocess.Popen(
                [*self._java_for(node), "kafka.Kafka", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def answering(self, timeout_s: float) -> float:
        """Wait until the live nodes' metadata lists every live node as a broker."""
        deadline = time.monotonic() + timeout_s
        last = "no attempt"
        while time.monotonic() < deadline:
            live = [n for n in self.nodes.values() if n.alive()]
            if not live:
                raise PrivateKafkaError(
                    f"every Kafka node exited; see {self.directory}/node-*/logs"
                )
            if not all(n.accepts() for n in live):  # JVMs starting: nothing to await but ports
                time.sleep(0.2)
                continue
            try:
                brokers = {b["broker_id"] for b in self._describe_cluster()["brokers"]}
                if brokers >= {n.node_id for n in live}:
                    return time.monotonic()
                last = f"brokers registered: {sorted(brokers)}"
            except (KafkaError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        raise PrivateKafkaError(f"the Kafka cluster did not answer in {timeout_s:g}s ({last})")

    def _groups_ready(self, timeout_s: float) -> None:
        """Have the consumer-offsets topic created and led. Kafka creates it on the first
        coordinator lookup, with three replicas here; until its partitions have leaders,
        lookups fail with CoordinatorNotAvailable, which a stack starting at once would
        take for a failure."""
        deadline = time.monotonic() + timeout_s
        admin = self._admin()
        try:
            while True:
                try:
                    admin.describe_groups(["kafka-cluster-kit"])
                    break
                except KafkaError as exc:
                    if time.monotonic() > deadline:
                        raise PrivateKafkaError(f"no group coordinator: {exc}") from exc
                time.sleep(0.2)  # the topic being created: polled, never announced
        finally:
            admin.close()
        self.wait_for_leaders(CONSUMER_OFFSETS, max(1.0, deadline - time.monotonic()))

    def kill(self, node_id: int) -> None:
        """`kill -9` of one node: no flush, no controlled shutdown, no leadership handed on."""
        node = self.nodes[node_id]
        if node.process is not None and node.alive():
            os.kill(node.process.pid, signal.SIGKILL)
            node.process.wait(30)

    def stop(self) -> None:
        """SIGTERM to every node still running (SIGKILL after 30 s), by its own pid."""
        for node in self.nodes.values():
            if node.process is not None and node.alive():
                node.process.terminate()
        for node in self.nodes.values():
            if node.process is not None and node.alive():
                try:
                    node.process.wait(30)
                except subprocess.TimeoutExpired:
                    self.kill(node.node_id)

    # ------------------------------------------------------------ partitions

    def _admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(
            bootstrap_servers=self.live_bootstrap(),
            client_id="kafka-cluster-kit",
            request_timeout_ms=5000,
            bootstrap_timeout_ms=5000,
        )

    def _describe_cluster(self) -> dict[str, Any]:
        admin = self._admin()
        try:
            return dict(admin.describe_cluster())
        finally:
            admin.close()

    def controller(self) -> int:
        """The active controller: the leader of the metadata log (KRaft). A broker's
        metadata answer names a random broker as "controller" instead."""
        admin = self._admin()
        try:
            quorum = admin.describe_metadata_quorum()
        finally:
            admin.close()
        return int(quorum["topics"][0]["partitions"][0]["leader_id"])

    def partitions(
        self, topic: str, admin: KafkaAdminClient | None = None
    ) -> dict[int, tuple[int, list[int], list[int]]]:
        """partition -> (leader, replicas, in-sync replicas); leader -1 while it has none."""
        client = admin or self._admin()
        try:
            [described] = client.describe_topics([topic])
        finally:
            if admin is None:
                client.close()
        if described["error_code"] not in (0, None):
            raise PrivateKafkaError(f"{topic}: metadata error {described['error_code']}")
        return {
            p["partition_index"]: (p["leader_id"], list(p["replica_nodes"]), list(p["isr_nodes"]))
            for p in described["partitions"]
        }

    def lead_all(self, topic: str, node_id: int, timeout_s: float = 60.0) -> None:
        """Make `node_id` the leader of every partition of `topic`: it becomes each
        partition's first (preferred) replica, then a preferred election moves leadership.
        The replica sets are unchanged, so no data moves."""
        current = self.partitions(topic)
        reorder = {
            TopicPartition(topic, p): [node_id, *(r for r in replicas if r != node_id)]
            for p, (_, replicas, _) in current.items()
            if node_id in replicas and replicas[0] != node_id
        }
        admin = self._admin()
        try:
            if reorder:
                errors = admin.alter_partition_reassignments(reorder, timeout_ms=30_000)
                failed = {tp: e for tp, e in errors.items() if e is not None}
                if failed:
                    raise PrivateKafkaError(f"reordering replicas of {topic} failed: {failed}")
            deadline = time.monotonic() + timeout_s
            while True:
                admin.elect_leaders(
                    PREFERRED_ELECTION,
                    {topic: list(current)},
                    timeout_ms=30_000,
                    raise_errors=False,
                )
                leaders = {p: leader for p, (leader, _, _) in self.partitions(topic).items()}
                if set(leaders.values()) == {node_id}:
                    return
                if time.monotonic() > deadline:
                    raise PrivateKafkaError(f"{topic}: node {node_id} leads only {leaders}")
                time.sleep(0.2)  # a reassignment completing: the controller says nothing
        finally:
            admin.close()

    def wait_for_leaders(self, topic: str, timeout_s: float = 120.0) -> float:
        """Wait until every partition of `topic` has a leader among the live nodes and at
        least min.insync.replicas in sync; returns when (monotonic)."""
        live = {n.node_id for n in self.nodes.values() if n.alive()}
        deadline = time.monotonic() + timeout_s
        last: object = "no attempt"
        # One client for the whole wait: each new one would try the dead node again.
        admin = self._admin()
        try:
            while time.monotonic() < deadline:
                try:
                    described = self.partitions(topic, admin)
                    last = described
                    if all(
                        leader in live and len(set(isr) & live) >= MIN_INSYNC_REPLICAS
                        for leader, _, isr in described.values()
                    ):
                        return time.monotonic()
                except (KafkaError, OSError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                time.sleep(0.1)  # the controller fencing the dead node: polled, never announced
        finally:
            admin.close()
        raise PrivateKafkaError(f"{topic} has no live leaders after {timeout_s:g}s: {last}")


class InboxLeaderKill:
    """The leader of every partition of one topic, and the coordinator of every consumer
    group, killed with SIGKILL; the cluster's failover is the "restart"
    (tests.faults.restart_run.Restartable)."""

    def __init__(self, cluster: KafkaCluster, topic: str) -> None:
        self.cluster = cluster
        self.topic = topic
        self.leader = min(cluster.nodes)
        self.was_controller = False  # whether the killed node was the active controller
        # Leading changes after this are the fault's own (elections after the kill). A
        # group's coordinator is the leader of its consumer-offsets partition, so every
        # group's members must find a new coordinator as well as new partition leaders.
        for led in (topic, CONSUMER_OFFSETS):
            cluster.lead_all(led, self.leader)
            cluster.wait_for_leaders(led)

    def kill(self) -> None:
        self.was_controller = self.cluster.controller() == self.leader
        self.cluster.kill(self.leader)

    def start(self) -> float:
        """Wait until the surviving nodes lead every partition; the monotonic time they did."""
        self.cluster.wait_for_leaders(CONSUMER_OFFSETS)
        return self.cluster.wait_for_leaders(self.topic)


@contextmanager
def running_cluster(name: str, *, heap: str = "512m") -> Iterator[KafkaCluster]:
    """A started cluster under `cluster_root()/<name>-<hex>`, stopped afterwards and its
    data removed; one that cannot start makes the test `missing` (its logs are kept)."""
    directory = cluster_root() / f"{name}-{os.urandom(3).hex()}"
    try:
        cluster = KafkaCluster(directory, heap=heap)
        cluster.start()
    except PrivateKafkaError as exc:
        missing(f"a private Kafka cluster could not start: {exc} (logs in {directory})")
    try:
        yield cluster
    finally:
        cluster.stop()
    shutil.rmtree(directory, ignore_errors=True)
