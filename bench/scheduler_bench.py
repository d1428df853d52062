"""Control-plane figures of the scheduler, against the local stack.

- scheduler.task_100k_accept_s: upload a 100,000-id target list and create the task,
  until the API answers 201 (the task, its device list, states and counts are stored);
- scheduler.task_100k_release_s: from that answer until the reconciler has released
  every device into the inbox, at an unlimited rate;
- scheduler.status_reads_per_s: GET /v1/tasks/{id} of that task from concurrent clients;
- scheduler.ingest_cpu_ms_per_device: the scheduler's CPU time per device while it takes in
  what a rollout sends it, paced at --ingest-rate devices/s for a released task of
  --ingest-devices: per device six job events (QUERYING_VERSION .. SUCCEEDED) and eight
  inbox records (presence, two version reports, three progress reports, two download
  records the registry skips), until the task's counts show every device succeeded.

The scheduler runs as its own process (`python -m scheduler`) on fresh topics and Redis
db 11 (taken in turns with the scheduler's tests through the same lock file); the load
comes from this process. Each figure: one warm-up run, then the median of --runs.

    .venv/bin/python bench/scheduler_bench.py [--devices 100000] [--runs 3]
        [--ingest-devices 10000] [--ingest-rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from ota.records import (
    DeviceEventRecord,
    DownloadPhase,
    DownloadRecord,
    JobEventRecord,
    PresenceRecord,
    encode,
)

KEY = "bench-write-key-0123"
REDIS_DB = 11
LOCK = Path(tempfile.gettempdir()) / f"ota-scheduler-tests-db{REDIS_DB}.lock"
TOPICS = (
    "inbox",
    "commands",
    "job-events",
    "dead-letters",
    "task-events",
    "packages",
    "tasks",
    "devices",
    "audit",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Scheduler:
    def __init__(self, bootstrap: str, redis_base: str, workdir: Path) -> None:
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}."
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bootstrap = bootstrap
        self.redis_url = f"{redis_base}/{REDIS_DB}"
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
        return [self.prefix + "ota." + t for t in TOPICS]

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


async def create_and_release(
    api: httpx.AsyncClient, package_id: str, n: int
) -> tuple[float, float, str]:
    run = uuid.uuid4().hex[:6]
    ids = "\n".join(f"bench-{run}-{i:07d}" for i in range(n)).encode()
    t0 = time.perf_counter()
    listed = await api.post("/v1/target-lists", content=ids)
    listed.raise_for_status()
    created = await api.post(
        "/v1/tasks",
        json={
            "type": "firmware",
            "package_id": package_id,
            "targets": {"list_id": listed.json()["list_id"]},
        },
    )
    if created.status_code != 201:
        raise RuntimeError(created.text)
    accepted = time.perf_counter() - t0
    tid = created.json()["id"]
    t1 = time.perf_counter()
    while True:
        answer = await api.get(f"/v1/tasks/{tid}")
        if answer.status_code != 200:  # a busy shared Redis answers 503 now and then
            print(f"  status read: {answer.status_code} {answer.text[:120]}", flush=True)
        elif answer.json()["runtime"]["released"] >= n:
            break
        await asyncio.sleep(0.05)
    released = time.perf_counter() - t1
    # The task stays Processing with nothing left to release: pacing it is one cheap
    # check per pass, so the next measurement runs on a quiet scheduler.
    return accepted, released, tid


async def reads(url: str, path: str, seconds: float, clients: int) -> float:
    count = 0
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal count
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as c:
            while time.perf_counter() < stop_at:
                r = await c.get(path)
                count += r.status_code == 200

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return count / (time.perf_counter() - started)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rollout_records(device: str, tid: str, at_ms: int) -> list[tuple[str, bytes]]:
    """(topic suffix, record) of one device's successful job, as the gateway, edge and
    workers would produce them."""
    states = (
        "QUEUED",
        "QUERYING_VERSION",
        "COMMAND_SENT",
        "DOWNLOADING",
        "DOWNLOADED",
        "UPDATING",
        "SUCCEEDED",
    )
    events = [
        ("job-events", JobEventRecord(device, tid, 1, v, states[v - 1], states[v], at_ms=at_ms))
        for v in range(1, len(states))
    ]

    def report(event_type: str, **paras: object) -> DeviceEventRecord:
        return DeviceEventRecord(device, event_type, paras, at_ms=at_ms)

    inbox: list[PresenceRecord | DeviceEventRecord | DownloadRecord] = [
        PresenceRecord(device, online=True, at_ms=at_ms),
        report("version_report", fw_version="1.0", sw_version="1.0"),
        DownloadRecord(device, "0" * 64, DownloadPhase.STARTED, at_ms=at_ms),
        DownloadRecord(device, "0" * 64, DownloadPhase.FINISHED, at_ms=at_ms),
        *(report("upgrade_progress_report", progress=p, version="2.0") for p in (0, 50, 100)),
        report("version_report", fw_version="2.0", sw_version="1.0"),
    ]
    return [(t, encode(r)) for t, r in events] + [("inbox", encode(r)) for r in inbox]


async def ingest(
    api: httpx.AsyncClient, sched: Scheduler, package_id: str, n: int, rate: float
) -> float:
    """Scheduler CPU ms per device for taking in n devices' rollout records at `rate`/s."""
    assert sched.proc is not None
    _, _, tid = await create_and_release(api, package_id, n)
    ids = [
        d.decode()
        for d in redis.Redis.from_url(sched.redis_url).lrange(f"ota:sched:task:{tid}:list", 0, -1)
    ]
    producer = KafkaProducer(bootstrap_servers=sched.bootstrap, linger_ms=5, acks="all")
    slice_n = max(1, int(rate / 20))  # one slice every 50 ms
    cpu0 = cpu_s(sched.proc.pid)
    started = time.perf_counter()
    for k in range(0, n, slice_n):
        at_ms = int(time.time() * 1000)
        for device in ids[k : k + slice_n]:
            for topic, value in rollout_records(device, tid, at_ms):
                producer.send(sched.prefix + "ota." + topic, key=device.encode(), value=value)
        producer.flush()
        await asyncio.sleep(max(0.0, started + (k + slice_n) / rate - time.perf_counter()))
    producer.close()
    while True:  # polled like an operator would
        if (await api.get(f"/v1/tasks/{tid}")).json()["progress"]["succeeded"] >= n:
            break
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - started
    used = cpu_s(sched.proc.pid) - cpu0
    print(f"ingest: {n} devices in {elapsed:.1f}s, scheduler CPU {used:.2f}s", flush=True)
    return used * 1000 / n


async def bench(args: argparse.Namespace, sched: Scheduler) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {
        "accept": [],
        "release": [],
        "reads": [],
        "health": [],
        "ingest": [],
    }
    async with httpx.AsyncClient(
        base_url=sched.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=600
    ) as api:
        uploaded = await api.post(
            "/v1/packages",
            params={"type": "firmware", "version": "2.0", "file_name": "bench.bin"},
            content=os.urandom(64 * 1024),
        )
        uploaded.raise_for_status()
        package_id = uploaded.json()["id"]
        for i in range(args.runs + 1):
            accepted, released, tid = await create_and_release(api, package_id, args.devices)
            status = await reads(sched.url, f"/v1/tasks/{tid}", args.read_seconds, args.clients)
            # The peer: the cheapest route through the same server, client and Redis.
            health = await reads(sched.url, "/healthz", args.read_seconds, args.clients)
            label = "warm-up" if i == 0 else f"run {i}"
            print(
                f"{label}: accept {accepted:.2f}s release {released:.2f}s "
                f"status reads {status:.0f}/s healthz {health:.0f}/s",
                flush=True,
            )
            if i:
                results["accept"].append(accepted)
                results["release"].append(released)
                results["reads"].append(status)
                results["health"].append(health)
        for _ in range(args.runs if args.ingest_devices else 0):
            results["ingest"].append(
                await ingest(api, sched, package_id, args.ingest_devices, args.ingest_rate)
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--read-seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--ingest-devices", type=int, default=10_000, help="0: skip")
    parser.add_argument("--ingest-rate", type=float, default=1000.0, help="devices/s")
    args = parser.parse_args()
    bootstrap = os.environ.get("OTA_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    redis_base = os.environ.get("OTA_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
    with LOCK.open("a") as lock, tempfile.TemporaryDirectory() as work:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = redis.Redis.from_url(f"{redis_base}/{REDIS_DB}")
        r.flushdb()
        sched = Scheduler(bootstrap, redis_base, Path(work))
        sched.start()
        try:
            load = os.getloadavg()
            results = asyncio.run(bench(args, sched))
        finally:
            sched.stop()
            r.flushdb()
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"runs: accept {[round(x, 2) for x in results['accept']]} release "
        f"{[round(x, 2) for x in results['release']]} reads {[round(x) for x in results['reads']]}"
    )
    print(f"scheduler.task_100k_accept_s = {statistics.median(results['accept']):.2f} s")
    print(f"scheduler.task_100k_release_s = {statistics.median(results['release']):.2f} s")
    print(f"scheduler.status_reads_per_s = {statistics.median(results['reads']):.0f} requests/s")
    if results["ingest"]:
        print(f"ingest runs: {[round(x, 3) for x in results['ingest']]} ms/device")
        print(f"scheduler.ingest_cpu_ms_per_device = {statistics.median(results['ingest']):.3f} ms")


if __name__ == "__main__":
    main()
