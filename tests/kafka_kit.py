"""A private one-node Kafka (KRaft, broker and controller in one process) for tests that
may not use the shared one: fault runs that kill it, security tests that need SASL and TLS.

The shared local Kafka serves everyone on the machine and is plaintext, so these tests
start their own from the jars deploy/local/up installed (`<state>/kafka/jars`), on free
ports, with a data directory of their own. Its listeners:

| listener | protocol | address | for |
|---|---|---|---|
| INTERNAL | PLAINTEXT | `bootstrap` | clients without SASL, inter-broker, test set-up |
| SASL | SASL_PLAINTEXT | `address("sasl")` | SCRAM-SHA-512 and PLAIN users (with `Sasl`) |
| SECURE | SASL_SSL | `address("secure")` | the same users over TLS (with `Sasl`) |

With `Sasl`, the SCRAM user is created when the storage is formatted (KRaft's
`--add-scram`) and the PLAIN user is in the listeners' JAAS line; the TLS certificate is
the local CA's (deploy/local/make_certs.py writes `server.p12` and its password).

`start()` formats the storage the first time and waits until a metadata request is
answered; `kill()` is `kill -9`; `start()` again reuses the data directory, as a restarted
broker would. `stop()` ends the node by its own process id. Every failure raises
`PrivateKafkaError`; `running_kafka()`, for fixtures, turns it into `tests.conftest.missing`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from ops.demo_env import free_port
from tests.conftest import missing

REPO = Path(__file__).resolve().parents[1]
LOG4J = REPO / "deploy" / "local" / "kafka-log4j2.properties"
HOST = "127.0.0.1"
USER = "ota-service"


class PrivateKafkaError(RuntimeError):
    """The private Kafka could not be installed, started or reached."""


@dataclass(frozen=True)
class Sasl:
    """SASL listeners (plain and over TLS) for one user, `USER`, with two passwords."""

    tls_dir: Path  # make_certs.py's output: server.p12, server.p12.pass, ca.pem
    scram_password: str
    plain_password: str


def jars_dir() -> Path:
    state = Path(os.environ.get("OTA_STATE_DIR", REPO / ".state"))
    return state / "kafka" / "jars"


class PrivateKafka:
    def __init__(self, directory: Path, *, partitions: int = 4, sasl: Sasl | None = None):
        self.directory = directory
        self.partitions = partitions
        self.sasl = sasl
        self.ports = {"internal": free_port(), "controller": free_port()}
        if sasl is not None:
            self.ports |= {"sasl": free_port(), "secure": free_port()}
        self.process: subprocess.Popen[bytes] | None = None
        jars = jars_dir()
        if not any(jars.glob("kafka_*.jar")):
            raise PrivateKafkaError(f"no Kafka jars in {jars} (deploy/local/up installs them)")
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

    def address(self, listener: str) -> str:
        return f"{HOST}:{self.ports[listener]}"

    @property
    def bootstrap(self) -> str:
        """The plaintext listener."""
        return self.address("internal")

    def _listener_lines(self) -> list[str]:
        clients = {"INTERNAL": "PLAINTEXT"}
        if self.sasl is not None:
            clients |= {"SASL": "SASL_PLAINTEXT", "SECURE": "SASL_SSL"}
        client_listeners = ",".join(f"{name}://{self.address(name.lower())}" for name in clients)
        protocols = ",".join(f"{name}:{protocol}" for name, protocol in clients.items())
        lines = [
            f"listeners={client_listeners},CONTROLLER://{self.address('controller')}",
            f"advertised.listeners={client_listeners}",
            f"listener.security.protocol.map=CONTROLLER:PLAINTEXT,{protocols}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=INTERNAL",
        ]
        if self.sasl is None:
            return lines
        keystore_password = (self.sasl.tls_dir / "server.p12.pass").read_text().strip()
        plain_jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{USER}="{self.sasl.plain_password}";'
        )
        scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return [
            *lines,
            "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN",
            *(
                f"listener.name.{name}.{mechanism}.sasl.jaas.config={jaas}"
                for name in ("sasl", "secure")
                for mechanism, jaas in (("scram-sha-512", scram_jaas), ("plain", plain_jaas))
            ),
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={self.sasl.tls_dir / 'server.p12'}",
            f"ssl.keystore.password={keystore_password}",
        ]

    def _config(self) -> Path:
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{self.address('controller')}",
            *self._listener_lines(),
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
        conf = self.directory / "server.properties"
        conf.write_text("\n".join(lines))
        conf.chmod(0o600)  # the keystore password, with Sasl
        return conf

    def _format(self, conf: Path) -> None:
        tool = [*self._java, "kafka.tools.StorageTool"]
        cluster = subprocess.run(
            [*tool, "random-uuid"], capture_output=True, text=True, check=True
        ).stdout.strip()
        scram = (
            []
            if self.sasl is None
            else ["--add-scram", f"SCRAM-SHA-512=[name={USER},password={self.sasl.scram_password}]"]
        )
        subprocess.run(
            [*tool, "format", "--cluster-id", cluster, "--config", str(conf), *scram],
            capture_output=True,
            check=True,
        )

    def start(self, timeout_s: float = 120.0) -> float:
        """Start the node (formatting its storage the first time) and wait until it
        answers; returns the monotonic time it first answered. A node that does not
        answer is stopped before the error is raised."""
        if self.process is not None and self.process.poll() is None:
            raise PrivateKafkaError("the private Kafka is already running")
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        conf = self._config()
        try:
            if not (self.directory / "data" / "meta.properties").exists():
                self._format(conf)
            with (self.directory / "logs" / "kafka.out").open("ab") as out:
                self.process = subprocess.Popen(
                    [*self._java, "kafka.Kafka", str(conf)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        except (subprocess.CalledProcessError, OSError) as exc:
            raise PrivateKafkaError(f"the private Kafka could not start: {exc}") from exc
        try:
            return self.answering(timeout_s)
        except PrivateKafkaError:
            self.stop()
            raise

    def answering(self, timeout_s: float) -> float:
        """Wait until the plaintext listener answers a metadata request; returns when."""
        deadline = time.monotonic() + timeout_s
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise PrivateKafkaError(f"the private Kafka exited; see {self.directory}/logs")
            if not self._accepts():  # kafka-python leaks a socket per refused bootstrap
                time.sleep(0.1)  # a JVM starting: nothing to await but its listener
                continue
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    client_id="private-kafka-probe",
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
        raise PrivateKafkaError(f"the private Kafka did not answer in {timeout_s:g}s ({last})")

    def _accepts(self) -> bool:
        try:
            socket.create_connection((HOST, self.ports["internal"]), timeout=1).close()
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


@contextmanager
def running_kafka(
    directory: Path, *, partitions: int = 4, sasl: Sasl | None = None
) -> Iterator[PrivateKafka]:
    """A started node, stopped afterwards; one that cannot start makes the test `missing`."""
    try:
        node = PrivateKafka(directory, partitions=partitions, sasl=sasl)
        node.start()
    except PrivateKafkaError as exc:
        missing(f"a private Kafka could not start: {exc}")
    try:
        yield node
    finally:
        node.stop()
