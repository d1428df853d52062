"""Fixtures shared by every test folder: where the local stack is, and clean resources on it.

The addresses come from the same environment variables, with the same defaults, as
deploy/local/up and ota.settings:

| fixture            | type               | from                                                    |
|--------------------|--------------------|---------------------------------------------------------|
| `kafka_bootstrap`  | `str`              | OTA_KAFKA_BOOTSTRAP, else 127.0.0.1:$OTA_KAFKA_PORT     |
| `redis_url`        | `str`              | OTA_REDIS_URL, else redis://127.0.0.1:$OTA_REDIS_PORT/0 |
| `mqtt_host`        | `str`              | OTA_MQTT_HOST (127.0.0.1)                               |
| `mqtt_device_port` | `int`              | OTA_MQTT_PORT (1883)                                    |
| `mqtt_platform`    | `MqttPlatform`     | OTA_MQTT_PLATFORM_PORT/_USER/_PASSWORD                  |
| `topic_factory`    | `TopicFactory`     | creates Kafka topics for one test, deletes them after   |
| `redis_client`     | `Redis[bytes]`     | Redis db 15, flushed before and after the test          |
| `register_devices` | async callable     | registers simulated devices' secrets in the credential  |
|                    |                    | store the broker checks (OTA_CREDENTIALS_REDIS_URL)     |

Each service fixture first checks that the service answers. When it does not, the test
fails with the reason if CI is set (CI must never skip silently), and is skipped with the
reason otherwise (start the stack with `make stack`).

Tests under tests/integration, tests/e2e and tests/faults are marked `integration`
automatically, so `pytest -m "not integration"` runs only the pure tests.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, NoReturn, Protocol
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from devices.fleet import DEFAULT_SEED, derived_secret
from scheduler.credential_import import import_pairs
from scheduler.secretbox import DEV_CREDENTIAL_KEYS, CredentialKeys

INTEGRATION_DIRS = ("integration", "e2e", "faults")
TESTS_DIR = Path(__file__).resolve().parent
SCRATCH_REDIS_DB = 15
UNKNOWN_TOPIC = 3  # Kafka protocol error UNKNOWN_TOPIC_OR_PARTITION


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(message: str) -> NoReturn:
    """Something a test needs is absent: fail under CI (never a silent skip), skip elsewhere."""
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _unavailable(what: str, reason: str) -> NoReturn:
    missing(f"{what} is not answering ({reason}); start the local stack with `make stack`")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks every test under tests/{integration,e2e,faults} with `integration`."""
    roots = [TESTS_DIR / name for name in INTEGRATION_DIRS]
    for item in items:
        path = item.path.resolve()
        if any(path.is_relative_to(root) for root in roots):
            item.add_marker(pytest.mark.integration)


# --- Kafka ------------------------------------------------------------------------------


def _admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="ota-tests",
        request_timeout_ms=10_000,
        bootstrap_timeout_ms=5_000,
    )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """`host:port` of a Kafka broker that answered a metadata request."""
    bootstrap = _env("OTA_KAFKA_BOOTSTRAP", f"127.0.0.1:{_env('OTA_KAFKA_PORT', '9092')}")
    try:
        admin = _admin(bootstrap)
        try:
            admin.describe_cluster()
        finally:
            admin.close()
    except (KafkaError, OSError) as exc:
        _unavailable(f"Kafka at {bootstrap}", f"{type(exc).__name__}: {exc}")
    return bootstrap


class TopicFactory(Protocol):
    """`topic_factory("inbox", partitions=4)` -> a new, empty topic's unique name."""

    def __call__(
        self, base: str, partitions: int = 1, configs: dict[str, str] | None = None
    ) -> str: ...


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Iterator[TopicFactory]:
    """Creates uniquely named topics (`test.<base>.<hex>`, after OTA_TOPIC_PREFIX) for one
    test, waits until every partition has a leader, and deletes them after the test."""
    admin = _admin(kafka_bootstrap)
    created: list[str] = []
    prefix = os.environ.get("OTA_TOPIC_PREFIX", "")

    def create(base: str, partitions: int = 1, configs: dict[str, str] | None = None) -> str:
        name = f"{prefix}test.{base}.{uuid.uuid4().hex[:12]}"
        spec = {"num_partitions": partitions, "replication_factor": 1, "configs": configs or {}}
        admin.create_topics({name: spec}, timeout_ms=30_000, wait_for_metadata=True)
        created.append(name)
        return name

    try:
        yield create
    finally:
        try:
            if created:
                result = admin.delete_topics(created, timeout_ms=30_000, raise_errors=False)
                failed = [
                    f"{t['name']}: error {t['error_code']}"
                    for t in result["topics"]
                    if t["error_code"] not in (0, UNKNOWN_TOPIC)  # the test may delete its own
                ]
                assert not failed, f"could not delete test topics: {failed}"
        finally:
            admin.close()


# --- Redis ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a Redis server that answered PING (the services' own db, usually 0)."""
    url = _env("OTA_REDIS_URL", f"redis://127.0.0.1:{_env('OTA_REDIS_PORT', '6379')}/0")
    try:
        with redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5) as client:
            client.ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis at {url}", f"{type(exc).__name__}: {exc}")
    return url


class RegisterDevices(Protocol):
    async def __call__(self, device_ids: Sequence[str], seed: str = DEFAULT_SEED) -> None: ...


@pytest.fixture(scope="session")
def register_devices(redis_url: str) -> RegisterDevices:
    """Registers devices with secrets derived from `seed` (as simulated fleets use) in the
    credential store the broker checks, as the scheduler's bulk import would: a device
    must prove its identity to connect."""
    db1 = urlunsplit(urlsplit(redis_url)._replace(path="/1"))
    url = _env("OTA_CREDENTIALS_REDIS_URL", db1)

    async def register(device_ids: Sequence[str], seed: str = DEFAULT_SEED) -> None:
        keys = CredentialKeys.parse(DEV_CREDENTIAL_KEYS)
        await import_pairs(url, keys, ((d, derived_secret(seed, d)) for d in device_ids))

    return register


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    """A client (bytes replies) on scratch db 15, flushed before and after the test."""
    # A URL's db path wins over a `db=` argument in redis-py, so the path is replaced.
    client = redis.Redis.from_url(
        urlunsplit(urlsplit(redis_url)._replace(path=f"/{SCRATCH_REDIS_DB}"))
    )
    # FLUSHDB is destructive: make sure of the db (a ?db= query would also win).
    db = client.connection_pool.connection_kwargs.get("db")
    if db != SCRATCH_REDIS_DB:
        client.close()
        pytest.fail(f"redis_client would flush db {db} of {redis_url}, not {SCRATCH_REDIS_DB}")
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


# --- MQTT -------------------------------------------------------------------------------


class MqttPlatform(NamedTuple):
    """The broker's platform listener and the account services use on it."""

    host: str
    port: int
    user: str
    password: str


def _mqtt_connack(host: str, port: int, user: str | None, password: str | None) -> int:
    """Sends a bare MQTT 3.1.1 CONNECT and returns the CONNACK return code (0 = accepted)."""

    def field(text: str) -> bytes:
        data = text.encode()
        return len(data).to_bytes(2, "big") + data

    flags = 0x02 | (0x80 if user is not None else 0) | (0x40 if password is not None else 0)
    body = field("MQTT") + bytes([4, flags]) + (10).to_bytes(2, "big")
    body += field(f"ota-tests-probe-{uuid.uuid4().hex[:8]}")
    body += (field(user) if user is not None else b"") + (
        field(password) if password is not None else b""
    )
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        reply = sock.recv(4)
        sock.sendall(b"\xe0\x00")  # DISCONNECT
    if len(reply) < 4 or reply[0] != 0x20:
        raise OSError(f"not an MQTT CONNACK: {reply!r}")
    return reply[3]


@pytest.fixture(scope="session")
def mqtt_host() -> str:
    """Host of both MQTT listeners."""
    return _env("OTA_MQTT_HOST", "127.0.0.1")


@pytest.fixture(scope="session")
def mqtt_device_port(mqtt_host: str) -> int:
    """Port of the device listener (plain MQTT, for development: IoTDA credentials).
    Checked with a TCP connect only: an MQTT probe would look like a device coming online."""
    port = int(_env("OTA_MQTT_PORT", "1883"))
    try:
        socket.create_connection((mqtt_host, port), timeout=5).close()
    except OSError as exc:
        _unavailable(f"MQTT device listener at {mqtt_host}:{port}", str(exc))
    return port


@pytest.fixture(scope="session")
def mqtt_platform(mqtt_host: str) -> MqttPlatform:
    """The platform listener and its account, after the broker accepted that account."""
    platform = MqttPlatform(
        host=mqtt_host,
        port=int(_env("OTA_MQTT_PLATFORM_PORT", "1884")),
        user=_env("OTA_MQTT_PLATFORM_USER", "ota-platform"),
        password=_env("OTA_MQTT_PLATFORM_PASSWORD", "ota-platform-secret"),
    )
    where = f"MQTT platform listener at {platform.host}:{platform.port}"
    try:
        code = _mqtt_connack(platform.host, platform.port, platform.user, platform.password)
    except OSError as exc:
        _unavailable(where, str(exc))
    if code != 0:
        _unavailable(where, f"CONNACK {code} for user {platform.user!r}: wrong password?")
    return platform


@pytest.fixture(scope="session")
def mqtt_env(mqtt_device_port: int, mqtt_platform: MqttPlatform) -> dict[str, str]:
    """The OTA_MQTT_* variables of the listeners in use, for services a test starts."""
    return {
        "OTA_MQTT_HOST": mqtt_platform.host,
        "OTA_MQTT_PORT": str(mqtt_device_port),
        "OTA_MQTT_PLATFORM_PORT": str(mqtt_platform.port),
        "OTA_MQTT_PLATFORM_USER": mqtt_platform.user,
        "OTA_MQTT_PLATFORM_PASSWORD": mqtt_platform.password,
    }
