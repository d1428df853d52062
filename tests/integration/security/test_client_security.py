"""Services' Kafka and Redis clients with the security settings, against real servers.

Kafka: the shared stack's plaintext listener keeps working with the default settings.
Redis: a private redis-server with its default user off and one ACL user, plain and TLS
(certificates from deploy/local/make_certs.py's CA), accepts the configured user and
refuses a wrong password and no credentials.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ota.kafka_clients import make_admin, make_consumer, make_producer
from ota.redis_clients import make_redis
from ota.settings import CommonSettings
from tests.conftest import TopicFactory
from tests.redis_kit import PrivateRedis, acl_lines, running_redis, tls_lines

USER = "ota-service"
PASSWORD = "a-random-redis-password-" + uuid.uuid4().hex


def test_default_settings_still_reach_the_plaintext_kafka(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    settings = CommonSettings.from_env({"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap})
    assert settings.kafka_security.protocol == "PLAINTEXT"
    topic = topic_factory("security")
    producer = make_producer(settings, client_id="ota-security-test")
    try:
        producer.send(topic, key=b"k", value=b"plaintext works").get(timeout=30)
    finally:
        producer.close()
    consumer = make_consumer(settings, group_id=None, client_id="ota-security-test")
    try:
        consumer.subscribe([topic])
        values: list[bytes] = []
        for _ in range(30):
            for batch in consumer.poll(timeout_ms=1000).values():
                values.extend(record.value for record in batch)
            if values:
                break
        assert values == [b"plaintext works"]
    finally:
        consumer.close()
    admin = make_admin(settings)
    try:
        assert topic in admin.list_topics()
    finally:
        admin.close()


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    workdir = tmp_path_factory.mktemp("redis-acl")
    with running_redis(workdir, extra=acl_lines(USER, PASSWORD)) as server:
        yield server


def _settings(url: str, **extra: str) -> CommonSettings:
    return CommonSettings.from_env({"OTA_REDIS_URL": url, **extra})


def test_the_acl_user_from_settings_is_accepted(acl_redis: PrivateRedis) -> None:
    settings = _settings(acl_redis.url(), OTA_REDIS_USERNAME=USER, OTA_REDIS_PASSWORD=PASSWORD)
    client = make_redis(settings)
    try:
        client.set("ota:security:probe", b"1")
        assert client.get("ota:security:probe") == b"1"
        assert client.acl_whoami() == USER
    finally:
        client.close()


def test_the_password_may_come_from_a_file(acl_redis: PrivateRedis, tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text(PASSWORD + "\n")
    client = make_redis(
        _settings(acl_redis.url(), OTA_REDIS_USERNAME=USER, OTA_REDIS_PASSWORD_FILE=str(secret))
    )
    try:
        assert client.ping()
    finally:
        client.close()


@pytest.mark.parametrize(
    "extra",
    [
        {"OTA_REDIS_USERNAME": USER, "OTA_REDIS_PASSWORD": "not-the-password"},
        {"OTA_REDIS_USERNAME": "someone-else", "OTA_REDIS_PASSWORD": PASSWORD},
        {},
    ],
    ids=["wrong-password", "unknown-user", "no-credentials"],
)
def test_bad_credentials_are_refused(acl_redis: PrivateRedis, extra: dict[str, str]) -> None:
    client = make_redis(_settings(acl_redis.url(), **extra))
    try:
        # redis-py raises AuthenticationError for both WRONGPASS and NOAUTH replies.
        with pytest.raises(redis.AuthenticationError):
            client.ping()
    finally:
        client.close()


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, tls_dir: Path) -> Iterator[PrivateRedis]:
    workdir = tmp_path_factory.mktemp("redis-tls-data")
    extra = [*acl_lines(USER, PASSWORD), *tls_lines(tls_dir)]
    with running_redis(workdir, extra=extra, tls=True) as server:
        yield server


def test_rediss_with_the_ca_and_the_acl_user(tls_redis: PrivateRedis, tls_dir: Path) -> None:
    settings = _settings(
        tls_redis.url(),
        OTA_REDIS_USERNAME=USER,
        OTA_REDIS_PASSWORD=PASSWORD,
        OTA_REDIS_TLS_CA_FILE=str(tls_dir / "ca.pem"),
    )
    client = make_redis(settings)
    try:
        assert client.acl_whoami() == USER
    finally:
        client.close()


def test_rediss_refuses_a_server_the_ca_did_not_sign(
    tls_redis: PrivateRedis, other_ca: Path
) -> None:
    settings = _settings(
        tls_redis.url(),
        OTA_REDIS_USERNAME=USER,
        OTA_REDIS_PASSWORD=PASSWORD,
        OTA_REDIS_TLS_CA_FILE=str(other_ca / "ca.pem"),
    )
    client = make_redis(settings)
    try:
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            client.ping()
    finally:
        client.close()
