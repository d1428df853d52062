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
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis
from kafka import KafkaProducer
from scheduler_process import KEY, Scheduler, cpu_s, machine_line, running_scheduler

from ops.rollout_api import create_task, upload_package, upload_targets
from ota.records import (
    DeviceEventRecord,
    DownloadPhase,
    DownloadRecord,
    JobEventRecord,
    PresenceRecord,
    encode,
)
from scheduler import keys

REDIS_DB = 11
LOCK = Path(tempfile.gettempdir()) / f"ota-scheduler-tests-db{REDIS_DB}.lock"


async def create_and_release(
    api: httpx.AsyncClient, package_id: str, n: int
) -> tuple[float, float, str]:
    run = uuid.uuid4().hex[:6]
    ids = [f"bench-{run}-{i:07d}" for i in range(n)]
    t0 = time.perf_counter()
    tid = await create_task(api, package_id, await upload_targets(api, ids))
    accepted = time.perf_counter() - t0
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
        d.decode() for d in redis.Redis.from_url(sched.redis_url).lrange(keys.task_list(tid), 0, -1)
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
        package_id = await upload_package(api, os.urandom(64 * 1024), "bench.bin")
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
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with running_scheduler(REDIS_DB, "bench-") as sched:
            load = os.getloadavg()
            results = asyncio.run(bench(args, sched))
    print(f"\n{machine_line(load)}")
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
