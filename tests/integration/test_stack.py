"""The local stack itself: Kafka, Redis and the device broker behave as the services rely on.

What is checked here is what DESIGN.md builds on: idempotent acks=all produce and
group consumption with manual commits; an atomic Redis check-and-set by EVALSHA; the
broker's device and platform listeners, its server-side subscription of signed-in
devices, its presence events, and refusal of a device without its secret (the broker's
own suite, tests/integration/broker, covers every rule in depth).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import redis
from gmqtt import Client as MqttClient
from gmqtt.mqtt.constants import MQTTv50
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from devices.fleet import DEFAULT_SEED, derived_secret
from ota.clock import now_ms
from ota.device_auth import credentials_for

if TYPE_CHECKING:
    from conftest import MqttPlatform, RegisterDevices, TopicFactory

DEADLINE_S = 20.0
BAD_USER_NAME_OR_PASSWORD, NOT_AUTHORIZED = 4, 5  # MQTT 3.1.1 CONNACK return codes


def unique(text: str) -> str:
    return f"{text}-{uuid.uuid4().hex[:10]}"


# --- Kafka ------------------------------------------------------------------------------


def test_kafka_idempotent_produce_then_group_consume_with_manual_commit(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory("stack", partitions=3)
    group = unique("ota-test-group")
    value = unique("payload").encode()

    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=0
    )
    try:
        sent = producer.send(topic, key=b"dev-a", value=value).get(timeout=DEADLINE_S)
    finally:
        producer.close(timeout=DEADLINE_S)

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        records: list[Any] = []
        deadline = time.monotonic() + DEADLINE_S
        while not records and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        assert [(r.key, r.value, r.partition, r.offset) for r in records] == [
            (b"dev-a", value, sent.partition, sent.offset)
        ]
        consumer.commit()
        partition = TopicPartition(topic, sent.partition)
        assert consumer.committed(partition) == sent.offset + 1
    finally:
        consumer.close()

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="ota-tests")
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    assert offsets[partition].offset == sent.offset + 1


# --- Redis ------------------------------------------------------------------------------

# KEYS[1] = the record's hash; ARGV[1] = expected version, ARGV[2] = new value.
# Writes value and version+1 only if the stored version is ARGV[1]; returns the new
# version, or -1 (and writes nothing) when the version moved on.
CHECK_AND_SET = """
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if version ~= tonumber(ARGV[1]) then
  return -1
end
redis.call('HSET', KEYS[1], 'value', ARGV[2], 'version', version + 1)
return version + 1
"""


def evalsha(client: redis.Redis[bytes], sha: str, keys: list[str], *args: str | int) -> Any:
    # execute_command, because the installed types-redis stubs leave evalsha untyped.
    return client.execute_command("EVALSHA", sha, len(keys), *keys, *args)


def test_redis_evalsha_check_and_set_is_atomic_on_version(
    redis_client: redis.Redis[bytes],
) -> None:
    sha = redis_client.execute_command("SCRIPT LOAD", CHECK_AND_SET)
    key = "ota:{p0}:test:record"

    assert evalsha(redis_client, sha, [key], 0, "first") == 1
    assert evalsha(redis_client, sha, [key], 1, "second") == 2
    assert evalsha(redis_client, sha, [key], 1, "stale") == -1
    assert redis_client.hgetall(key) == {b"value": b"second", b"version": b"2"}


# --- MQTT -------------------------------------------------------------------------------


class Mqtt:
    """A gmqtt MQTT 5 client that records what it receives, for tests."""

    def __init__(self, user: str, password: str | None = None, client_id: str = "") -> None:
        self.client_id = client_id or unique(user)
        self.received: list[tuple[str, bytes]] = []
        self._arrived = asyncio.Condition()
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self.client = MqttClient(self.client_id)
        self.client.set_auth_credentials(user, password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    async def _on_message(
        self, _client: Any, topic: str, payload: bytes, _qos: int, _props: Any
    ) -> int:
        async with self._arrived:
            self.received.append((topic, payload))
            self._arrived.notify_all()
        return 0

    def _on_subscribe(self, _client: Any, mid: int, qos: tuple[int, ...], _props: Any) -> None:
        future = self._subacks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(list(qos))

    async def connect(self, host: str, port: int) -> Mqtt:
        await asyncio.wait_for(self.client.connect(host, port, version=MQTTv50), DEADLINE_S)
        return self

    async def subscribe(self, *topics: str) -> list[int]:
        """Subscribes at QoS 1 and returns the SUBACK reason codes, one per topic."""
        codes = []
        for topic in topics:
            future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
            self._subacks[self.client.subscribe(topic, qos=1)] = future
            codes.extend(await asyncio.wait_for(future, DEADLINE_S))
        return codes

    async def wait_for(self, match: Callable[[str, bytes], bool]) -> tuple[str, bytes]:
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: any(match(*m) for m in self.received)), DEADLINE_S
            )
        return next(m for m in self.received if match(*m))

    async def close(self) -> None:
        await self.client.disconnect()


def up_topic(device: str) -> str:
    return f"$oc/devices/{device}/sys/events/up"


def down_topic(device: str) -> str:
    return f"$oc/devices/{device}/sys/events/down"


async def device_client(
    register_devices: RegisterDevices, mqtt_host: str, port: int, device_id: str
) -> Mqtt:
    """A registered device signed in as IoTDA devices are (no SUBSCRIBE follows)."""
    await register_devices([device_id])
    sent = credentials_for(device_id, derived_secret(DEFAULT_SEED, device_id), now_ms())
    client = Mqtt(sent.username, sent.password, client_id=sent.client_id)
    return await client.connect(mqtt_host, port)


@pytest.fixture
async def platform(mqtt_platform: MqttPlatform) -> AsyncIterator[Mqtt]:
    """A platform-side client subscribed to device reports and the broker's presence."""
    client = await Mqtt(mqtt_platform.user, mqtt_platform.password).connect(
        mqtt_platform.host, mqtt_platform.port
    )
    try:
        assert await client.subscribe(up_topic("+"), "$ota/presence/+") == [1, 1]
        yield client
    finally:
        await client.close()


async def test_a_device_reports_and_is_commanded_without_subscribing(
    platform: Mqtt,
    mqtt_platform: MqttPlatform,
    mqtt_host: str,
    mqtt_device_port: int,
    register_devices: RegisterDevices,
) -> None:
    """The broker subscribes a signed-in device to its down topic itself (IoTDA does)."""
    device_id = unique("dev")
    report, command = unique("report").encode(), unique("command").encode()
    device = await device_client(register_devices, mqtt_host, mqtt_device_port, device_id)
    try:
        device.client.publish(up_topic(device_id), report, qos=1)
        topic, _ = await platform.wait_for(lambda _t, p: p == report)
        assert topic == up_topic(device_id)
        platform.client.publish(down_topic(device_id), command, qos=1)
        await device.wait_for(lambda t, p: (t, p) == (down_topic(device_id), command))
    finally:
        await device.close()


async def test_presence_events_report_device_connects(
    platform: Mqtt, mqtt_host: str, mqtt_device_port: int, register_devices: RegisterDevices
) -> None:
    device_id = unique("dev")
    device = await device_client(register_devices, mqtt_host, mqtt_device_port, device_id)
    await device.close()
    seen = []
    for online in (True, False):

        def presence(topic: str, payload: bytes, want: bool = online) -> bool:
            return topic == f"$ota/presence/{device_id}" and orjson.loads(payload)["online"] is want

        seen.append(orjson.loads((await platform.wait_for(presence))[1]))
    assert [(e["device_id"], e["client_id"]) for e in seen] == [(device_id, device.client_id)] * 2


@pytest.mark.parametrize("password", [None, "", "wrong-password"])
async def test_a_device_without_its_secret_is_refused(
    mqtt_host: str, mqtt_device_port: int, register_devices: RegisterDevices, password: str | None
) -> None:
    device_id = unique("dev")
    await register_devices([device_id])
    sent = credentials_for(device_id, derived_secret(DEFAULT_SEED, device_id), now_ms())
    assert await connack(mqtt_host, mqtt_device_port, sent.client_id, device_id, sent.password) == 0
    code = await connack(mqtt_host, mqtt_device_port, sent.client_id, device_id, password)
    assert code in (BAD_USER_NAME_OR_PASSWORD, NOT_AUTHORIZED)


async def connack(host: str, port: int, client_id: str, user: str, password: str | None) -> int:
    """The return code of a bare MQTT 3.1.1 CONNECT (as Huawei's SDK sends; 0: accepted)."""

    def text(value: str) -> bytes:
        data = value.encode()
        return len(data).to_bytes(2, "big") + data

    flags = 0x82 | (0x40 if password is not None else 0)  # clean session, user name
    body = text("MQTT") + bytes([4, flags]) + (30).to_bytes(2, "big") + text(client_id)
    body += text(user) + (text(password) if password is not None else b"")
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(bytes([0x10, len(body)]) + body)
        reply = await asyncio.wait_for(reader.readexactly(4), DEADLINE_S)
        assert reply[0] == 0x20, f"not a CONNACK: {reply!r}"
        return reply[3]
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
