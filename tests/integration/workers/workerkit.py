"""Shared pieces of the worker's integration and fault tests: topics, settings, an inbox
writer, topic readers that wait with deadlines, and workers in threads or subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ota.clock import now_ms
from ota.records import (
    DeviceEventRecord,
    DownloadPhase,
    DownloadRecord,
    InboxRecord,
    JobEventRecord,
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
from tests.kafka_client_kit import kafka_client_env
from tests.redis_cluster_kit import PrivateRedisCluster
from workers.service import build
from workers.settings import WorkerSettings

WORKER_DB = 14
ROOT = Path(__file__).resolve().parents[3]
SHA = "5e" * 32
TARGET = "2.0"
SHORT = Windows(
    online_s=30,
    version_s=30,
    download_start_s=30,
    download_finish_s=30,
    update_start_s=30,
    result_s=30,
    verify_s=30,
    upgrade_total_s=120,
)


def worker_redis_url(redis_url: str) -> str:
    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    return f"{base}/{WORKER_DB}"


def make_topics(topic_factory: Callable[..., str], partitions: int) -> Topics:
    base = Topics()
    return replace(
        base,
        inbox=topic_factory("inbox", partitions=partitions),
        commands=topic_factory("commands", partitions=1),
        job_events=topic_factory("job-events", partitions=1),
        dead_letters=topic_factory("dead-letters", partitions=1),
    )


def make_settings(
    kafka_bootstrap: str, redis_url: str, topics: Topics, **overrides: Any
) -> WorkerSettings:
    common = replace(
        CommonSettings.from_env(kafka_client_env()),
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        topics=topics,
    )
    values: dict[str, Any] = {
        "group_id": f"t-workers-{uuid.uuid4().hex[:8]}",
        "sweep_idle_ms": 50,
        "sweep_lease_ms": 2000,
        "poll_timeout_ms": 50,
        "session_timeout_ms": 6000,  # the broker's minimum: killed workers leave the group soon
    }
    values.update(overrides)
    return WorkerSettings(common=common, **values)


def env_for(settings: WorkerSettings) -> dict[str, str]:
    topics = settings.common.topics
    return {
        **os.environ,
        "OTA_KAFKA_BOOTSTRAP": settings.common.kafka_bootstrap,
        "OTA_REDIS_URL": settings.common.redis_url,
        "OTA_WORKER_GROUP_ID": settings.group_id,
        "OTA_WORKER_SWEEP_IDLE_MS": str(settings.sweep_idle_ms),
        "OTA_WORKER_SWEEP_LEASE_MS": str(settings.sweep_lease_ms),
        "OTA_WORKER_POLL_TIMEOUT_MS": str(settings.poll_timeout_ms),
        "OTA_WORKER_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
        "OTA_TEST_TOPICS": ",".join(
            [topics.inbox, topics.commands, topics.job_events, topics.dead_letters]
        ),
    }


def spec(
    task_id: str, *, windows: Windows = SHORT, retry_count: int = 0, retry_interval_s: int = 1
) -> JobSpec:
    return JobSpec(
        task_id=task_id,
        task_type=TaskType.FIRMWARE,
        package=PackageRef(SHA, TARGET, "fw.bin", 4096),
        windows=windows,
        retry_count=retry_count,
        retry_interval_s=retry_interval_s,
    )


class Inbox:
    def __init__(self, settings: WorkerSettings) -> None:
        self.topic = settings.common.topics.inbox
        self.producer = KafkaProducer(bootstrap_servers=settings.common.kafka_bootstrap, acks="all")

    def send(
        self, record: InboxRecord, *, raw: bytes | None = None, key: bytes | None = None
    ) -> None:
        stamped = replace(record, at_ms=record.at_ms or now_ms())
        self.producer.send(
            self.topic, value=raw or encode(stamped), key=key or record.device_id.encode()
        )
        self.producer.flush()

    def start(self, device: str, task: str, **kw: Any) -> None:
        self.send(JobStartRecord(device_id=device, job=spec(task, **kw)))

    def online(self, device: str, online: bool = True) -> None:
        self.send(PresenceRecord(device_id=device, online=online))

    def version(self, device: str, fw: str) -> None:
        self.send(
            DeviceEventRecord(
                device_id=device, event_type="version_report", paras={"fw_version": fw}
            )
        )

    def progress(self, device: str, code: int, pct: int | None, version: str) -> None:
        paras: dict[str, Any] = {"result_code": code, "version": version}
        if pct is not None:
            paras["progress"] = pct
        self.send(
            DeviceEventRecord(device_id=device, event_type="upgrade_progress_report", paras=paras)
        )

    def download(self, device: str, phase: DownloadPhase) -> None:
        self.send(DownloadRecord(device_id=device, package_sha256=SHA, phase=phase))

    def close(self) -> None:
        self.producer.close()


class Reader:
    """Reads a topic from its start; `wait` polls until a condition holds or time runs out."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        parts = [
            TopicPartition(topic, p)
            for p in sorted(self.consumer.partitions_for_topic(topic) or {0})
        ]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning()
        self.records: list[Any] = []

    def drain(self) -> list[Any]:
        for batch in self.consumer.poll(timeout_ms=100).values():
            self.records += [decode(r.value) for r in batch]
        return self.records

    def wait(self, condition: Callable[[list[Any]], bool], timeout_s: float = 60) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while not condition(self.drain()):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out; have {len(self.records)} records: {self.records[-5:]}"
                )
        return self.records

    def close(self) -> None:
        self.consumer.close()


def transitions(records: list[Any], device: str) -> list[tuple[int, str, str]]:
    """A device's distinct transitions (deduplicated by event id), in version order."""
    seen: dict[str, JobEventRecord] = {}
    for r in records:
        if isinstance(r, JobEventRecord) and r.device_id == device and r.from_state != r.to_state:
            seen[r.id] = r
    return sorted((r.job_version, r.from_state, r.to_state) for r in seen.values())


def reached(records: list[Any], device: str, state: str) -> bool:
    return any(to == state for _, _, to in transitions(records, device))


@dataclass
class ThreadWorker:
    """A worker and its sweeper on threads of the test process."""

    settings: WorkerSettings

    def __post_init__(self) -> None:
        self.worker, self.sweeper = build(self.settings, client_id=f"t-{uuid.uuid4().hex[:6]}")
        self.error: BaseException | None = None
        self.threads = [
            threading.Thread(target=self._run, daemon=True),
            threading.Thread(target=self.sweeper.run, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self) -> None:
        self.worker.stopping.set()
        self.sweeper.stop()
        for thread in self.threads:
            thread.join(30)
        self.worker.consumer.close()
        self.worker.producer.close()
        if self.error is not None:
            raise self.error


def spawn_worker(
    settings: WorkerSettings, *flags: str, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """`python run_worker.py` (the real service on the test's topics) in a new process;
    its warnings and errors go to `log` when given (to say why it exited), else nowhere."""
    args = [sys.executable, str(Path(__file__).with_name("run_worker.py")), *flags]
    if log is None:
        return subprocess.Popen(args, cwd=ROOT, env=env_for(settings), stderr=subprocess.DEVNULL)
    with log.open("ab") as sink:  # the child keeps its own descriptor
        return subprocess.Popen(args, cwd=ROOT, env=env_for(settings), stderr=sink)


def worker_redis(url: str) -> Iterator[redis.Redis[bytes]]:
    """A client of `url` (standalone or `redis+cluster://`), empty before and after."""
    client = make_redis(CommonSettings.from_env({}), url)
    client.flushdb()  # on a cluster: every master
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


# Fixtures shared by the integration and fault tests (their conftests import these).


@pytest.fixture(params=["standalone", "cluster"])
def wredis_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    """The Redis the workers run on, once each: the shared one's db 14 and a private
    three-master Redis Cluster (the `redis_cluster` fixture, tests/redis_cluster_kit.py)."""
    if request.param == "standalone":
        return worker_redis_url(redis_url)
    cluster: PrivateRedisCluster = request.getfixturevalue("redis_cluster")
    return cluster.url


@pytest.fixture
def wredis(wredis_url: str) -> Iterator[redis.Redis[bytes]]:
    yield from worker_redis(wredis_url)


@pytest.fixture
def wsettings(
    kafka_bootstrap: str,
    wredis_url: str,
    topic_factory: Callable[..., str],
    wredis: redis.Redis[bytes],
) -> WorkerSettings:
    return make_settings(kafka_bootstrap, wredis_url, make_topics(topic_factory, 4))


@pytest.fixture
def inbox(wsettings: WorkerSettings) -> Iterator[Inbox]:
    writer = Inbox(wsettings)
    yield writer
    writer.close()
