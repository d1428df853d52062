"""CPU per Kafka record: kafka-python against confluent-kafka (OTA_KAFKA_CLIENT).

Both clients produce and consume the records the services send (an upgrade command, a
job event, a device's progress event: 241-564 bytes of JSON from ota.records.encode(),
keyed by device id) on a fresh 12-partition topic, with the services' settings:

- produce: the services' producer (ota.kafka_clients.make_producer: idempotent, acks=all,
  linger 5 ms, 5 in flight, murmur2 partitioning) on each client, every record sent
  without waiting, its delivery counted in a callback, then one flush
  (`kafka_python_held` sends in bursts under the producer's wake-up hold, as the workers do);
- consume: the services' consumer (ota.kafka_clients.make_consumer) on each client, a new
  group reading the same records back in batches of at most 2,000, read_committed, no
  auto-commit, decodes each value with ota.records.decode and commits synchronously
  after every batch (as the scheduler's bus does; the workers commit asynchronously at
  most once a second, which costs less).

CPU is the process's CPU time (time.process_time: every thread, so kafka-python's sender
and heartbeat threads and librdkafka's native threads count), from the client's creation
to the flush (produce) or the last commit (consume); records/s is wall time over the
same window, for a consumer from its first record. Each round runs kafka_python,
kafka_python_held and confluent, each on its own fresh topic (created and deleted here);
medians over --runs rounds after one small warm-up.
--cross-check also has each client read the records the other produced; --profile runs
one more kafka-python consume under cProfile (main thread only) and prints where its
time goes.

Usage: .venv/bin/python bench/kafka_clients_bench.py [--records 100000] [--runs 5]
       [--cross-check] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import version
from typing import Any

from kafka.admin import NewTopic

from ota import tokens
from ota.kafka_clients import (
    make_admin,
    make_consumer,
    make_producer,
)
from ota.records import (
    CommandRecord,
    DeviceEventRecord,
    JobEventRecord,
    decode,
    encode,
)
from ota.settings import CommonSettings

PARTITIONS = 12
DEVICES = 10_000  # distinct keys, like a rollout's device ids
MAX_POLL_RECORDS = 2000  # make_consumer's max_poll_records
TIMEOUT_S = 300.0
Pair = tuple[bytes, bytes]  # (key, value)


# --- the records ------------------------------------------------------------------------


def records_for(settings: CommonSettings, device: str, at_ms: int) -> list[bytes]:
    """The three shapes a device's job sends most: its upgrade command (token in a header),
    a job event, and the device's progress report."""
    sha = "9f" * 32
    token = tokens.mint(
        settings.token_keys, device_id=device, package_sha256=sha, expires_s=at_ms // 1000
    )
    command = CommandRecord(
        device_id=device,
        event_type="firmware_upgrade",
        paras={
            "version": "v2.4.1",
            "file_size": 65536,
            "file_name": "firmware-v2.4.1.bin",
            "sign": sha,
            "expires": 86400,
            "task_id": "task-0001",
            "url": f"http://127.0.0.1:8443/packages/sha256/{sha}",
            "access_token": token,
        },
        task_id="task-0001",
        at_ms=at_ms,
    )
    job_event = JobEventRecord(
        device_id=device,
        task_id="task-0001",
        attempt=1,
        job_version=4,
        from_state="upgrade_sent",
        to_state="downloading",
        at_ms=at_ms,
    )
    progress = DeviceEventRecord(
        device_id=device,
        event_type="upgrade_progress_report",
        paras={"result_code": 0, "progress": 40, "version": "v2.3.0", "description": "ok"},
        device_event_id=uuid.uuid4().hex,
        device_time_ms=at_ms - 120,
        at_ms=at_ms,
    )
    return [encode(command), encode(job_event), encode(progress)]


def workload(settings: CommonSettings, count: int) -> list[Pair]:
    at_ms = int(time.time() * 1000)
    pairs: list[Pair] = []
    device = 0
    while len(pairs) < count:
        name = f"dev-{device % DEVICES:06d}"
        pairs.extend((name.encode(), value) for value in records_for(settings, name, at_ms))
        device += 1
    return pairs[:count]


# --- measuring --------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    records: int
    wall_s: float
    cpu_s: float  # every thread of the process
    caller_cpu_s: float  # the calling thread alone: the rest ran on the client's threads

    @property
    def per_s(self) -> float:
        return self.records / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.records * 1e6

    @property
    def caller_cpu_us(self) -> float:
        return self.caller_cpu_s / self.records * 1e6


class Window:
    """Process CPU time from creation to `stop()`; wall time from creation, or from
    `first_record()` when called (a consumer's rate leaves out its group join)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.caller_cpu = time.thread_time()
        self.started = False

    def first_record(self) -> None:
        if not self.started:
            self.started, self.wall = True, time.perf_counter()

    def stop(self, records: int) -> Run:
        return Run(
            records,
            time.perf_counter() - self.wall,
            time.process_time() - self.cpu,
            time.thread_time() - self.caller_cpu,
        )


class Deliveries:
    def __init__(self) -> None:
        self.ok = 0
        self.failed: list[object] = []

    def done(self, *_: object) -> None:
        self.ok += 1

    def fail(self, error: object) -> None:
        self.failed.append(error)

    def check(self, expected: int) -> None:
        if self.failed or self.ok != expected:
            raise RuntimeError(f"{self.ok}/{expected} delivered, failures: {self.failed[:3]}")


# --- kafka-python -----------------------------------------------------------------------


def produce_through(
    settings: CommonSettings, topic: str, pairs: Sequence[Pair], *, held: bool = False
) -> Run:
    """The services' producer (ota.kafka_clients.make_producer) on settings.kafka_client.
    `held`: sends in bursts of MAX_POLL_RECORDS, each under the producer's wakeups() hold,
    as the workers send one polled batch's outputs; otherwise one send() after another."""
    deliveries = Deliveries()
    window = Window()
    producer = make_producer(settings, client_id=f"bench-{settings.kafka_client}")
    wakeups = producer.wakeups()
    try:
        for start in range(0, len(pairs), MAX_POLL_RECORDS):
            if held:
                wakeups.hold()
            for key, value in pairs[start : start + MAX_POLL_RECORDS]:
                future = producer.send(topic, key=key, value=value)
                future.add_callback(deliveries.done)
                future.add_errback(deliveries.fail)
            if held:
                wakeups.release()
        producer.flush()
        run = window.stop(len(pairs))
    finally:
        producer.close()
    deliveries.check(len(pairs))
    return run


def produce_kafka_python(settings: CommonSettings, topic: str, pairs: Sequence[Pair]) -> Run:
    return produce_through(replace(settings, kafka_client="kafka-python"), topic, pairs)


def produce_kafka_python_held(settings: CommonSettings, topic: str, pairs: Sequence[Pair]) -> Run:
    return produce_through(replace(settings, kafka_client="kafka-python"), topic, pairs, held=True)


def consume_through(settings: CommonSettings, topic: str, count: int) -> Run:
    """The services' consumer (ota.kafka_clients.make_consumer) on settings.kafka_client."""
    window = Window()
    client = settings.kafka_client
    consumer = make_consumer(
        settings, group_id=f"bench-{uuid.uuid4().hex[:8]}", client_id=f"bench-{client}"
    )
    try:
        consumer.subscribe([topic])
        seen = 0
        deadline = time.monotonic() + TIMEOUT_S
        while seen < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{client} consumed {seen}/{count} in {TIMEOUT_S} s")
            polled = consumer.poll(timeout_ms=1000, max_records=MAX_POLL_RECORDS)
            if not polled:
                continue
            window.first_record()
            for records in polled.values():
                for record in records:
                    assert record.value is not None
                    decode(record.value)
                seen += len(records)
            consumer.commit()
        run = window.stop(seen)
    finally:
        consumer.close()
    return run


def consume_kafka_python(settings: CommonSettings, topic: str, count: int) -> Run:
    return consume_through(replace(settings, kafka_client="kafka-python"), topic, count)


# --- confluent-kafka --------------------------------------------------------------------


def produce_confluent(settings: CommonSettings, topic: str, pairs: Sequence[Pair]) -> Run:
    return produce_through(replace(settings, kafka_client="confluent-kafka"), topic, pairs)


def consume_confluent(settings: CommonSettings, topic: str, count: int) -> Run:
    return consume_through(replace(settings, kafka_client="confluent-kafka"), topic, count)


# --- rounds -----------------------------------------------------------------------------

Produce = Callable[[CommonSettings, str, Sequence[Pair]], Run]
Consume = Callable[[CommonSettings, str, int], Run]
CLIENTS: dict[str, tuple[Produce, Consume]] = {
    "kafka_python": (produce_kafka_python, consume_kafka_python),
    "kafka_python_held": (produce_kafka_python_held, consume_kafka_python),
    "confluent": (produce_confluent, consume_confluent),
}


def one_round(settings: CommonSettings, client: str, pairs: Sequence[Pair]) -> tuple[Run, Run]:
    produce, consume = CLIENTS[client]
    topic = f"bench.kafka-clients.{client}.{uuid.uuid4().hex[:8]}"
    admin = make_admin(settings)
    try:
        admin.create_topics(
            [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
            wait_for_metadata=True,
        )
        try:
            return produce(settings, topic, pairs), consume(settings, topic, len(pairs))
        finally:
            admin.delete_topics([topic])
    finally:
        admin.close()


def cross_check(settings: CommonSettings, pairs: Sequence[Pair], runs: int) -> None:
    """Each client consumes the records each client produced (one topic per producer and
    round, one group per reader): is a consumer's cost the client's, or the batch layout
    its producer chose?"""
    cpu_us: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        for producer_name in ("kafka_python", "confluent"):
            topic = f"bench.kafka-clients.cross.{uuid.uuid4().hex[:8]}"
            admin = make_admin(settings)
            admin.create_topics(
                [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                wait_for_metadata=True,
            )
            try:
                CLIENTS[producer_name][0](settings, topic, pairs)
                for reader in ("kafka_python", "confluent"):
                    run = CLIENTS[reader][1](settings, topic, len(pairs))
                    cpu_us[f"{reader}_reading_{producer_name}"].append(run.cpu_us)
            finally:
                admin.delete_topics([topic])
                admin.close()
    print()
    for name, values in cpu_us.items():
        print(median_line(f"kafka.consume_cpu_us_per_record_{name}", values, "us", 1))


def profile_consume(settings: CommonSettings, pairs: Sequence[Pair]) -> None:
    """One more kafka-python round with its consume under cProfile: the main thread's
    time by package area and by function."""
    topic = f"bench.kafka-clients.profile.{uuid.uuid4().hex[:8]}"
    admin = make_admin(settings)
    admin.create_topics(
        [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
        wait_for_metadata=True,
    )
    try:
        produce_kafka_python(settings, topic, pairs)
        profiler = cProfile.Profile(time.thread_time)  # CPU, not waits in poll()
        profiler.enable()
        run = consume_kafka_python(settings, topic, len(pairs))
        profiler.disable()
    finally:
        admin.delete_topics([topic])
        admin.close()
    stats = pstats.Stats(profiler)
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in entries.values())
    areas: dict[str, float] = defaultdict(float)
    for (path, _, function), entry in entries.items():
        areas[area_of(path, function)] += entry[2]
    print(f"\nprofile: kafka-python consume of {run.records} records, {run.cpu_us:.1f} us/record")
    print(f"  (under cProfile; {total:.2f} s of main-thread CPU, by area)")
    for name, seconds in sorted(areas.items(), key=lambda item: -item[1]):
        if seconds / total >= 0.01:
            print(f"  {seconds / total:6.1%}  {name}")
    stats.sort_stats("tottime").print_stats(25)


def area_of(path: str, function: str) -> str:
    """A profiled function's file as a short area name (kafka/record, ota/records, ...);
    a builtin by its own name (orjson.loads, a socket's recv, CRC-32C)."""
    for root in ("kafka/", "ota/", "selectors", "socket", "threading", "crc32c"):
        at = path.find(root)
        if at >= 0:
            return "/".join(path[at:].split("/")[:2]).removesuffix(".py")
    return function if path == "~" else os.path.basename(path)


def median_line(name: str, values: list[float], unit: str, digits: int) -> str:
    runs = ", ".join(f"{v:.{digits}f}" for v in values)
    return f"{name} = {statistics.median(values):.{digits}f} {unit}   (runs: {runs})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile a kafka-python consume")
    parser.add_argument(
        "--cross-check",
        action="store_true",
        help="also each client reading the other's records (--runs rounds)",
    )
    args = parser.parse_args()
    if args.records < 1 or args.runs < 1:
        parser.error("--records and --runs must be at least 1")

    try:
        import confluent_kafka
    except ImportError:
        raise SystemExit(
            "confluent-kafka is not installed: .venv/bin/pip install 'confluent-kafka==2.16.*'"
        ) from None
    settings = CommonSettings.from_env()
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (shared machine)")
    print(
        f"Python {platform.python_version()}, kafka-python {version('kafka-python')}, "
        f"confluent-kafka {version('confluent-kafka')} "
        f"(librdkafka {confluent_kafka.libversion()[0]}), "
        f"Kafka at {settings.kafka_bootstrap}"
    )
    pairs = workload(settings, args.records)
    sizes = sorted({len(value) for _, value in pairs[:3]})
    print(f"{args.records} records of {sizes} bytes, {PARTITIONS} partitions, {args.runs} rounds")

    for client in CLIENTS:  # warm-up: imports, first connections
        one_round(settings, client, pairs[: max(1, args.records // 10)])
    decode_window = Window()
    for _, value in pairs:
        decode(value)
    decode_us = decode_window.stop(len(pairs)).cpu_us

    results: dict[str, list[tuple[Run, Run]]] = {client: [] for client in CLIENTS}
    for number in range(1, args.runs + 1):
        for client in CLIENTS:
            produced, consumed = one_round(settings, client, pairs)
            results[client].append((produced, consumed))
            print(
                f"round {number} {client:>17}: produce {produced.per_s:7.0f}/s "
                f"{produced.cpu_us:5.1f} us CPU/record ({produced.caller_cpu_us:4.1f} in the "
                f"caller); consume {consumed.per_s:7.0f}/s {consumed.cpu_us:5.1f} us "
                f"({consumed.caller_cpu_us:4.1f})"
            )
    end = os.getloadavg()
    print(f"load average at end: {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}\n")
    for phase, index in (("produce", 0), ("consume", 1)):
        for client, runs in results.items():
            print(
                median_line(
                    f"kafka.{phase}_per_s_{client}", [r[index].per_s for r in runs], "records/s", 0
                )
            )
            print(
                median_line(
                    f"kafka.{phase}_cpu_us_per_record_{client}",
                    [r[index].cpu_us for r in runs],
                    "us",
                    1,
                )
            )
            print(
                median_line(
                    f"kafka.{phase}_caller_cpu_us_per_record_{client}",
                    [r[index].caller_cpu_us for r in runs],
                    "us",
                    1,
                )
            )
    print(f"kafka.decode_cpu_us_per_record = {decode_us:.1f} us   (ota.records.decode alone)")
    if args.cross_check:
        cross_check(settings, pairs, args.runs)
    if args.profile:
        profile_consume(settings, pairs)


if __name__ == "__main__":
    main()
