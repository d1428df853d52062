"""A private one-node Kafka (KRaft, broker and controller in one process) for fault runs.

The shared local Kafka serves everyone on the machine, so a run that kills Kafka starts
its own: the jars deploy/local/up installed (`<state>/kafka/jars`), free ports, and a data
directory of its own. `kill()` is `kill -9`; `start()` again reuses the data directory,
as a restarted broker would. `answering()` waits until a metadata request is answered.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from ops.demo_env import free_port

REPO = Path(__file__).resolve().parents[3]
LOG4J = REPO / "deploy" / "local" / "kafka-log4j2.properties"
HOST = "127.0.0.1"


class KafkaNodeError(RuntimeError):
    """The private Kafka could not be installed, started or reached."""


def jars_dir() -> Path:
    state = Path(os.environ.get("OTA_STATE_DIR", REPO / ".state"))
    return state / "kafka" / "jars"


class KafkaNode:
    def __init__(self, directory: Path, *, partitions: int = 4) -> None:
        self.directory = directory
        self.port = free_port()
        self.controller_port = free_port()
        self.partitions = partitions
        self.process: subprocess.Popen[bytes] | None = None
        jars = jars_dir()
        if not any(jars.glob("kafka_*.jar")):
            raise KafkaNodeError(f"no Kafka jars in {jars} (deploy/local/up installs them)")
        self._java = [
            "java",
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={directory / 'logs'}",
            f"-Dlog4j2.configurationFile={LOG4J}",
            "-cp",
            f"{jars}/*",
        ]

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def _config(self) -> Path:
        conf = self.directory / "server.properties"
        conf.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{HOST}:{self.controller_port}",
                    f"listeners=PLAINTEXT://{HOST}:{self.port},"
                    f"CONTROLLER://{HOST}:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://{HOST}:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={self.directory / 'data'}",
                    "num.network.threads=2",
                    "num.io.threads=2",
                    "num.recovery.threads.per.data.dir=1",
                    f"num.partitions={self.partitions}",
                    "default.replication.factor=1",
                    "min.insync.replicas=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "delete.topic.enable=true",
                    "",
                ]
            )
        )
        return conf

    def start(self, timeout_s: float = 90.0) -> float:
        """Start the node (formatting its storage the first time) and wait until it
        answers; returns the monotonic time it first answered."""
        if self.process is not None and self.process.poll() is None:
            raise KafkaNodeError("the private Kafka is already running")
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        conf = self._config()
        if not (self.directory / "data" / "meta.properties").exists():
            cluster = subprocess.run(
                [*self._java, "kafka.tools.StorageTool", "random-uuid"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            subprocess.run(
                [
                    *self._java,
                    "kafka.tools.StorageTool",
                    "format",
                    "--cluster-id",
                    cluster,
                    "--config",
                    str(conf),
                    "--ignore-formatted",
                ],
                capture_output=True,
                check=True,
            )
        with (self.directory / "logs" / "kafka.out").open("ab") as out:
            self.process = subprocess.Popen(
                [*self._java, "kafka.Kafka", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self.answering(timeout_s)

    def answering(self, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise KafkaNodeError(f"the private Kafka exited; see {self.directory}/logs")
            if not self._accepts():  # kafka-python leaks a socket per refused bootstrap
                time.sleep(0.1)
                continue
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    client_id="fault-kafka-probe",
                    request_timeout_ms=2000,
                    bootstrap_timeout_ms=2000,
                )
                try:
                    admin.describe_cluster()
                    return time.monotonic()
                finally:
                    admin.close()
            except (KafkaError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise KafkaNodeError(f"the private Kafka did not answer in {timeout_s:g}s ({last})")

    def _accepts(self) -> bool:
        try:
            socket.create_connection((HOST, self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        """`kill -9`: no flush, no controlled shutdown."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
