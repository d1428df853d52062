"""Fixtures for the device broker's tests: one broker process for the folder, pointed at an
authentication server in the test process, and clients to talk to it.

| fixture     | what                                                                    |
|-------------|-------------------------------------------------------------------------|
| `auth`      | the `AuthServer` (credential table, failure modes; mode reset per test) |
| `broker`    | the running `BrokerProcess` (ports, CA, platform account, log, metrics) |
| `device`    | `device()` -> a new `DeviceCreds` registered with `auth`                |
| `platform`  | a connected gmqtt platform client collecting what it receives           |
| `redis_broker` | a second broker in redis mode, on the stack's Redis, database 2        |
| `credentials`  | the real `scheduler.credentials.Credentials` on that database           |

No sleeps: `Inbox.wait_for` awaits a message with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio
from gmqtt import Client, Subscription
from gmqtt.mqtt.constants import MQTTv50

from scheduler.credentials import Credentials, announce_revocation
from scheduler.secretbox import DEV_CREDENTIAL_KEYS, CredentialKeys, SecretBox
from tests.conftest import missing

from .authserver import AuthServer, iotda_hour, iotda_password
from .broker_support import BrokerProcess, broker_lib, start_broker

AUTH_KEY = "test-broker-key"
AUTH_TIMEOUT_MS = 800  # short, so the "slow endpoint" test is quick
# redis mode's credential store: a database of the stack's Redis that nothing else uses
# (the stack's credentials are in 1), flushed when the session starts.
CREDENTIALS_DB = 2


@pytest.fixture(scope="session")
def auth_server() -> Iterator[AuthServer]:
    server = AuthServer(AUTH_KEY)
    yield server
    server.close()


@pytest.fixture
def auth(auth_server: AuthServer) -> Iterator[AuthServer]:
    auth_server.set_mode("normal")
    yield auth_server
    auth_server.set_mode("normal")


def _checked_lib() -> Path:
    lib = broker_lib()
    if not (lib / "ota-broker.jar").is_file():
        missing(f"no broker build in {lib}; run deploy/local/up (or set OTA_BROKER_LIB)")
    if shutil.which("java") is None:
        missing("java is not installed; deploy/local/up installs it")
    return lib


@pytest.fixture(scope="session")
def broker(
    auth_server: AuthServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    lib = _checked_lib()
    state = tmp_path_factory.mktemp("broker")
    process = start_broker(
        lib, state, auth_server.url, AUTH_KEY, OTA_BROKER_AUTH_TIMEOUT_MS=str(AUTH_TIMEOUT_MS)
    )
    yield process
    process.stop()


@pytest.fixture(scope="session")
def credentials_url() -> str:
    """The credential store of redis mode, emptied once per session."""
    stack = urlsplit(os.environ.get("OTA_REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0")
    url = urlunsplit((stack.scheme, stack.netloc, f"/{CREDENTIALS_DB}", "", ""))
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError:
        missing(f"no Redis at {stack.netloc}; run deploy/local/up")
    client.flushdb()
    client.close()
    return url


@pytest.fixture(scope="session")
def redis_broker(
    credentials_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    """A broker reading `credentials_url` directly (redis mode), with the dev keys."""
    process = start_broker(
        _checked_lib(),
        tmp_path_factory.mktemp("redis-broker"),
        OTA_BROKER_AUTH_MODE="redis",
        OTA_BROKER_REDIS_URL=credentials_url,
        OTA_CREDENTIAL_KEYS=DEV_CREDENTIAL_KEYS,
        OTA_BROKER_AUTH_TIMEOUT_MS=str(AUTH_TIMEOUT_MS),
    )
    yield process
    process.stop()


@pytest.fixture
async def credentials(credentials_url: str) -> AsyncIterator[Credentials]:
    """The scheduler's own credentials class on the store, announcing revocations as the
    scheduler does (its Redis client is per test: it belongs to the test's event loop)."""
    client: redis.asyncio.Redis[bytes] = redis.asyncio.Redis.from_url(credentials_url)
    box = SecretBox(CredentialKeys.parse(DEV_CREDENTIAL_KEYS))
    yield Credentials(client, box, [announce_revocation(client)])
    await client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose


@dataclass(frozen=True)
class DeviceCreds:
    device_id: str
    secret: str

    @property
    def client_id(self) -> str:
        return f"{self.device_id}_0_0_{iotda_hour()}"

    @property
    def password(self) -> str:
        return iotda_password(self.secret, iotda_hour())

    def topic(self, suffix: str) -> str:
        return f"$oc/devices/{self.device_id}/sys/{suffix}"


@pytest.fixture
def device(auth: AuthServer) -> Callable[..., DeviceCreds]:
    def register(disabled: bool = False, known: bool = True) -> DeviceCreds:
        creds = DeviceCreds(f"dev-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex)
        if known:
            auth.add_device(creds.device_id, creds.secret, disabled)
        return creds

    return register


class Inbox:
    """Messages a gmqtt client received, awaited by predicate with a deadline."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    def on_message(self, _client: Any, topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        self.messages.append((topic, payload))
        self._changed.set()
        return 0

    async def wait_for(
        self, predicate: Callable[[str, bytes], bool], timeout_s: float = 10.0
    ) -> tuple[str, bytes]:
        async with asyncio.timeout(timeout_s):
            while True:
                for message in self.messages:
                    if predicate(*message):
                        return message
                self._changed.clear()
                await self._changed.wait()

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.messages]


@dataclass
class Platform:
    client: Client
    inbox: Inbox


async def connect_gmqtt(
    client_id: str,
    user: str,
    password: str,
    port: int,
    tls: Any = False,
    keepalive: int = 60,
) -> tuple[Client, Inbox]:
    inbox = Inbox()
    client = Client(client_id, clean_session=True)
    client.set_auth_credentials(user, password)
    client.on_message = inbox.on_message
    await client.connect("127.0.0.1", port, ssl=tls, keepalive=keepalive, version=MQTTv50)
    return client, inbox


async def subscribe(client: Client, *topics: str) -> list[int]:
    """One SUBSCRIBE with every topic at QoS 1; the granted codes from the SUBACK."""
    granted: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()

    def on_subscribe(_client: Any, _mid: int, qos: list[int], _props: Any) -> None:
        if not granted.done():
            granted.set_result(list(qos))

    client.on_subscribe = on_subscribe
    client.subscribe([Subscription(topic, qos=1) for topic in topics])
    return await asyncio.wait_for(granted, 10)


@pytest.fixture
async def platform(broker: BrokerProcess) -> AsyncIterator[Platform]:
    """The platform account, subscribed to device uplinks, presence and kicks (the latter
    only to prove a kick is never delivered)."""
    client, inbox = await connect_gmqtt(
        f"ota-platform-test-{uuid.uuid4().hex[:8]}",
        broker.platform_user,
        broker.platform_password,
        broker.platform_port,
    )
    granted = await subscribe(
        client, "$oc/devices/+/sys/events/up", "$ota/presence/+", "$ota/kick/+"
    )
    assert granted == [1, 1, 1], granted
    yield Platform(client, inbox)
    await client.disconnect()
