"""Fixtures for the gateway on the real stack: private topics, a gateway, devices, readers.

Each test gets its own topic prefix (`t-<hex>.ota.inbox`, ...), its own gateway client id
and consumer group, and unique device ids, so tests run beside other engineers' on one
stack. `KafkaReader` waits with a deadline for records instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from gmqtt import Client, Message
from gmqtt.mqtt.constants import MQTTv50
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from devices.fleet import DEFAULT_SEED, derived_secret
from gateway.inbound import Inbound
from gateway.service import run
from gateway.settings import GatewaySettings
from ota.clock import now_ms
from ota.device_auth import credentials_for
from ota.records import decode
from ota.runtime import Runtime
from ota.settings import Topics
from tests.kafka_client_kit import kafka_client_env

REPO = Path(__file__).resolve().parents[3]
PARTITIONS = 3


@dataclass
class Stack:
    bootstrap: str
    topics: Topics
    mqtt_host: str
    device_port: int
    platform_port: int
    env: dict[str, str] = field(default_factory=dict)
    register: Any = None  # tests/conftest.py's register_devices


@pytest.fixture
def stack(
    kafka_bootstrap: str, mqtt_platform: Any, mqtt_device_port: int, register_devices: Any
) -> Iterator[Stack]:
    topics = Topics.with_prefix(f"t-{uuid.uuid4().hex[:10]}.")
    names = [topics.inbox, topics.commands, topics.dead_letters]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="ota-tests-gateway")
    admin.create_topics(
        [NewTopic(name, PARTITIONS, 1) for name in names], timeout_ms=30_000, wait_for_metadata=True
    )
    tag = uuid.uuid4().hex[:8]
    env = {
        "OTA_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "OTA_TOPIC_PREFIX": topics.inbox.removesuffix("ota.inbox"),
        "OTA_MQTT_HOST": mqtt_platform.host,
        "OTA_MQTT_PORT": str(mqtt_device_port),
        "OTA_MQTT_PLATFORM_PORT": str(mqtt_platform.port),
        "OTA_MQTT_PLATFORM_USER": mqtt_platform.user,
        "OTA_MQTT_PLATFORM_PASSWORD": mqtt_platform.password,
        "OTA_GATEWAY_CLIENT_ID": f"ota-gw-test-{tag}",
        # Long enough for the crash tests' restart; a stale session collects every uplink.
        "OTA_GATEWAY_SESSION_EXPIRY_S": "60",
        "OTA_GATEWAY_CONSUMER_GROUP": f"ota-gw-test-{tag}",
        "OTA_GATEWAY_METRICS_PORT": "0",
        "OTA_GATEWAY_UPLINK_PRESENCE_INTERVAL_MS": "60000",
        "OTA_LOG_LEVEL": "INFO",
        **kafka_client_env(),
    }
    try:
        yield Stack(
            kafka_bootstrap,
            topics,
            mqtt_platform.host,
            mqtt_device_port,
            mqtt_platform.port,
            env,
            register_devices,
        )
    finally:
        with contextlib.suppress(Exception):
            admin.delete_topics(names, timeout_ms=30_000)
        admin.close()


def new_device(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class KafkaReader:
    """Reads a topic from the start on a background thread; tests wait for what they need."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=100,
        )
        self.records: list[Any] = []
        self.raw: list[tuple[bytes | None, bytes]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.poll(timeout_ms=100).values():
                with self._lock:
                    for record in message:
                        self.raw.append((record.key, record.value))
                        self.records.append(decode(record.value))

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.records)

    async def wait_for(
        self, predicate: Callable[[list[Any]], bool], timeout_s: float = 20.0
    ) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = self.snapshot()
            if predicate(records):
                return records
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"timed out; have {len(self.snapshot())} records: {self.snapshot()[-5:]}"
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


@pytest.fixture
def readers(stack: Stack) -> Iterator[Callable[[str], KafkaReader]]:
    opened: list[KafkaReader] = []

    def open_reader(topic: str) -> KafkaReader:
        reader = KafkaReader(stack.bootstrap, topic)
        opened.append(reader)
        return reader

    yield open_reader
    for reader in opened:
        reader.close()


@pytest.fixture
def kafka_producer(stack: Stack) -> Iterator[KafkaProducer]:
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    yield producer
    producer.close(5)


@contextlib.asynccontextmanager
async def running_gateway(
    stack: Stack, inbound_type: type[Inbound] = Inbound, **overrides: str
) -> AsyncIterator[asyncio.Event]:
    """A gateway in this test's event loop; stops and drains on exit, then raises what
    failed in it (the runtime's recorded failure)."""
    settings = GatewaySettings.from_env({**stack.env, **overrides})
    stop, ready = asyncio.Event(), asyncio.Event()
    rt = Runtime(stop)
    task = asyncio.create_task(run(settings, rt, ready, inbound_type=inbound_type))
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiting}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task.done():
        task.result()
    assert ready.is_set(), "the gateway did not subscribe within 30 s"
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await rt.join(10)
        rt.raise_failure()  # a supervised task that failed fails the test


def gateway_process(stack: Stack, **overrides: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **stack.env, **overrides}
    return subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def wait_log(process: subprocess.Popen[bytes], text: str, timeout_s: float = 30.0) -> list[str]:
    """Lines of the process' stderr up to the first that contains `text`."""
    assert process.stderr is not None
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            lines.append(raw.decode(errors="replace"))
            if text in lines[-1]:
                found.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not found.wait(timeout_s):
        raise AssertionError(
            f"{text!r} not logged within {timeout_s}s; got: {''.join(lines[-20:])}"
        )
    return lines


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)
    if process.stderr is not None:
        process.stderr.close()


class Device:
    """A raw MQTT 5 device client on the device listener, registered and signed in with
    IoTDA credentials (a secret derived from the simulated fleets' seed)."""

    def __init__(self, stack: Stack, device_id: str) -> None:
        self.device_id = device_id
        sent = credentials_for(device_id, derived_secret(DEFAULT_SEED, device_id), now_ms())
        self.client = Client(sent.client_id)
        self.client.set_auth_credentials(sent.username, sent.password)
        self.received: list[tuple[str, bytes]] = []
        self.client.on_message = self._on_message
        self._stack = stack
        self._closed = False

    def _on_message(self, _c: Client, topic: str, payload: bytes, _qos: int, _p: Any) -> int:
        self.received.append((topic, payload))
        return 0

    async def connect(self) -> None:
        await self._stack.register([self.device_id])
        await self.client.connect(self._stack.mqtt_host, self._stack.device_port, version=MQTTv50)

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe and wait for the SUBACK, so nothing published after is missed."""
        subscribed = asyncio.Event()
        self.client.on_subscribe = lambda *_args: subscribed.set()
        self.client.subscribe(topic, qos=qos)
        await asyncio.wait_for(subscribed.wait(), 20)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(Message(topic, payload, qos=qos))

    async def close(self) -> None:
        """Disconnect; once (the `devices` fixture closes again what a test closed)."""
        if not self._closed:
            self._closed = True
            await self.client.disconnect()


@pytest.fixture
async def devices(stack: Stack) -> AsyncIterator[Callable[[str], Device]]:
    """`devices(device_id)` makes a Device, disconnected when the test ends however it
    ended: one left connected leaves its socket to the garbage collector, whose
    ResourceWarning then fails whichever later test it lands in."""
    made: list[Device] = []

    def make(device_id: str) -> Device:
        made.append(Device(stack, device_id))
        return made[-1]

    yield make
    for device in made:
        await device.close()
