"""Gateway throughput for one gateway process on the local stack.

uplink: a gateway connects once (creating its persistent session), stops; M messages are
  published to up topics of D devices while it is away (the broker queues them for the
  session); the gateway starts again and the time until every record (M events + D uplink
  presence records) is in Kafka is measured. Every message is acknowledged only after
  Kafka acknowledged it, so the rate is the ack-after-Kafka ingest rate.
downlink: M command records are produced first; the gateway starts with a fresh consumer
  group and the time until a wildcard subscriber on the down topics received all M
  commands is measured (each published QoS 1 and committed after the PUBACK).

raw: the gateway's Kafka client alone producing M such records with the gateway's producer
  settings, until all are acknowledged: the Kafka-side ceiling, for a ratio.

peer: the uplink measurement with a bare gmqtt subscriber (ack after an empty handler, no
  Kafka) draining the same queued session: the MQTT-side ceiling, for a ratio.

uplink --replicas N: N gateway processes split the devices by slot (each receives every
  message, forwards its own devices' and acknowledges the rest at once); with
  --split shared they take turns on one MQTT 5 shared subscription instead (each message
  reaches one of them; brokers that deliver `$share` on `$` topics, such as HiveMQ).
uplink --live: the gateways stay connected and the messages are published to them as they
  run (timed from the first publish), instead of draining a queued session.

Usage: python bench/gateway_bench.py uplink|downlink|peer|raw [--messages M] [--devices D] [--runs R]
       [--replicas N] [--split slot|shared] [--live]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from gmqtt import Client
from gmqtt.mqtt.constants import MQTTv50
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from ota.kafka_clients import make_producer
from ota.mqtt import LinkConfig, MqttLink
from ota.protocol import up_topic
from ota.records import CommandRecord, DeviceEventRecord, decode, encode
from ota.settings import CommonSettings, Topics

REPO = Path(__file__).resolve().parents[1]


def _env(prefix: str, tag: str) -> dict[str, str]:
    return {
        **os.environ,
        "OTA_TOPIC_PREFIX": prefix,
        "OTA_GATEWAY_CLIENT_ID": f"ota-gw-bench-{tag}",
        "OTA_GATEWAY_CONSUMER_GROUP": f"ota-gw-bench-{tag}",
        "OTA_GATEWAY_METRICS_PORT": "0",
        "OTA_GATEWAY_PRESENCE_SOURCE": "none",
        "OTA_LOG_LEVEL": "WARNING",
    }


def _start_gateway(env: dict[str, str], profile: bool = False) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "gateway"]
    out = os.environ.get("OTA_BENCH_PROFILE", "")
    if profile and out:  # a py-spy flame graph of the measured gateway run
        raw = ["--format", "raw"] if out.endswith(".txt") else []  # collapsed stacks
        spy = str(Path(sys.executable).parent / "py-spy")
        command = [spy, "record", "--threads", *raw, "-o", out, "--", *command]
    return subprocess.Popen(
        command, cwd=REPO, env={**env, "OTA_LOG_LEVEL": "INFO"}, stderr=subprocess.PIPE
    )


def _wait_started(process: subprocess.Popen[bytes]) -> float:
    assert process.stderr is not None
    for line in process.stderr:
        if b"gateway started" in line:
            return time.monotonic()
    raise RuntimeError("gateway exited before it started")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)  # py-spy passes it on and writes its profile
    process.wait(60)


async def _clear_sessions_async(settings: CommonSettings, client_ids: list[str]) -> None:
    async def clear(client_id: str) -> None:
        client = Client(client_id, clean_session=True, session_expiry_interval=0)
        client.set_auth_credentials(settings.mqtt_platform_user, settings.mqtt_platform_password)
        await client.connect(settings.mqtt_host, settings.mqtt_platform_port, version=MQTTv50)
        await client.disconnect()

    await asyncio.gather(*(clear(client_id) for client_id in client_ids))


def _clear_sessions(settings: CommonSettings, client_ids: list[str]) -> None:
    """End the persistent sessions a run created: a stale one keeps collecting every uplink
    on the shared broker until it expires."""
    asyncio.run(_clear_sessions_async(settings, client_ids))


def _cpu_s(process: subprocess.Popen[bytes]) -> float:
    """User + system CPU seconds the process used so far (Linux /proc)."""
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _end_total(consumer: KafkaConsumer, topic: str, partitions: int) -> int:
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    return sum(consumer.end_offsets(tps).values())


class _EventCount:
    """Device events read so far from a consumer's assigned partitions (presence records
    left out), for a run whose presence records cannot be counted in advance."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, consumer: KafkaConsumer, _topic: str, _partitions: int) -> int:
        for records in consumer.poll(timeout_ms=50).values():
            self.seen += sum(isinstance(decode(r.value), DeviceEventRecord) for r in records)
        return self.seen


async def _publish_all(settings: CommonSettings, messages: int, devices: int) -> None:
    link = MqttLink(
        LinkConfig(
            host=settings.mqtt_host,
            port=settings.mqtt_platform_port,
            client_id=f"ota-bench-pub-{uuid.uuid4().hex[:6]}",
            username=settings.mqtt_platform_user,
            password=settings.mqtt_platform_password,
            max_publishes_in_flight=500,
        )
    )
    await link.connect()
    ids = [f"bench-{n:06d}" for n in range(devices)]

    async def one(n: int) -> None:
        device = ids[n % devices]
        payload = orjson.dumps(
            {
                "services": [
                    {
                        "service_id": "$ota",
                        "event_type": "upgrade_progress_report",
                        "event_id": f"e{n}",
                        "paras": {"result_code": 0, "progress": n % 100, "version": "1.0"},
                    }
                ]
            }
        )
        await link.publish_acked(up_topic(device), payload)

    for start in range(0, messages, 2000):
        await asyncio.gather(*(one(n) for n in range(start, min(messages, start + 2000))))
    await link.close()


def uplink_run(
    settings: CommonSettings,
    messages: int,
    devices: int,
    replicas: int = 1,
    split: str = "slot",
    live: bool = False,
) -> float:
    tag = uuid.uuid4().hex[:8]
    prefix = f"bench-{tag}."
    topics = Topics.with_prefix(prefix)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    names = [topics.inbox, topics.commands, topics.dead_letters]
    admin.create_topics([NewTopic(n, 12, 1) for n in names], wait_for_metadata=True)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    envs = [
        {
            **_env(prefix, tag),
            "OTA_GATEWAY_CLIENT_ID": f"ota-gw-bench-{tag}-{index}",
            "OTA_GATEWAY_REPLICAS": str(replicas),
            "OTA_GATEWAY_INDEX": str(index),
            "OTA_GATEWAY_SPLIT": split,
            "OTA_GATEWAY_SHARE_GROUP": f"ota-gw-bench-{tag}",
        }
        for index in range(replicas)
    ]
    # The events and one uplink-inferred presence record per device. A shared subscription
    # spreads a device's messages over replicas that each infer its presence, so there the
    # events alone are counted, one by one.
    shared = split == "shared"
    expected = messages if shared else messages + devices
    arrived = _EventCount() if shared else _end_total
    profile = replicas == 1 and not live
    try:
        gateways = [_start_gateway(env) for env in envs]
        started = min(_wait_started(gateway) for gateway in gateways)
        if not live:
            for gateway in gateways:
                _stop(gateway)  # the broker now queues for each gateway's session
            asyncio.run(_publish_all(settings, messages, devices))
            gateways = [_start_gateway(env, profile=profile) for env in envs]
            started = min(_wait_started(gateway) for gateway in gateways)
        cpu = [_cpu_s(gateway) for gateway in gateways]
        if live:  # timed from the first publish: the publisher shares the cores
            started = time.monotonic()
            asyncio.run(_publish_all(settings, messages, devices))
        deadline = started + 600
        if shared:
            inbox = [TopicPartition(topics.inbox, p) for p in range(12)]
            consumer.assign(inbox)
            consumer.seek_to_beginning(*inbox)  # the run's own topic: every record counts
        while arrived(consumer, topics.inbox, 12) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError("records did not all arrive")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        used = [_cpu_s(gateway) - before for gateway, before in zip(gateways, cpu, strict=True)]
        for gateway in gateways:
            _stop(gateway)
        if not (profile and os.environ.get("OTA_BENCH_PROFILE")):  # else it is py-spy's CPU
            total = sum(used)
            print(
                f"  gateway CPU {total:.1f} s = {total / messages * 1e6:.0f} us/msg"
                f" ({', '.join(f'{u:.1f}' for u in used)} s per process)",
                flush=True,
            )
        return messages / elapsed
    finally:
        _clear_sessions(settings, [env["OTA_GATEWAY_CLIENT_ID"] for env in envs])
        consumer.close()
        admin.delete_topics(names)
        admin.close()


async def _count_down(
    settings: CommonSettings, messages: int, ready: asyncio.Event, done: asyncio.Event
) -> None:
    count = 0

    def on_message(_c: Client, _t: str, _p: bytes, _q: int, _props: Any) -> int:
        nonlocal count
        count += 1
        if count >= messages:
            done.set()
        return 0

    client = Client(f"ota-bench-sub-{uuid.uuid4().hex[:6]}")
    client.set_auth_credentials(settings.mqtt_platform_user, settings.mqtt_platform_password)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: ready.set()
    await client.connect(settings.mqtt_host, settings.mqtt_platform_port, version=MQTTv50)
    client.subscribe("$oc/devices/+/sys/events/down", qos=0)
    await done.wait()
    await client.disconnect()


def downlink_run(settings: CommonSettings, messages: int, devices: int) -> float:
    tag = uuid.uuid4().hex[:8]
    prefix = f"bench-{tag}."
    topics = Topics.with_prefix(prefix)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    names = [topics.inbox, topics.commands, topics.dead_letters]
    admin.create_topics([NewTopic(n, 12, 1) for n in names], wait_for_metadata=True)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20)
    for n in range(messages):
        device = f"bench-{n % devices:06d}"
        record = CommandRecord(device_id=device, event_type="version_query", paras={}, at_ms=1)
        producer.send(topics.commands, key=device.encode(), value=encode(record))
    producer.flush()
    producer.close()

    async def measure() -> float:
        ready, done = asyncio.Event(), asyncio.Event()
        counter = asyncio.create_task(_count_down(settings, messages, ready, done))
        await ready.wait()
        gateway = await asyncio.to_thread(_start_gateway, _env(prefix, tag), True)
        started = await asyncio.to_thread(_wait_started, gateway)
        await asyncio.wait_for(done.wait(), 600)
        elapsed = time.monotonic() - started
        await counter
        await asyncio.to_thread(_stop, gateway)
        return messages / elapsed

    try:
        return asyncio.run(measure())
    finally:
        _clear_sessions(settings, [_env(prefix, tag)["OTA_GATEWAY_CLIENT_ID"]])
        admin.delete_topics(names)
        admin.close()


async def _drain_session(settings: CommonSettings, client_id: str, messages: int | None) -> float:
    """Connect a bare ack-after-handler subscriber; with `messages`, time draining that many."""
    done, count = asyncio.Event(), 0

    async def on_message(_c: Client, _t: str, _p: bytes, _q: int, _props: Any) -> int:
        nonlocal count
        count += 1
        if messages is not None and count >= messages:
            done.set()
        return 0

    client = Client(
        client_id,
        clean_session=False,
        optimistic_acknowledgement=False,
        session_expiry_interval=600,
        receive_maximum=4000,
    )
    client.set_auth_credentials(settings.mqtt_platform_user, settings.mqtt_platform_password)
    client.on_message = on_message
    subscribed = asyncio.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    started = time.monotonic()
    await client.connect(settings.mqtt_host, settings.mqtt_platform_port, version=MQTTv50)
    if messages is None:
        client.subscribe("$oc/devices/+/sys/events/up", qos=1)
        await subscribed.wait()
    else:
        await asyncio.wait_for(done.wait(), 600)
    elapsed = time.monotonic() - started
    await client.disconnect()
    return elapsed


def peer_run(settings: CommonSettings, messages: int, devices: int) -> float:
    """The same queued-session drain by a bare gmqtt subscriber that acknowledges after its
    (empty) handler: the ceiling of the MQTT side without Kafka."""
    client_id = f"ota-bench-peer-{uuid.uuid4().hex[:6]}"
    try:
        asyncio.run(_drain_session(settings, client_id, None))
        asyncio.run(_publish_all(settings, messages, devices))
        return messages / asyncio.run(_drain_session(settings, client_id, messages))
    finally:
        _clear_sessions(settings, [client_id])


def raw_run(settings: CommonSettings, messages: int, devices: int) -> float:
    """The gateway's Kafka client (OTA_KAFKA_CLIENT) alone producing the gateway's records
    (same producer settings, keys and sizes) from one thread, waiting for every
    acknowledgement: the Kafka-side ceiling."""
    tag = uuid.uuid4().hex[:8]
    topics = Topics.with_prefix(f"bench-{tag}.")
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topics.inbox, 12, 1)], wait_for_metadata=True)
    producer = make_producer(settings, client_id=f"ota-bench-raw-{tag}", linger_ms=25)
    records = [
        (
            f"bench-{n % devices:06d}".encode(),
            encode(
                DeviceEventRecord(
                    device_id=f"bench-{n % devices:06d}",
                    event_type="upgrade_progress_report",
                    paras={"result_code": 0, "progress": n % 100, "version": "1.0"},
                    device_event_id=f"e{n}",
                    id=uuid.uuid4().hex,
                    at_ms=1,
                )
            ),
        )
        for n in range(messages)
    ]
    try:
        producer.partitions_for(topics.inbox)
        started = time.monotonic()
        futures = [producer.send(topics.inbox, key=key, value=value) for key, value in records]
        producer.flush()
        elapsed = time.monotonic() - started
        assert all(future.is_done and not future.failed() for future in futures)
        return messages / elapsed
    finally:
        producer.close()
        admin.delete_topics([topics.inbox])
        admin.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("direction", choices=["uplink", "downlink", "peer", "raw"])
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--split", choices=["slot", "shared"], default="slot")
    parser.add_argument("--live", action="store_true")
    args = parser.parse_args()
    settings = CommonSettings.from_env()
    run = {"downlink": downlink_run, "peer": peer_run, "raw": raw_run}.get(args.direction)
    rates = []
    for n in range(args.runs):
        if args.direction == "uplink":
            rate = uplink_run(
                settings, args.messages, args.devices, args.replicas, args.split, args.live
            )
        else:
            assert run is not None
            rate = run(settings, args.messages, args.devices)
        rates.append(rate)
        print(f"run {n + 1}: {rate:,.0f} msgs/s", flush=True)
    name = {"peer": "peer.mqtt_drain", "raw": "peer.kafka_produce"}.get(
        args.direction, f"gateway.{args.direction}"
    )
    if args.direction == "uplink" and args.replicas > 1:
        suffix = "" if args.split == "shared" else "_slot"
        name = f"{name}_per_s_{args.replicas}rep{suffix}"
    else:
        name = f"{name}_per_s"
    if args.direction == "uplink" and args.live:
        name += "_live"
    print(f"{name} = {statistics.median(rates):.0f} msgs/s (median of {args.runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
