"""The scheduler's Redis cost per device of a rollout, by script: the inbox records a
device sends during one upgrade (presence, boot report, version answer, four progress
reports, the result) through `Registry.observe`, and the job events of its job through
`Registry.job_events` (device hash and timeline) and `TaskState.apply` (the task's
per-device state and counts); each in log order, batches of devices interleaved as the
consumers get them, on a private Redis server (no persistence, nothing else on it), so
that its own CPU counters (`INFO cpu`) are the scheduler's alone.

    set -a; . .state/env.sh; set +a
    .venv/bin/python bench/registry_bench.py --devices 20000 --runs 3

Prints the Redis CPU (user + system) per device of each part and the wall time per device
per run. The Kafka bootstrap of the stack is needed only to build the
registry's producer (nothing is produced).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import TypeVar

import redis
import redis.asyncio

from ops.demo_env import free_port
from ota.records import DeviceEventRecord, JobEventRecord, PresenceRecord
from ota.settings import CommonSettings, Topics
from scheduler import keys
from scheduler.bus import Producer
from scheduler.devices import CHUNK, Registry
from scheduler.taskstate import TaskState, Transition, pending_entry

T = TypeVar("T")
TASK = "0" * 32
STATES = ("QUEUED", "WAITING_ONLINE", "QUERYING_VERSION", "COMMAND_SENT", "DOWNLOADING",
          "DOWNLOADED", "UPDATING", "SUCCEEDED")  # fmt: skip
PARTS = ("observe", "job_events", "task_apply")

OLD, NEW = "1.0.0", "2.0.0"


def journey(device: str, at_ms: int) -> Iterator[DeviceEventRecord | PresenceRecord]:
    """What one device's upgrade puts in the inbox, oldest first."""
    yield PresenceRecord(device_id=device, online=True, at_ms=at_ms)
    for step in range(2):  # the boot report, then the answer to the version query
        yield DeviceEventRecord(device, "version_report", {"fw_version": OLD}, at_ms=at_ms + step)
    for n, progress in enumerate((25, 50, 75, 100)):
        paras = {"result_code": 0, "version": OLD, "progress": progress}
        yield DeviceEventRecord(device, "upgrade_progress_report", paras, at_ms=at_ms + 10 + n)
    result = {"result_code": 0, "version": NEW, "progress": 100}
    yield DeviceEventRecord(device, "upgrade_progress_report", result, at_ms=at_ms + 20)


def job(device: str, at_ms: int) -> Iterator[JobEventRecord]:
    """The job events of one device's successful upgrade."""
    for n, (old, new) in enumerate(zip(("PENDING", *STATES), STATES, strict=False)):
        yield JobEventRecord(device, TASK, 1, n + 1, old, new, at_ms=at_ms + n)


def interleaved(per_device: list[list[T]], per_batch: int) -> list[list[T]]:
    """Consumer batches: `per_batch` devices advance together, one step of each per batch,
    as the devices of one partition do during a rollout."""
    batches = []
    for first in range(0, len(per_device), per_batch):
        group = per_device[first : first + per_batch]
        for i in range(len(group[0])):
            batches.append([steps[i] for steps in group])
    return batches


async def one_run(url: str, settings: CommonSettings, devices: int) -> dict[str, float]:
    """Redis CPU and wall time (us per device) of each part."""
    r: redis.asyncio.Redis[bytes] = redis.asyncio.Redis.from_url(url)
    producer = Producer(settings)
    at = int(time.time() * 1000)
    ids = [f"reg-{n:08d}" for n in range(devices)]
    out: dict[str, float] = {}
    try:
        await r.flushdb()
        registry = Registry(r, producer, Topics(), 32, 7 * 86_400_000)
        state = TaskState(r)
        await r.hset(keys.task_devices(TASK), mapping=dict.fromkeys(ids, pending_entry()))
        inbox = interleaved([list(journey(d, at)) for d in ids], CHUNK)
        events = interleaved([list(job(d, at)) for d in ids], CHUNK)

        async def observe() -> None:
            for batch in inbox:
                await registry.observe(batch)

        async def job_events() -> None:
            for batch in events:
                await registry.job_events([(e, "firmware") for e in batch])

        async def task_apply() -> None:
            for batch in events:
                await state.apply(
                    TASK,
                    [Transition(e.device_id, 1, e.job_version, e.to_state, None) for e in batch],
                )

        for name, part in zip(PARTS, (observe, job_events, task_apply), strict=True):
            before = await r.info("cpu")
            started = time.perf_counter()
            await part()
            out[f"{name}_wall"] = 1e6 * (time.perf_counter() - started) / devices
            after = await r.info("cpu")
            cpu = sum(float(after[k]) - float(before[k]) for k in ("used_cpu_user", "used_cpu_sys"))
            out[name] = 1e6 * cpu / devices
    finally:
        await producer.close()
        await r.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (deploy/local/up installs it)")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            url = f"redis://127.0.0.1:{port}/0"
            client: redis.Redis[bytes] = redis.Redis.from_url(url)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            settings = CommonSettings.from_env()
            runs = []
            for n in range(args.runs):
                runs.append(asyncio.run(one_run(url, settings, args.devices)))
                shown = ", ".join(f"{k} {v:.1f}" for k, v in runs[-1].items())
                print(f"run {n + 1} (us per device): {shown}", flush=True)
        finally:
            server.terminate()
            server.wait(10)
    for name in PARTS:
        values = [run[name] for run in runs]
        print(
            f"registry.{name}_redis_us_per_device = {statistics.median(values):.1f} us "
            f"(median of {args.runs}: {', '.join(f'{v:.1f}' for v in values)}; "
            f"{args.devices} devices)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
