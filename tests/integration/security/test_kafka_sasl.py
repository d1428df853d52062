"""The services' Kafka clients with SASL (SCRAM-SHA-512, PLAIN) and TLS, against a real
private Kafka (tests/kafka_kit.py): the right credentials produce and consume; a wrong
password, an unknown user, no SASL at all and an untrusted CA are refused."""

from __future__ import annotations

import gc
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError

from ota.kafka_clients import make_admin, make_consumer, make_producer
from ota.settings import CommonSettings
from tests.kafka_kit import USER, PrivateKafka, Sasl, running_kafka

ROOT = Path(__file__).resolve().parents[3]
SCRAM_PASSWORD = "scram-" + uuid.uuid4().hex
PLAIN_PASSWORD = "plain-" + uuid.uuid4().hex
TOPIC = "security.sasl"


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory, tls_dir: Path) -> Iterator[PrivateKafka]:
    sasl = Sasl(tls_dir, SCRAM_PASSWORD, PLAIN_PASSWORD)
    with running_kafka(tmp_path_factory.mktemp("sasl-kafka"), sasl=sasl) as node:
        admin = KafkaAdminClient(bootstrap_servers=node.bootstrap)
        try:
            admin.create_topics([NewTopic(TOPIC, 1, 1)])
        finally:
            admin.close()
        yield node


def settings(
    bootstrap: str, protocol: str, mechanism: str, password: str, **extra: str
) -> CommonSettings:
    return CommonSettings.from_env(
        {
            "OTA_KAFKA_BOOTSTRAP": bootstrap,
            "OTA_KAFKA_SECURITY_PROTOCOL": protocol,
            "OTA_KAFKA_SASL_MECHANISM": mechanism,
            "OTA_KAFKA_SASL_USERNAME": extra.pop("user", USER),
            "OTA_KAFKA_SASL_PASSWORD": password,
            **extra,
        }
    )


@pytest.fixture(autouse=True)
def collect_refused_sockets() -> Iterator[None]:
    """kafka-python leaves the sockets of a refused bootstrap or TLS handshake to the
    garbage collector: they are collected after each test with their ResourceWarning
    silenced, rather than reported at the end of the session."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def assert_refused(common: CommonSettings) -> None:
    """The admin client cannot get past the listener."""
    with pytest.raises(KafkaError):
        make_admin(common, request_timeout_ms=5000, bootstrap_timeout_ms=5000)


def round_trip(common: CommonSettings) -> list[bytes]:
    value = uuid.uuid4().hex.encode()
    producer = make_producer(common, client_id="security-test")
    try:
        producer.send(TOPIC, key=b"k", value=value).get(timeout=30)
    finally:
        producer.close()
    consumer = make_consumer(common, group_id=None, client_id="security-test")
    try:
        consumer.subscribe([TOPIC])
        for _ in range(30):
            for batch in consumer.poll(timeout_ms=1000).values():
                if any(r.value == value for r in batch):
                    return [value]
    finally:
        consumer.close()
    return []


@pytest.mark.parametrize(
    ("listener", "protocol", "mechanism", "password"),
    [
        ("sasl", "SASL_PLAINTEXT", "SCRAM-SHA-512", SCRAM_PASSWORD),
        ("sasl", "SASL_PLAINTEXT", "PLAIN", PLAIN_PASSWORD),
        ("secure", "SASL_SSL", "SCRAM-SHA-512", SCRAM_PASSWORD),
    ],
)
def test_the_right_user_produces_and_consumes(
    kafka: PrivateKafka, tls_dir: Path, listener: str, protocol: str, mechanism: str, password: str
) -> None:
    extra = {"OTA_KAFKA_SSL_CA_FILE": str(tls_dir / "ca.pem")} if listener == "secure" else {}
    common = settings(kafka.address(listener), protocol, mechanism, password, **extra)
    assert round_trip(common)
    admin = make_admin(common)
    try:
        assert TOPIC in admin.list_topics()
    finally:
        admin.close()


@pytest.mark.parametrize(
    ("mechanism", "password", "user"),
    [
        ("SCRAM-SHA-512", "not-the-password", USER),
        ("PLAIN", "not-the-password", USER),
        ("SCRAM-SHA-512", SCRAM_PASSWORD, "someone-else"),
    ],
    ids=["scram-wrong-password", "plain-wrong-password", "unknown-user"],
)
def test_bad_credentials_are_refused(
    kafka: PrivateKafka, mechanism: str, password: str, user: str
) -> None:
    common = settings(kafka.address("sasl"), "SASL_PLAINTEXT", mechanism, password, user=user)
    assert_refused(common)


def test_a_client_without_sasl_is_refused(kafka: PrivateKafka) -> None:
    common = CommonSettings.from_env({"OTA_KAFKA_BOOTSTRAP": kafka.address("sasl")})
    assert_refused(common)


# In a process of its own: kafka-python keeps the sockets of a failed TLS handshake alive
# until the interpreter ends, which pytest would report as unclosed.
REFUSED_PROBE = """
import os, sys
from kafka.errors import KafkaError
from ota.kafka_clients import make_admin
from ota.settings import CommonSettings
try:
    make_admin(CommonSettings.from_env(), request_timeout_ms=5000, bootstrap_timeout_ms=5000)
except KafkaError as exc:
    print("refused:", type(exc).__name__)
    sys.exit(0)
sys.exit(1)
"""


def test_a_broker_another_ca_signed_is_refused(
    kafka: PrivateKafka, tls_dir: Path, other_ca: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "OTA_KAFKA_BOOTSTRAP": kafka.address("secure"),
        "OTA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "OTA_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "OTA_KAFKA_SASL_USERNAME": USER,
        "OTA_KAFKA_SASL_PASSWORD": SCRAM_PASSWORD,
        "OTA_KAFKA_SSL_CA_FILE": str(other_ca / "ca.pem"),
    }
    probe = subprocess.run(
        [sys.executable, "-c", REFUSED_PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr[-2000:]
    assert probe.stdout.startswith("refused:")
    # The same client, trusting the right CA, gets through (the probe is not just broken).
    env["OTA_KAFKA_SSL_CA_FILE"] = str(tls_dir / "ca.pem")
    trusted = subprocess.run(
        [sys.executable, "-c", REFUSED_PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert trusted.returncode == 1, trusted.stdout + trusted.stderr[-2000:]
