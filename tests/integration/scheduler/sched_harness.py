"""A live scheduler on the local stack for one test: its own topics, Redis db 11, a free port.

`Harness.client` talks to the real HTTP server; `harness.releases()` reads what the
scheduler produced to the inbox; `harness.job_event(...)` produces job events as a
worker would, so tasks can be driven without the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from kafka import KafkaConsumer, TopicPartition

from ops.demo_env import free_port
from ota.kafka_clients import make_consumer, make_producer
from ota.kafka_producer import RecordProducer
from ota.records import (
    DeviceEventRecord,
    JobEventRecord,
    JobStartRecord,
    PresenceRecord,
    decode_inbox,
    encode,
)
from ota.runtime import Runtime
from ota.settings import Topics
from scheduler.main import serve
from scheduler.settings import SchedulerSettings
from tests.kafka_client_kit import kafka_client_env

REDIS_DB = 11
T = TypeVar("T")
WRITE_KEY = "test-write-key-0123"
READ_KEY = "test-read-key-0123"
ADMIN_KEY = "test-admin-key-0123"  # device credentials, device CAs and API keys
API_KEYS = f"{READ_KEY}:read,{WRITE_KEY}:read+write,{ADMIN_KEY}:admin"  # OTA_API_KEYS


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = 30.0
) -> T:
    """Poll `probe` until it returns something truthy, or fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last saw {last!r}")


class Harness:
    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.topics = settings.common.topics
        base = f"http://127.0.0.1:{settings.http_port}"
        self.base_url = base
        self.client = httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {WRITE_KEY}"}, timeout=30
        )
        self.admin = httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
        )
        self.anon = httpx.AsyncClient(base_url=base, timeout=30)
        # Kafka clients are made on first use: most API tests need neither.
        self._producer_client: RecordProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._inbox_client: KafkaConsumer | None = None
        self.seen: list[JobStartRecord] = []
        self.last_task: dict[str, Any] = {}

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(serve(self.settings, Runtime(self._stop)))

        async def up() -> bool:
            if self._task is not None and self._task.done():
                self._task.result()
            try:
                return (await self.anon.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(up, "the scheduler to answer /healthz")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 30)
            self._task = None

    async def wait_failed(self, timeout_s: float = 30.0) -> BaseException:
        """Wait for the scheduler to stop by itself; what it failed with."""
        assert self._task is not None
        task, self._task = self._task, None
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        assert task.done(), "the scheduler is still running"
        failure = task.exception()
        assert failure is not None, "the scheduler stopped without a failure"
        return failure

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop()
        await self.client.aclose()
        await self.admin.aclose()
        await self.anon.aclose()
        if self._producer_client is not None:
            self._producer_client.close(timeout=5)
        if self._inbox_client is not None:
            self._inbox_client.close()

    @property
    def _producer(self) -> RecordProducer:
        if self._producer_client is None:
            self._producer_client = make_producer(self.settings.common, client_id="test-worker")
        return self._producer_client

    def job_event(
        self,
        device: str,
        task_id: str,
        to_state: str,
        *,
        from_state: str = "QUEUED",
        attempt: int = 1,
        job_version: int = 1,
        cause: int | None = None,
        event_id: str | None = None,
        at_ms: int | None = None,
    ) -> JobEventRecord:
        record = JobEventRecord(
            device_id=device,
            task_id=task_id,
            attempt=attempt,
            job_version=job_version,
            from_state=from_state,
            to_state=to_state,
            cause=cause,
            at_ms=int(time.time() * 1000) if at_ms is None else at_ms,
        )
        if event_id is not None:
            record = dataclasses.replace(record, id=event_id)
        self._producer.send(self.topics.job_events, key=device.encode(), value=encode(record))
        self._producer.flush()
        return record

    def report(self, device: str, *, fw: str | None = None, sw: str | None = None) -> None:
        """A version_report as the gateway would put it in the inbox."""
        paras = {k: v for k, v in (("fw_version", fw), ("sw_version", sw)) if v is not None}
        record = DeviceEventRecord(
            device_id=device,
            event_type="version_report",
            paras=paras,
            at_ms=int(time.time() * 1000),
        )
        self.produce_raw(self.topics.inbox, device, encode(record))

    def presence(self, device: str, online: bool) -> None:
        record = PresenceRecord(device_id=device, online=online, at_ms=int(time.time() * 1000))
        self.produce_raw(self.topics.inbox, device, encode(record))

    async def wait_device(self, device: str, **expected: Any) -> dict[str, Any]:
        async def matches() -> dict[str, Any] | None:
            response = await self.client.get(f"/v1/devices/{device}")
            if response.status_code != 200:
                return None
            body: dict[str, Any] = response.json()
            return body if all(body.get(k) == v for k, v in expected.items()) else None

        return await eventually(matches, f"device {device} to show {expected}")

    def produce_raw(self, topic: str, key: str, value: bytes | None) -> None:
        self._producer.send(topic, key=key.encode(), value=value)
        self._producer.flush()

    async def releases(self) -> list[JobStartRecord]:
        """Every JobStartRecord the scheduler produced so far (read from the inbox)."""
        if self._inbox_client is None:
            inbox = make_consumer(self.settings.common, group_id=None, client_id="test-inbox")
            parts = inbox.partitions_for_topic(self.topics.inbox) or set()
            tps = [TopicPartition(self.topics.inbox, p) for p in parts]
            inbox.assign(tps)
            inbox.seek_to_beginning(*tps)
            self._inbox_client = inbox
        polled = await asyncio.to_thread(self._inbox_client.poll, 200, 10_000)
        for batch in polled.values():
            for r in batch:
                record = decode_inbox(r.value)
                if isinstance(record, JobStartRecord):
                    self.seen.append(record)
        return self.seen

    async def wait_releases(self, count: int, timeout_s: float = 30.0) -> list[JobStartRecord]:
        async def enough() -> list[JobStartRecord] | None:
            got = await self.releases()
            return got if len(got) >= count else None

        return await eventually(enough, f"{count} releases", timeout_s)

    async def task(self, tid: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/tasks/{tid}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait_status(self, tid: str, status: str, timeout_s: float = 30.0) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            task = await self.task(tid)
            self.last_task = task
            return task if task["status"] == status else None

        try:
            return await eventually(reached, f"task {tid} to be {status}", timeout_s)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the task: {self.last_task}") from None

    async def upload(self, content: bytes, **meta: str) -> dict[str, Any]:
        params = {"type": "firmware", "version": "2.0", "file_name": "fw.bin", **meta}
        response = await self.client.post("/v1/packages", params=params, content=content)
        assert response.status_code in (200, 201), response.text
        body: dict[str, Any] = response.json()
        return body

    async def create_task(self, package_id: str, devices: list[str], **policy: Any) -> str:
        response = await self.client.post(
            "/v1/tasks",
            json={
                "type": "firmware",
                "package_id": package_id,
                "targets": {"device_ids": devices},
                "policy": policy,
            },
        )
        assert response.status_code == 201, response.text
        tid: str = response.json()["id"]
        return tid


def db_url(redis_url: str) -> str:
    """The stack's Redis URL pointed at this suite's own db (a URL's db wins over kwargs)."""
    base, _, last = redis_url.rstrip("/").rpartition("/")
    return f"{base if last.isdigit() else redis_url.rstrip('/')}/{REDIS_DB}"


def make_settings(
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path: Path,
    topics: Topics,
    sched_url: str | None = None,
    **env: str,
) -> SchedulerSettings:
    """`redis_url` is the stack's standalone Redis; `sched_url` the scheduler's own when it
    is not this suite's db there (a Redis Cluster: the credential store stays on the db)."""
    url = db_url(redis_url)
    environ = {
        "OTA_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "OTA_REDIS_URL": sched_url or url,
        "OTA_CREDENTIALS_REDIS_URL": url,
        "OTA_API_KEYS": API_KEYS,
        "OTA_PACKAGE_DIR": str(tmp_path / "packages"),
        "OTA_SCHEDULER_PORT": str(free_port()),
        "OTA_RECONCILE_INTERVAL_S": "0.2",
        "OTA_LEASE_TTL_S": "3",
        "OTA_WEBHOOK_BACKOFF_S": "0.05",
        "OTA_WEBHOOK_TIMEOUT_S": "2",
        "OTA_SCHEDULER_GROUP": f"test-sched-{uuid.uuid4().hex[:8]}",
        **kafka_client_env(),
        **env,
    }
    settings = SchedulerSettings.from_env(environ)
    common = dataclasses.replace(settings.common, topics=topics)
    return dataclasses.replace(settings, common=common)
