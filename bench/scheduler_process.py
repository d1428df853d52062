"""The scheduler as its own process (`python -m scheduler`) for the scheduler and console
benchmarks: fresh topics under a prefix of its own, one Redis db flushed before and after,
an API key the benchmark writes with. `running_scheduler()` is the whole life of one;
`cpu_s()` reads a process's CPU time from /proc; `machine_line()` says where a run ran.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis
from kafka.admin import KafkaAdminClient, NewTopic

from ops.demo_env import free_port
from ota.settings import Topics

KEY = "bench-write-key-0123"
TOPICS = tuple(getattr(Topics(), f.name) for f in dataclasses.fields(Topics))  # all of them


class Scheduler:
    def __init__(self, bootstrap: str, redis_url: str, workdir: Path, prefix: str) -> None:
        self.prefix = f"{prefix}{uuid.uuid4().hex[:8]}."
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bootstrap = bootstrap
        self.redis_url = redis_url
        self.env = {
            **os.environ,
            "OTA_KAFKA_BOOTSTRAP": bootstrap,
            "OTA_REDIS_URL": self.redis_url,
            "OTA_TOPIC_PREFIX": self.prefix,
            "OTA_API_KEYS": f"{KEY}:read+write",
            "OTA_PACKAGE_DIR": str(workdir / "packages"),
            "OTA_SCHEDULER_PORT": str(self.port),
            "OTA_SCHEDULER_GROUP": f"{self.prefix}sched",
            "OTA_LOG_LEVEL": "WARNING",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def topics(self) -> list[str]:
        return [self.prefix + t for t in TOPICS]

    def start(self) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="bench")
        try:
            admin.create_topics(
                [
                    NewTopic(t, 12 if t.endswith(("inbox", "job-events")) else 1, 1)
                    for t in self.topics()
                ]
            )
        finally:
            admin.close()
        self.proc = subprocess.Popen([sys.executable, "-m", "scheduler"], env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the scheduler did not come up")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="bench")
        try:
            admin.delete_topics(self.topics())
        finally:
            admin.close()


@contextmanager
def running_scheduler(redis_db: int, prefix: str) -> Iterator[Scheduler]:
    """A started scheduler on the stack that OTA_KAFKA_BOOTSTRAP and OTA_REDIS_URL name
    (the local one by default), on Redis db `redis_db`, flushed before and after."""
    bootstrap = os.environ.get("OTA_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    redis_base = os.environ.get("OTA_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
    redis_url = f"{redis_base}/{redis_db}"
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    with tempfile.TemporaryDirectory() as work:
        sched = Scheduler(bootstrap, redis_url, Path(work), prefix)
        sched.start()
        try:
            yield sched
        finally:
            sched.stop()
            r.flushdb()


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_line(load: tuple[float, float, float]) -> str:
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average at start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
