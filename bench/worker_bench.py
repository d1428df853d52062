"""Worker benchmarks: end-to-end transitions/s (Kafka -> worker -> Redis -> Kafka) with one
and two worker processes, also per CPU-second of the worker processes; kafka-python alone on
the same records (--raw); the pure apply path's CPU per transition; Redis bytes per
in-flight job (MEMORY USAGE); and how late due deadlines are applied while 1,000,000
deadlines are pending.

    .venv/bin/python bench/worker_bench.py throughput --devices 10000 --procs 1 --runs 3 --raw
    .venv/bin/python bench/worker_bench.py throughput --devices 10000 --procs 2 --runs 3
    .venv/bin/python bench/worker_bench.py deadlines --pending 1000000 --due 20000
    .venv/bin/python bench/worker_bench.py memory --jobs 1000000
    .venv/bin/python bench/worker_bench.py apply --devices 20000

Uses Redis db 13 (flushed; db 14 is the worker tests') or OTA_BENCH_REDIS_URL, which may
name a Redis Cluster (`redis+cluster://<node>`, flushed: a cluster of its own), and topics
under a fresh OTA_TOPIC_PREFIX (deleted after). The worker processes run `python -m workers` from this
checkout (the working directory is the repository root).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from ota.clock import now_ms
from ota.kafka_clients import make_admin, make_consumer, make_producer
from ota.records import (
    DeviceEventRecord,
    DownloadPhase,
    DownloadRecord,
    InboxRecord,
    JobSpec,
    JobStartRecord,
    PackageRef,
    PresenceRecord,
    TaskType,
    Windows,
    decode,
    encode,
)
from ota.redis_clients import make_redis
from ota.settings import CommonSettings, Topics
from workers.batch import DeviceWrite, InboxItem, SpecWrite, apply_batch
from workers.codec import SpecRef, pack, spec_ref
from workers.events import Event, Kind
from workers.machine import step
from workers.model import Device
from workers.service import tune_gc
from workers.store import Store

ROOT = Path(__file__).resolve().parents[1]
SHA = "ab" * 32
REDIS_URL = os.environ.get("OTA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
PARTITIONS = 12
DEFAULT_WINDOWS = Windows()


def bench_redis() -> redis.Redis[bytes]:
    """A client of OTA_BENCH_REDIS_URL; a `redis+cluster://` URL runs on a Redis Cluster."""
    return make_redis(CommonSettings.from_env(), REDIS_URL)


def job_spec(windows: Windows = DEFAULT_WINDOWS) -> JobSpec:
    return JobSpec(
        task_id="5f0c9a2e4b7d4e3f9a1b2c3d4e5f6a7b",
        task_type=TaskType.FIRMWARE,
        package=PackageRef(SHA, "2.0.0", "firmware-2.0.0.bin", 8_388_608),
        windows=windows,
    )


def setup(prefix: str) -> CommonSettings:
    common = replace(
        CommonSettings.from_env(), topics=Topics.with_prefix(prefix), redis_url=REDIS_URL
    )
    admin = make_admin(common)
    t = common.topics
    admin.create_topics(
        [NewTopic(t.inbox, PARTITIONS, 1)]
        + [NewTopic(n, PARTITIONS, 1) for n in (t.commands, t.job_events, t.dead_letters)]
    )
    admin.close()
    bench_redis().flushdb()
    return common


def teardown(common: CommonSettings) -> None:
    t = common.topics
    admin = make_admin(common)
    admin.delete_topics([t.inbox, t.commands, t.job_events, t.dead_letters])
    admin.close()
    bench_redis().flushdb()


def spawn(common: CommonSettings, prefix: str, group: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OTA_TOPIC_PREFIX": prefix,
        "OTA_REDIS_URL": REDIS_URL,
        "OTA_WORKER_GROUP_ID": group,
        "OTA_LOG_LEVEL": "WARNING",
        "OTA_WORKER_SESSION_TIMEOUT_MS": "6000",
    }
    return subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT, env=env)


def device_records(d: str, spec: JobSpec, t: int) -> list[InboxRecord]:
    """One device's way through a job: 7 inbox records, 6 transitions."""
    return [
        PresenceRecord(device_id=d, online=True, at_ms=t),
        JobStartRecord(device_id=d, job=spec, at_ms=t),
        DeviceEventRecord(
            device_id=d, event_type="version_report", paras={"fw_version": "1.0.0"}, at_ms=t
        ),
        DownloadRecord(device_id=d, package_sha256=SHA, phase=DownloadPhase.STARTED, at_ms=t),
        DownloadRecord(device_id=d, package_sha256=SHA, phase=DownloadPhase.FINISHED, at_ms=t),
        DeviceEventRecord(
            device_id=d,
            event_type="upgrade_progress_report",
            paras={"result_code": 0, "progress": 50, "version": "1.0.0"},
            at_ms=t,
        ),
        DeviceEventRecord(
            device_id=d,
            event_type="upgrade_progress_report",
            paras={"result_code": 0, "progress": 100, "version": "2.0.0"},
            at_ms=t,
        ),
    ]


def prefill(common: CommonSettings, devices: int) -> int:
    producer = KafkaProducer(
        bootstrap_servers=common.kafka_bootstrap, acks=1, linger_ms=20, batch_size=512 * 1024
    )
    spec, t = job_spec(), now_ms()
    sent = 0
    for i in range(devices):
        d = f"bench-{i:07d}"
        records = device_records(d, spec, t)
        for r in records:
            producer.send(common.topics.inbox, value=encode(r), key=d.encode())
        sent += len(records)
    producer.flush()
    producer.close()
    return sent


def end_offsets(common: CommonSettings) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=common.kafka_bootstrap)
    tps = [TopicPartition(common.topics.inbox, p) for p in range(PARTITIONS)]
    ends = {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    consumer.close()
    return ends


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all threads) so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def raw_clients(common: CommonSettings) -> tuple[float, float, float, float]:
    """kafka-python alone, in this process, on the benchmark's own records: consume the
    pre-filled inbox with a consumer configured like the worker's, then produce as many
    records (the same values) with the worker's producer settings to a scratch topic.
    Returns (consume/s, consume per CPU-second, produce/s, produce per CPU-second)."""
    consumer = make_consumer(
        common,
        group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        max_poll_records=2000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    consumer.subscribe([common.topics.inbox])
    total = sum(end_offsets(common).values())
    values: list[tuple[bytes, bytes]] = []
    started, cpu = 0.0, 0.0
    while len(values) < total:
        polled = consumer.poll(timeout_ms=500)
        if polled and not started:
            started, cpu = time.perf_counter(), time.process_time()
        for records in polled.values():
            # The inbox's records all carry a key (the device id) and a value.
            values += [(r.key or b"", r.value or b"") for r in records]
    consume = (len(values) / (time.perf_counter() - started), time.process_time() - cpu)
    consumer.close()
    topic = common.topics.dead_letters  # unused by the throughput run
    producer = make_producer(common, client_id="bench-raw")
    started, cpu = time.perf_counter(), time.process_time()
    for key, value in values:
        producer.send(topic, key=key, value=value)
    producer.flush()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    producer.close()
    n = len(values)
    return consume[0], n / consume[1], n / wall, n / cpu


def raw_run(devices: int) -> tuple[float, float, float, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    common = setup(prefix)
    try:
        prefill(common, devices)
        return raw_clients(common)
    finally:
        teardown(common)


def throughput(devices: int, procs: int) -> tuple[float, float]:
    """Returns (transitions/s, transitions per CPU-second of the worker processes)."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    common = setup(prefix)
    try:
        prefill(common, devices)
        ends = end_offsets(common)
        store = Store(bench_redis())
        workers = [spawn(common, prefix, f"bench-{uuid.uuid4().hex[:6]}") for _ in range(1)]
        group_env = workers[0].args  # the group id is per run: a second process joins it
        del group_env
        if procs == 2:
            workers[0].kill()
            workers[0].wait()
            group = f"bench-{uuid.uuid4().hex[:6]}"
            workers = [spawn(common, prefix, group) for _ in range(2)]
        first = None
        while True:
            try:
                done = {p: store.offset(p) for p in range(PARTITIONS)}
            except redis.RedisError:  # the shared Redis stalls now and then: ask again
                continue
            applied = sum(max(0, done[p] + 1) for p in done)
            if first is None and applied > 0:
                first = (time.monotonic(), applied, cpu_seconds([w.pid for w in workers]))
            if all(done[p] + 1 >= ends[p] for p in ends):
                break
            time.sleep(0.02)
        finished = time.monotonic()
        cpu = cpu_seconds([w.pid for w in workers])
        for w in workers:
            w.terminate()
            w.wait(30)
        assert first is not None
        records = sum(ends.values()) - first[1]
        transitions = records * 6 / 7  # 6 transitions per 7 records
        return transitions / (finished - first[0]), transitions / max(0.01, cpu - first[2])
    finally:
        teardown(common)


def deadlines(pending: int, due: int, spread_s: int) -> tuple[float, float, float, float]:
    """Returns (bytes per in-flight job, lag p50 ms, lag p99 ms, timeouts applied per s)."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    common = setup(prefix)
    client = bench_redis()
    store = Store(client)
    try:
        base_memory = int(client.info("memory")["used_memory"])
        t0 = now_ms()
        far = job_spec(Windows(version_s=3600))
        _load(store, pending, far, t0, "p")
        per_job = (int(client.info("memory")["used_memory"]) - base_memory) / pending
        soon = job_spec(Windows(version_s=1))
        start_at = now_ms() + 15_000  # the worker is up by then
        expected: dict[str, int] = {}
        for i in range(due):
            at = start_at + (i * spread_s * 1000) // due
            expected[f"due-{i:07d}"] = at + 1000
        _load(store, due, soon, 0, "due", times=[v - 1000 for v in expected.values()])
        worker = spawn(common, prefix, f"bench-{uuid.uuid4().hex[:6]}")
        consumer = KafkaConsumer(bootstrap_servers=common.kafka_bootstrap, enable_auto_commit=False)
        tps = [TopicPartition(common.topics.job_events, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        lags: list[int] = []
        stamps: list[int] = []
        deadline = time.monotonic() + spread_s + 120
        while len(lags) < due and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                for r in batch:
                    event = decode(r.value)
                    if event.to_state == "FAILED":
                        lags.append(r.timestamp - expected[event.device_id])
                        stamps.append(r.timestamp)
        worker.terminate()
        worker.wait(30)
        consumer.close()
        lags.sort()
        p50 = lags[len(lags) // 2]
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        rate = len(stamps) / max(0.001, (max(stamps) - min(stamps)) / 1000)
        print(f"applied {len(lags)}/{due} timeouts", file=sys.stderr)
        return per_job, p50, p99, rate
    finally:
        teardown(common)


def apply_only(devices: int) -> float:
    """CPU microseconds per transition of the pure part alone (decode the inbox records,
    the machine, encode the outputs, pack the states): `apply_batch` on the benchmark's
    records, one record per device per batch as the worker's polls bring them, with the
    worker's garbage-collector settings."""
    tune_gc()
    spec = job_spec()
    specs = {spec_ref(spec).digest: spec}
    rounds: list[list[InboxItem]] = [[] for _ in range(7)]
    offset, t = 0, now_ms()
    for i in range(devices):
        d = f"bench-{i:07d}"
        for k, record in enumerate(device_records(d, spec, t)):
            rounds[k].append(InboxItem(offset, d.encode(), encode(record), t))
            offset += 1
    common = CommonSettings.from_env()
    stored: dict[str, bytes | None] = {}
    started = time.process_time()
    for items in rounds:
        result = apply_batch(common, "inbox", 0, items, stored, specs, 7 * 86_400_000)
        stored.update((w.device_id, w.value) for w in result.writes)
    return (time.process_time() - started) / (devices * 6) * 1e6


def memory(jobs: int) -> tuple[float, float]:
    """Bytes per in-flight job (QUERYING_VERSION, with its deadline entry and its share of
    the task's spec): (INFO used_memory growth, sum of MEMORY USAGE) / jobs."""
    client = bench_redis()
    client.flushdb()
    store = Store(client)
    try:
        base_memory = int(client.info("memory")["used_memory"])
        _load(store, jobs, job_spec(Windows(version_s=3600)), now_ms(), "m")
        used = (int(client.info("memory")["used_memory"]) - base_memory) / jobs
        pipe = client.pipeline(transaction=False)
        keys = [k for k in client.scan_iter(match="ota:*", count=10_000)]
        for key in keys:
            pipe.memory_usage(key, samples=0)
        by_kind: dict[str, int] = {}
        for key, n in zip(keys, pipe.execute(), strict=True):
            kind = key.split(b"}:", 1)[1].split(b":", 1)[0].decode()
            by_kind[kind] = by_kind.get(kind, 0) + (n or 0)
        print(", ".join(f"{k}: {v / jobs:.1f}" for k, v in sorted(by_kind.items())), "bytes/job")
        return used, sum(by_kind.values()) / jobs
    finally:
        client.flushdb()


def _load(
    store: Store, count: int, spec: JobSpec, at_ms: int, name: str, times: list[int] | None = None
) -> None:
    """Device states as the machine makes them (job started, querying the version), with
    their deadlines, written straight to Redis in batches per partition."""
    batch: dict[int, list[DeviceWrite]] = {}
    ref = spec_ref(spec)
    for i in range(count):
        d = f"{name}-{i:07d}"
        t = times[i] if times is not None else at_ms
        out = step(Device(online=True), Event(Kind.START, spec=spec, attempt=1), t, "w0-0")
        device = out.device
        p = hash(d) % PARTITIONS
        batch.setdefault(p, []).append(DeviceWrite(d, pack(device), 0, device.deadline_ms))
        if len(batch[p]) >= 2000:
            _flush(store, p, batch.pop(p), ref)
    for p, writes in batch.items():
        _flush(store, p, writes, ref)


def _flush(store: Store, partition: int, writes: list[DeviceWrite], ref: SpecRef) -> None:
    current = store.offset(partition)
    specs = [SpecWrite(ref, len(writes), 0)]
    assert store.apply(partition, current, current, writes, b"", specs) is None


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--devices", type=int, default=20_000)
    t.add_argument("--procs", type=int, choices=(1, 2), default=1)
    t.add_argument("--runs", type=int, default=3)
    t.add_argument("--raw", action="store_true", help="kafka-python alone, same records")
    a = sub.add_parser("apply")
    a.add_argument("--devices", type=int, default=20_000)
    a.add_argument("--runs", type=int, default=3)
    m = sub.add_parser("memory")
    m.add_argument("--jobs", type=int, default=1_000_000)
    d = sub.add_parser("deadlines")
    d.add_argument("--pending", type=int, default=1_000_000)
    d.add_argument("--due", type=int, default=20_000)
    d.add_argument("--spread-s", type=int, default=10)
    args = parser.parse_args()
    if args.what == "throughput":
        print(f"load average at start: {os.getloadavg()}")
        if args.raw:
            raw = [raw_run(args.devices) for _ in range(args.runs)]
            for i, name in enumerate(("consume", "consume_cpu", "produce", "produce_cpu")):
                got = [r[i] for r in raw]
                print(f"kafka_python.{name}_per_s = {statistics.median(got):.0f} records/s", got)
            cons, prod = statistics.median(r[1] for r in raw), statistics.median(r[3] for r in raw)
            ceiling = 1 / (7 / 6 / cons + 8 / 6 / prod)  # 7 consumed, 8 produced per 6
            print(f"kafka_python.ceiling_transitions_per_cpu_s = {ceiling:.0f} transitions/s")
        runs = [throughput(args.devices, args.procs) for _ in range(args.runs)]
        rates, per_cpu = [r for r, _ in runs], [c for _, c in runs]
        print("runs:", [round(r) for r in rates], "per CPU-second:", [round(c) for c in per_cpu])
        print(f"load average at end: {os.getloadavg()}")
        name = "worker.transitions_per_s" + ("_2proc" if args.procs == 2 else "")
        print(f"{name} = {statistics.median(rates):.0f} transitions/s")
        print(f"worker.transitions_per_cpu_s = {statistics.median(per_cpu):.0f} transitions/s")
    elif args.what == "apply":
        costs = [apply_only(args.devices) for _ in range(args.runs)]
        print("runs:", [round(c, 1) for c in costs])
        print(f"worker.apply_us_per_transition = {statistics.median(costs):.1f} us CPU")
    elif args.what == "memory":
        used, usage = memory(args.jobs)
        print(f"INFO used_memory growth per job: {used:.0f} bytes")
        print(f"redis.bytes_per_job = {usage:.0f} bytes  (MEMORY USAGE, keys + deadline zset)")
    else:
        per_job, p50, p99, rate = deadlines(args.pending, args.due, args.spread_s)
        print(f"redis.bytes_per_job = {per_job:.0f} bytes")
        print(f"sweeper.due_lag_p50_ms = {p50:.0f} ms")
        print(f"sweeper.due_lag_p99_ms = {p99:.0f} ms")
        print(
            f"sweeper.timeouts_applied_per_s = {rate:.0f} /s (due rate {args.due / args.spread_s:.0f}/s)"
        )


if __name__ == "__main__":
    main()
