"""A private one-node Kafka (KRaft) whose client listeners ask for SASL, plain and over TLS.

The shared local Kafka is plaintext and serves everyone, so the SASL and TLS tests start
their own from the jars deploy/local/up installed, on free ports:

| listener | protocol | for |
|---|---|---|
| INTERNAL | PLAINTEXT | the broker itself (inter-broker), and test set-up (topics) |
| SASL | SASL_PLAINTEXT | SCRAM-SHA-512 and PLAIN users |
| SECURE | SASL_SSL | the same users over TLS, certificate from the local CA |

The SCRAM user is created when the storage is formatted (KRaft's `--add-scram`); the PLAIN
user is in the listener's JAAS line. `stop()` ends the node by its own process id.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from tests.conftest import missing

REPO = Path(__file__).resolve().parents[3]
LOG4J = REPO / "deploy" / "local" / "kafka-log4j2.properties"
HOST = "127.0.0.1"
USER = "ota-service"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class SaslKafka:
    def __init__(self, directory: Path, tls_dir: Path, scram_password: str, plain_password: str):
        self.directory, self.tls_dir = directory, tls_dir
        self.scram_password, self.plain_password = scram_password, plain_password
        self.internal, self.sasl, self.secure, self.controller = (_free_port() for _ in range(4))
        self.process: subprocess.Popen[bytes] | None = None
        state = Path(os.environ.get("OTA_STATE_DIR", REPO / ".state"))
        jars = state / "kafka" / "jars"
        if not any(jars.glob("kafka_*.jar")):
            missing(f"no Kafka jars in {jars} (deploy/local/up installs them)")
        self._java = [
            "java",
            "-Xms128m",
            "-Xmx384m",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={directory / 'logs'}",
            f"-Dlog4j2.configurationFile={LOG4J}",
            "-cp",
            f"{jars}/*",
        ]

    def address(self, listener: str) -> str:
        return f"{HOST}:{getattr(self, listener)}"

    def _config(self) -> Path:
        keystore_password = (self.tls_dir / "server.p12.pass").read_text().strip()
        plain_jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{USER}="{self.plain_password}";'
        )
        scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{HOST}:{self.controller}",
            f"listeners=INTERNAL://{HOST}:{self.internal},SASL://{HOST}:{self.sasl},"
            f"SECURE://{HOST}:{self.secure},CONTROLLER://{HOST}:{self.controller}",
            f"advertised.listeners=INTERNAL://{HOST}:{self.internal},SASL://{HOST}:{self.sasl},"
            f"SECURE://{HOST}:{self.secure}",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,"
            "SASL:SASL_PLAINTEXT,SECURE:SASL_SSL",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=INTERNAL",
            "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN",
            *(
                f"listener.name.{name}.{mechanism}.sasl.jaas.config={jaas}"
                for name in ("sasl", "secure")
                for mechanism, jaas in (("scram-sha-512", scram_jaas), ("plain", plain_jaas))
            ),
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={self.tls_dir / 'server.p12'}",
            f"ssl.keystore.password={keystore_password}",
            f"log.dirs={self.directory / 'data'}",
            "num.network.threads=2",
            "num.io.threads=2",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "",
        ]
        conf = self.directory / "server.properties"
        conf.write_text("\n".join(lines))
        conf.chmod(0o600)
        return conf

    def start(self, timeout_s: float = 120.0) -> None:
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        conf = self._config()
        tool = [*self._java, "kafka.tools.StorageTool"]
        cluster = subprocess.run(
            [*tool, "random-uuid"], capture_output=True, text=True, check=True
        ).stdout.strip()
        subprocess.run(
            [
                *tool,
                "format",
                "--cluster-id",
                cluster,
                "--config",
                str(conf),
                "--add-scram",
                f"SCRAM-SHA-512=[name={USER},password={self.scram_password}]",
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
        self._wait(timeout_s)

    def _wait(self, timeout_s: float) -> None:
        """Until the plaintext internal listener answers a metadata request."""
        deadline = time.monotonic() + timeout_s
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                missing(f"the private SASL Kafka exited; see {self.directory}/logs")
            try:
                socket.create_connection((HOST, self.internal), timeout=1).close()
                admin = KafkaAdminClient(
                    bootstrap_servers=self.address("internal"),
                    request_timeout_ms=3000,
                    bootstrap_timeout_ms=3000,
                )
                try:
                    admin.describe_cluster()
                    return
                finally:
                    admin.close()
            except (KafkaError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)  # a JVM starting: nothing to await but its listener
        missing(f"the private SASL Kafka did not answer in {timeout_s:g}s ({last})")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
