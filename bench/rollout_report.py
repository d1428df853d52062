"""Measurements for bench/rollout.py: CPU from /proc, rates, Kafka bytes, latencies, the PNG."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kafka.structs import TopicPartition

from ota.kafka_clients import make_consumer
from ota.kafka_consumer import RecordConsumer, read_to_end
from ota.records import DeviceEventRecord, JobEventRecord, decode
from ota.settings import CommonSettings

TICKS = os.sysconf("SC_CLK_TCK")
STATE_ORDER = (
    "PENDING",
    "QUEUED",
    "WAITING_ONLINE",
    "QUERYING_VERSION",
    "COMMAND_SENT",
    "DOWNLOADING",
    "DOWNLOADED",
    "UPDATING",
    "VERIFYING",
    "CONFIRMING",
    "WAITING_RETRY",
    "SUCCEEDED",
    "FAILED",
    "CANCELLED",
)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def steady_rate(samples: Sequence[tuple[float, Mapping[str, int]]]) -> float:
    """Completions per second between 10% and 90% of the final count (ramp-up/tail cut)."""
    if not samples:
        return 0.0
    done = [(t, c.get("SUCCEEDED", 0) + c.get("FAILED", 0)) for t, c in samples]
    total = done[-1][1]
    low = next(((t, n) for t, n in done if n >= 0.1 * total), None)
    high = next(((t, n) for t, n in done if n >= 0.9 * total), None)
    if low is None or high is None or high[0] <= low[0]:
        return 0.0
    return (high[1] - low[1]) / (high[0] - low[0])


def kafka_bytes(data_dir: Path, prefix: str) -> int:
    """Bytes in the run's topic partition logs (the broker's log directory)."""
    total = 0
    if not data_dir.is_dir():
        return 0
    for entry in data_dir.iterdir():
        if entry.is_dir() and entry.name.startswith(prefix):
            # .log segments only: Kafka preallocates 10 MiB index files per partition.
            total += sum(f.stat().st_size for f in entry.glob("*.log"))
    return total


def redis_bytes(client: Any, sample: int = 2000) -> int:
    """The run's db size in bytes, from MEMORY USAGE of a sample of its keys."""
    keys = int(client.dbsize())
    if not keys:
        return 0
    sampled, total = 0, 0
    for key in client.scan_iter(count=500):
        total += int(client.memory_usage(key, samples=0) or 0)
        sampled += 1
        if sampled >= sample:
            break
    return total * keys // max(1, sampled)


def percentile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _reader(env: Mapping[str, str]) -> RecordConsumer:
    """A groupless consumer on the services' Kafka client (OTA_KAFKA_CLIENT), big batches."""
    settings = CommonSettings.from_env(env)
    return make_consumer(
        settings,
        group_id=None,
        client_id="ota-bench-report",
        max_poll_records=10_000,
        fetch_max_bytes=64 * 1024 * 1024,
    )


def _job_events(env: Mapping[str, str], topic: str) -> Iterator[JobEventRecord]:
    """Every job event of `topic`, partition by partition, up to its end at the call."""
    consumer = _reader(env)
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        for _, batch in read_to_end(consumer, parts, poll_ms=1000):
            for message in batch:
                record = decode(message.value) if message.value is not None else None
                if isinstance(record, JobEventRecord):
                    yield record
    finally:
        consumer.close()


def job_latencies(env: Mapping[str, str], topic: str) -> dict[str, float]:
    """Per device, first job event (its release) to SUCCEEDED, from the job-events topic."""
    first: dict[str, int] = {}
    succeeded: dict[str, int] = {}
    seen: set[tuple[str, str, int, int, str]] = set()
    repeated = 0  # the same transition delivered twice (at-least-once duplicates)
    for record in _job_events(env, topic):
        device = record.device_id
        if record.from_state != record.to_state:  # a move, not a timeline note
            step = (device, record.task_id, record.attempt, record.job_version, record.to_state)
            repeated += step in seen
            seen.add(step)
        if device not in first or record.at_ms < first[device]:
            first[device] = record.at_ms
        if record.to_state == "SUCCEEDED":
            succeeded[device] = record.at_ms
    spans = sorted((succeeded[d] - first[d]) / 1000 for d in succeeded)
    if not spans:
        return {}
    return {
        "count": len(spans),
        "devices_with_jobs": len(first),
        "repeated_transitions": repeated,
        "p50": round(statistics.median(spans), 2),
        "p90": round(percentile(spans, 0.9), 2),
        "p99": round(percentile(spans, 0.99), 2),
        "max": round(spans[-1], 2),
    }


# What only a given service produces: its first record after it was killed is the
# restarted process at work again.
PRODUCED_BY = {
    "workers": ("ota.job-events", JobEventRecord),
    "gateway": ("ota.inbox", DeviceEventRecord),
}


def first_record_after(
    env: Mapping[str, str], prefix: str, service: str, after_ms: float
) -> float | None:
    """Seconds from `after_ms` (wall clock, this machine) to the first record of `service`'s
    kind that Kafka stamped after it (producer CreateTime, the same clock), or None."""
    base, kind = PRODUCED_BY[service]
    topic = prefix + base
    first: float | None = None
    consumer = _reader(env)
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        for _, batch in read_to_end(consumer, parts, poll_ms=1000):
            for message in batch:
                at, value = message.timestamp, message.value
                earlier = first is None or at < first
                if (
                    at > after_ms
                    and earlier
                    and value is not None
                    and isinstance(decode(value), kind)
                ):
                    first = at
                    break  # later records of this partition are later still
    finally:
        consumer.close()
    return None if first is None else round((first - after_ms) / 1000, 2)


def plot_states(
    samples: Sequence[tuple[float, Mapping[str, int]]], target: Path, *, title: str
) -> None:
    """Devices per job state over time, stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not samples:
        return
    times = [t for t, _ in samples]
    present = [s for s in STATE_ORDER if any(c.get(s, 0) for _, c in samples)]
    series = [[c.get(s, 0) for _, c in samples] for s in present]
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.stackplot(times, series, labels=present)
    ax.set_xlabel("seconds since the task was created")
    ax.set_ylabel("devices")
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)
