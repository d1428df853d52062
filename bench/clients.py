"""Raw client figures on this machine: the budget every service is measured against.

One client, one process, no platform code: kafka-python producing and consuming 200-byte
keyed records, redis-py running a small Lua script by EVALSHA in pipelines, gmqtt
publishing to Mosquitto at QoS 1 with a bounded in-flight window (and QoS 0). Each figure
is run once as a warm-up, then --runs times; the median is quoted.

Usage: make bench-clients   (or .venv/bin/python bench/clients.py [--quick] [--no-write])
Addresses come from the same OTA_ variables as the services and tests. The results go to
the "Raw clients" section of bench/RESULTS.md; earlier runs are kept below the latest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis
from gmqtt import Client as MqttClient
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.storage import PersistentStorage
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.record import util as kafka_record_util

RECORD_BYTES = 200
DEVICES = 10_000  # distinct keys, like the inbox's device ids
RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Raw clients"
LATEST = "<!-- bench/clients.py: latest run -->"
HISTORY = "<!-- bench/clients.py: earlier runs -->"
END = "<!-- bench/clients.py: end -->"


def env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


@dataclass(frozen=True)
class Stack:
    kafka: str
    redis_url: str
    mqtt_host: str
    mqtt_port: int
    mqtt_user: str
    mqtt_password: str

    @classmethod
    def from_env(cls) -> Stack:
        return cls(
            kafka=env("OTA_KAFKA_BOOTSTRAP", f"127.0.0.1:{env('OTA_KAFKA_PORT', '9092')}"),
            redis_url=env("OTA_REDIS_URL", f"redis://127.0.0.1:{env('OTA_REDIS_PORT', '6379')}/0"),
            mqtt_host=env("OTA_MQTT_HOST", "127.0.0.1"),
            mqtt_port=int(env("OTA_MQTT_PLATFORM_PORT", "1884")),
            mqtt_user=env("OTA_MQTT_PLATFORM_USER", "ota-platform"),
            mqtt_password=env("OTA_MQTT_PLATFORM_PASSWORD", "ota-platform-secret"),
        )


@dataclass(frozen=True)
class Figure:
    name: str  # headline key, e.g. kafka.produce_per_s
    what: str
    unit: str
    runs: list[float]  # rates, one per measured run

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


def measure(count: int, runs: int, once: Callable[[int], float]) -> list[float]:
    """Calls `once(n)` (returns seconds for n operations) for a warm-up, then `runs` times."""
    once(max(1, count // 5))
    rates = []
    for _ in range(runs):
        rates.append(count / once(count))
    return rates


def payload(i: int) -> bytes:
    return f"{i:012d}".encode().ljust(RECORD_BYTES, b"x")


def keys() -> list[bytes]:
    return [f"dev-{d:06d}".encode() for d in range(DEVICES)]


# --- Kafka ------------------------------------------------------------------------------


def kafka_produce(stack: Stack, topic: str, idempotent: bool) -> Callable[[int], float]:
    device_keys, values = keys(), [payload(i) for i in range(1000)]

    def once(count: int) -> float:
        producer = KafkaProducer(
            bootstrap_servers=stack.kafka,
            acks="all" if idempotent else 1,
            enable_idempotence=idempotent,
            linger_ms=5,
            batch_size=256 * 1024,
        )
        failures: list[BaseException] = []
        try:
            started = time.perf_counter()
            for i in range(count):
                future = producer.send(topic, key=device_keys[i % DEVICES], value=values[i % 1000])
                future.add_errback(failures.append)
            producer.flush()
            elapsed = time.perf_counter() - started
        finally:
            producer.close()
        if failures:
            raise RuntimeError(f"{len(failures)} sends failed, first: {failures[0]!r}")
        return elapsed

    return once


def kafka_consume(stack: Stack, topic: str) -> Callable[[int], float]:
    """Reads `count` records from the start of `topic` with a fresh consumer group, manual
    commits after every poll. Timed from the first record to the last: the group join
    (a few hundred ms) is not part of the rate."""

    def once(count: int) -> float:
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=stack.kafka,
            group_id=f"bench-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=5000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        try:
            seen, started = 0, 0.0
            deadline = time.monotonic() + 300
            while seen < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"consumed {seen} of {count} records in 300 s")
                batches = consumer.poll(timeout_ms=1000, max_records=5000)
                if batches and not started:
                    started = time.perf_counter()
                seen += sum(len(records) for records in batches.values())
                if batches:
                    consumer.commit()
            return time.perf_counter() - started
        finally:
            consumer.close()

    return once


def kafka_figures(stack: Stack, records: int, runs: int) -> list[Figure]:
    topic = f"bench.clients.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka, client_id="bench-clients")
    admin.create_topics(
        {topic: {"num_partitions": 12, "replication_factor": 1}}, wait_for_metadata=True
    )
    try:
        print(f"kafka: producing {records} x {RECORD_BYTES} B to {topic} (12 partitions)")
        idem = measure(records, runs, kafka_produce(stack, topic, idempotent=True))
        acks1 = measure(records, runs, kafka_produce(stack, topic, idempotent=False))
        print("kafka: consuming with a consumer group")
        consume = measure(records, runs, kafka_consume(stack, topic))
    finally:
        admin.delete_topics([topic])
        admin.close()
    return [
        Figure("kafka.produce_per_s", "produce, acks=all + idempotence", "records/s", idem),
        Figure("kafka.produce_acks1_per_s", "produce, acks=1", "records/s", acks1),
        Figure("kafka.consume_per_s", "consume, group + manual commit", "records/s", consume),
    ]


# --- Redis ------------------------------------------------------------------------------

# KEYS[1] = a device's hash; ARGV[1] = offset. Records the offset and bumps a version:
# about the size of the worker's apply script minus the state machine.
APPLY = """
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'offset', ARGV[1])
return v
"""


def redis_figures(stack: Stack, calls: int, runs: int, pipeline: int = 500) -> list[Figure]:
    client = redis.Redis.from_url(stack.redis_url)
    prefix = f"bench:{{p0}}:{uuid.uuid4().hex[:8]}"
    sha = client.execute_command("SCRIPT LOAD", APPLY)
    device_keys = [f"{prefix}:dev-{d:06d}" for d in range(DEVICES)]

    def once(count: int) -> float:
        started = time.perf_counter()
        for base in range(0, count, pipeline):
            pipe: Any = client.pipeline(transaction=False)  # the redis stubs leave it untyped
            for i in range(base, min(count, base + pipeline)):
                pipe.execute_command("EVALSHA", sha, 1, device_keys[i % DEVICES], i)
            pipe.execute()
        return time.perf_counter() - started

    try:
        print(f"redis: {calls} EVALSHA calls in pipelines of {pipeline}")
        rates = measure(calls, runs, once)
    finally:
        client.delete(*device_keys)
        client.close()
    return [Figure("redis.evalsha_per_s", f"EVALSHA, pipelines of {pipeline}", "calls/s", rates)]


# --- MQTT -------------------------------------------------------------------------------


class AckWindow(PersistentStorage):  # type: ignore[misc]  # gmqtt is untyped
    """gmqtt's in-flight store, counting: a publish takes a slot, its PUBACK frees it.
    gmqtt 0.8 has no per-publish future; this is where its PUBACKs land."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.slots = asyncio.Semaphore(size)

    def remove_message_by_mid(self, mid: int) -> None:
        if mid in self._messages:
            self.slots.release()
        super().remove_message_by_mid(mid)


async def mqtt_publish_run(stack: Stack, count: int, qos: int, window: int) -> float:
    storage = AckWindow(window)
    client = MqttClient(f"bench-{uuid.uuid4().hex[:8]}", persistent_storage=storage)
    client.set_auth_credentials(stack.mqtt_user, stack.mqtt_password)
    await client.connect(stack.mqtt_host, stack.mqtt_port, version=MQTTv50)
    # Nobody subscribes here: this is the publisher's and the broker's cost alone.
    topic, body = f"$oc/bench/{uuid.uuid4().hex[:8]}", payload(0)
    try:
        started = time.perf_counter()
        for _ in range(count):
            if qos:
                await storage.slots.acquire()
            client.publish(topic, body, qos=qos)
            if not qos:
                await asyncio.sleep(0)  # let the transport drain, like a real producer
        # A final QoS 1 publish: its PUBACK means the broker has read everything before it.
        await storage.slots.acquire()
        client.publish(topic, body, qos=1)
        await asyncio.wait_for(storage.wait_empty(), 60)
        return time.perf_counter() - started
    finally:
        await client.disconnect()


def mqtt_figures(stack: Stack, messages: int, runs: int, window: int = 500) -> list[Figure]:
    def runner(qos: int) -> Callable[[int], float]:
        return lambda count: asyncio.run(mqtt_publish_run(stack, count, qos, window))

    print(f"mqtt: {messages} publishes of {RECORD_BYTES} B, QoS 1 window {window}, and QoS 0")
    qos1 = measure(messages, runs, runner(1))
    qos0 = measure(messages, runs, runner(0))
    return [
        Figure("mqtt.publish_per_s", f"publish QoS 1, {window} in flight", "msgs/s", qos1),
        Figure("mqtt.publish_qos0_per_s", "publish QoS 0", "msgs/s", qos0),
    ]


# --- report -----------------------------------------------------------------------------

HEADLINES = (
    "kafka.produce_per_s",
    "kafka.consume_per_s",
    "redis.evalsha_per_s",
    "mqtt.publish_per_s",
)


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    meminfo = Path("/proc/meminfo").read_text()
    mem_kb = re.search(r"^MemTotal:\s*(\d+)", meminfo, re.MULTILINE)
    memory = f"{int(mem_kb.group(1)) / 1024 / 1024:.1f} GiB" if mem_kb else "unknown memory"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({model.group(1).strip() if model else 'unknown CPU'}), "
        f"{memory}, {platform.system()} {platform.release()}, load average at start {load}"
    )


def software(stack: Stack) -> str:
    with redis.Redis.from_url(stack.redis_url) as client:
        redis_server = client.info("server").get("redis_version", "?")
    pom = (Path(__file__).parents[1] / "deploy/local/pom.xml").read_text()
    kafka = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    # What kafka-python picked at import, not what is installed now.
    crc = "C" if kafka_record_util.crc32c_c is not None else "pure-Python (no crc32c package)"
    return (
        f"Python {platform.python_version()}; kafka-python {version('kafka-python')} "
        f"with {crc} CRC-32C, "
        f"redis-py {version('redis')} (hiredis {version('hiredis')}), gmqtt {version('gmqtt')}; "
        f"Kafka {kafka.group(1) if kafka else '?'} (KRaft, one node), Redis {redis_server}, "
        "Mosquitto (Debian package)"
    )


def render(figures: list[Figure], command: str, stack: Stack, started: datetime, note: str) -> str:
    table = ["| figure | what | median | runs |", "|---|---|---:|---|"]
    for f in figures:
        runs = ", ".join(f"{r:,.0f}" for r in f.runs)
        table.append(f"| `{f.name}` | {f.what} | {f.median:,.0f} {f.unit} | {runs} |")
    return "\n".join(
        [
            f"### {started:%Y-%m-%d %H:%M} UTC",
            "",
            f"- Machine: {machine()}",
            f"- Software: {software(stack)}",
            f"- Command: `{command}`",
            f"- {len(figures[0].runs)} measured runs per figure after one warm-up run; median quoted.",
            "",
            *table,
            "",
            *([note, ""] if note else []),
        ]
    )


def headline_block(figures: list[Figure]) -> str:
    by_name = {f.name: f for f in figures}
    lines = [f"{name} = {by_name[name].median:.0f} {by_name[name].unit}" for name in HEADLINES]
    return "```\n" + "\n".join(lines) + "\n```\n"


INTRO = f"""{SECTION}

What one client in one process does on this machine with nothing of ours in the way:
these numbers set the budget for everything after. A service cannot beat the raw client
it is built on, so each service's figures are read as a fraction of these. Written by
`bench/clients.py` (`make bench-clients`); older runs are kept under "Earlier runs".

"""


def update_results(path: Path, run: str, figures: list[Figure]) -> None:
    """Puts `run` at the top of the Raw clients section and moves the previous latest run
    (without its headline lines) to the section's history. Other sections are untouched."""
    text = (
        path.read_text()
        if path.exists()
        else (
            "# Benchmark results\n\nFigures measured on the project's own machines. Each section\n"
            "names its command, machine and date; older figures stay as history.\n\n"
        )
    )
    previous = ""
    if LATEST in text and END in text:
        head, rest = text.split(LATEST, 1)
        latest, rest = rest.split(HISTORY, 1)
        history, tail = rest.split(END, 1)
        previous_run = latest.split("```\n", 2)[-1].strip()
        previous = previous_run + "\n\n" + history.replace("### Earlier runs", "").strip()
        head = head.rstrip() + "\n\n"
    else:
        head, tail = text.rstrip() + "\n\n" + INTRO, "\n"
    section = (
        f"{LATEST}\n{headline_block(figures)}\n{run}\n{HISTORY}\n### Earlier runs\n\n"
        f"{previous.strip()}\n\n{END}"
    )
    path.write_text(head + section + tail)


def rerun_args(argv: list[str]) -> list[str]:
    """The arguments that change what is measured: all but --note and its text."""
    kept, skip = [], False
    for arg in argv:
        if not skip and arg != "--note" and not arg.startswith("--note="):
            kept.append(arg)
        skip = arg == "--note"
    return kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000, help="Kafka records per run")
    parser.add_argument("--redis-calls", type=int, default=200_000, help="EVALSHA calls per run")
    parser.add_argument("--mqtt-messages", type=int, default=100_000, help="publishes per run")
    parser.add_argument("--runs", type=int, default=3, help="measured runs after the warm-up")
    parser.add_argument("--quick", action="store_true", help="a tenth of the work, 1 run")
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md")
    parser.add_argument("--note", default="", help="a remark written under the table")
    args = parser.parse_args()
    if args.quick:
        args.records, args.redis_calls, args.mqtt_messages, args.runs = 50_000, 20_000, 10_000, 1

    stack, started = Stack.from_env(), datetime.now(UTC)
    command = shlex.join([".venv/bin/python", "bench/clients.py", *rerun_args(sys.argv[1:])])
    figures = [
        *kafka_figures(stack, args.records, args.runs),
        *redis_figures(stack, args.redis_calls, args.runs),
        *mqtt_figures(stack, args.mqtt_messages, args.runs),
    ]
    run = render(figures, command, stack, started, args.note)
    print("\n" + headline_block(figures) + "\n" + run)
    if not args.no_write:
        update_results(RESULTS, run, figures)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
