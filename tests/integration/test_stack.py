"""The local stack itself: Kafka, Redis and Mosquitto behave as the services rely on.

What is checked here is what DESIGN.md builds on: idempotent acks=all produce and
group consumption with manual commits; an atomic Redis check-and-set by EVALSHA; the
broker's two listeners, the per-device ACL and the presence notices on $SYS/broker/log/N.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest
import redis
from gmqtt import Client as MqttClient
from gmqtt.mqtt.constants import MQTTv50
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

if TYPE_CHECKING:
    from conftest import MqttPlatform, TopicFactory

DEADLINE_S = 20.0
NOT_AUTHORIZED = 0x87  # MQTT 5 reason code 135


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

    def __init__(self, user: str, password: str | None = None) -> None:
        self.client_id = unique(user)
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


async def mqtt5_publish_qos1(host: str, port: int, user: str, topic: str, payload: bytes) -> int:
    """Publishes once at QoS 1 over a bare MQTT 5 connection and returns the PUBACK reason
    code (gmqtt 0.8 drops it). Enough protocol for this one exchange, nothing more."""

    def text(value: str) -> bytes:
        data = value.encode()
        return len(data).to_bytes(2, "big") + data

    def packet(header: int, body: bytes) -> bytes:
        length, encoded = len(body), bytearray()
        while True:
            byte, length = length % 128, length // 128
            encoded.append(byte | (0x80 if length else 0))
            if not length:
                return bytes([header]) + bytes(encoded) + body

    async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        header = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return header, await reader.readexactly(length)

    connect = text("MQTT") + bytes([5, 0x82]) + (30).to_bytes(2, "big") + b"\x00"
    connect += text(unique(user)) + text(user)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(packet(0x10, connect))
        header, body = await asyncio.wait_for(read_packet(reader), DEADLINE_S)
        assert header == 0x20, f"not a CONNACK: {header:#x}"
        assert body[1] == 0, f"CONNACK refused: {body!r}"
        writer.write(packet(0x32, text(topic) + (1).to_bytes(2, "big") + b"\x00" + payload))
        header, body = await asyncio.wait_for(read_packet(reader), DEADLINE_S)
        assert header == 0x40, f"not a PUBACK: {header:#x}"
        assert body[:2] == b"\x00\x01", f"not our PUBACK: {body!r}"
        writer.write(packet(0xE0, b""))
        return body[2] if len(body) > 2 else 0
    finally:
        writer.close()
        await writer.wait_closed()


def up_topic(device: str) -> str:
    return f"$oc/devices/{device}/sys/events/up"


def down_topic(device: str) -> str:
    return f"$oc/devices/{device}/sys/events/down"


@pytest.fixture
async def platform(mqtt_platform: MqttPlatform) -> AsyncIterator[Mqtt]:
    """A platform-side client subscribed to device reports and broker notices."""
    client = await Mqtt(mqtt_platform.user, mqtt_platform.password).connect(
        mqtt_platform.host, mqtt_platform.port
    )
    try:
        assert await client.subscribe(up_topic("+"), "$SYS/broker/log/N") == [1, 1]
        yield client
    finally:
        await client.close()


async def test_device_report_reaches_platform_listener(
    platform: Mqtt, mqtt_host: str, mqtt_device_port: int
) -> None:
    payload = unique("report").encode()
    device = await Mqtt("dev-a").connect(mqtt_host, mqtt_device_port)
    try:
        device.client.publish(up_topic("dev-a"), payload, qos=1)
        topic, _ = await platform.wait_for(lambda _t, p: p == payload)
    finally:
        await device.close()
    assert topic == up_topic("dev-a")


async def test_device_cannot_publish_on_another_devices_topic(
    platform: Mqtt, mqtt_host: str, mqtt_device_port: int
) -> None:
    forged, marker = unique("forged").encode(), unique("marker").encode()

    code = await mqtt5_publish_qos1(mqtt_host, mqtt_device_port, "dev-b", up_topic("dev-a"), forged)
    assert code == NOT_AUTHORIZED
    # The refusal came before the PUBACK, so once a later message arrived the forged one
    # can no longer show up.
    code = await mqtt5_publish_qos1(mqtt_host, mqtt_device_port, "dev-a", up_topic("dev-a"), marker)
    assert code == 0
    await platform.wait_for(lambda _t, p: p == marker)
    assert all(payload != forged for _, payload in platform.received)


async def test_device_never_receives_another_devices_commands(
    mqtt_platform: MqttPlatform, mqtt_host: str, mqtt_device_port: int
) -> None:
    secret, marker = unique("command-for-a").encode(), unique("command-for-b").encode()
    sender = await Mqtt(mqtt_platform.user, mqtt_platform.password).connect(
        mqtt_platform.host, mqtt_platform.port
    )
    spy = await Mqtt("dev-b").connect(mqtt_host, mqtt_device_port)
    try:
        codes = await spy.subscribe(down_topic("dev-a"), down_topic("+"), down_topic("dev-b"))
        # Mosquitto 2.0 grants any subscription (codes [1, 1, 1]) and applies the read ACL
        # when delivering; a refusal (>= 0x80) would be just as good.
        assert codes[2] == 1
        sender.client.publish(down_topic("dev-a"), secret, qos=1)
        sender.client.publish(down_topic("dev-b"), marker, qos=1)
        await spy.wait_for(lambda _t, p: p == marker)
    finally:
        await spy.close()
        await sender.close()
    # Overlapping subscriptions may deliver the marker twice; the secret never.
    assert set(spy.received) == {(down_topic("dev-b"), marker)}


async def test_sys_log_notices_report_device_connects(
    platform: Mqtt, mqtt_host: str, mqtt_device_port: int
) -> None:
    device = await Mqtt("dev-a").connect(mqtt_host, mqtt_device_port)
    await device.close()

    _, line = await platform.wait_for(
        lambda _t, p: f" as {device.client_id} (".encode() in p and b"u'dev-a'" in p
    )
    assert b"New client connected from " in line
    await platform.wait_for(lambda _t, p: f"Client {device.client_id} disconnected".encode() in p)
