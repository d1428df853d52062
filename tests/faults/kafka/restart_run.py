"""One rollout across a Kafka restart: the fault test's and the fault benchmark's driver.

A fleet of simulated devices is registered and connected, one task is created (released
at a fixed rate, so devices are at every stage when Kafka dies), and once a share of the
fleet has finished Kafka is killed with SIGKILL, left dead for `outage_s`, and started
again on its data. The task's progress is sampled every `sample_s` throughout. Afterwards
the job events are read back from Kafka: a device whose job saw a failure cause, a retry
or a second attempt was held up by the outage (the fleet is well-behaved).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from kafka import KafkaConsumer, TopicPartition

from ops.demo_env import StackPlan
from ops.fleet_group import FleetGroup, register_fleet
from ops.rollout_api import create_task, upload_package, upload_targets
from ota.records import JobEventRecord, decode
from tests.kafka_kit import PrivateKafka

FINISHED = ("Success", "Fail", "PartialSuccess", "Stopped")
# Windows far longer than a device's work on a quiet machine, shorter than the test's
# patience: a report or command the outage lost shows up as a timeout within the run.
POLICY_TIMEOUTS = {
    "online_s": 120,
    "version_s": 45,
    "download_start_s": 45,
    "download_finish_s": 60,
    "update_start_s": 45,
    "result_s": 45,
    "verify_s": 45,
    "upgrade_total_s": 90,
}


@dataclass
class RestartRun:
    """What one run saw: progress samples (monotonic s, finished count), the kill and
    the moment Kafka answered again, the final task, and the devices held up."""

    samples: list[tuple[float, int]] = field(default_factory=list)
    killed_at: float = 0.0
    answered_at: float = 0.0
    task: dict[str, Any] = field(default_factory=dict)
    held_up: dict[str, list[str]] = field(default_factory=dict)  # device -> what happened
    transitions: int = 0

    @property
    def succeeded(self) -> int:
        return int(self.task.get("progress", {}).get("succeeded") or 0)

    def rate_before_kill(self) -> float:
        """Devices finished per second from the first finish up to the kill."""
        before = [(t, n) for t, n in self.samples if t <= self.killed_at and n > 0]
        if len(before) < 2:
            return 0.0
        (t0, n0), (t1, n1) = before[0], before[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def resume_s(self, window_s: float = 2.0, share: float = 0.5) -> float | None:
        """From Kafka answering again to the first moment by which progress, over the
        `window_s` before it, ran at `share` of its rate before the kill (or the task
        had finished)."""
        rate = self.rate_before_kill()
        total = int(self.task.get("progress", {}).get("total") or 0)
        for t, n in self.samples:
            if t < self.answered_at:
                continue
            if total and n >= total:
                return t - self.answered_at
            earlier = [(t0, n0) for t0, n0 in self.samples if t0 <= t - window_s]
            if earlier and rate > 0:
                t0, n0 = earlier[-1]
                if (n - n0) / (t - t0) >= share * rate:
                    return t - self.answered_at
        return None


async def rollout_across_restart(
    node: PrivateKafka,
    plan: StackPlan,
    env: Mapping[str, str],
    *,
    size: int,
    rate_per_min: int | None,
    kill_after_share: float,
    outage_s: float,
    timeout_s: float,
    package_kib: int = 64,
    fleet_processes: int = 1,
    sample_s: float = 0.25,
) -> RestartRun:
    run = RestartRun()
    prefix = f"kr{os.urandom(3).hex()}"
    ids = [f"{prefix}-{n:07d}" for n in range(size)]
    headers = {"Authorization": f"Bearer {plan.write_key}"}
    fleet = FleetGroup(
        dict(env),
        size=size,
        processes=fleet_processes,
        prefix=prefix,
        mode="connections",
        mix="none",
    )
    async with httpx.AsyncClient(base_url=plan.api_url, headers=headers, timeout=120) as api:
        await register_fleet(api, ids)
        await fleet.start(timeout_s=max(120.0, size / 50))
        try:
            package = os.urandom(package_kib * 1024)
            package_id = await upload_package(api, package, "fault.bin")
            list_id = await upload_targets(api, ids)
            policy: dict[str, Any] = {
                "retry_count": 2,
                "retry_interval_min": 0,
                "timeouts": POLICY_TIMEOUTS,
            }
            if rate_per_min is not None:
                policy["rate_per_min"] = rate_per_min
            task_id = await create_task(api, package_id, list_id, policy, "kafka restart")
            await _follow(
                api, node, task_id, run, size, kill_after_share, outage_s, timeout_s, sample_s
            )
        finally:
            await fleet.stop()
    run.held_up, run.transitions = held_up(node.bootstrap, plan.topic_prefix + "ota.job-events")
    return run


async def _follow(
    api: httpx.AsyncClient,
    node: PrivateKafka,
    task_id: str,
    run: RestartRun,
    size: int,
    kill_after_share: float,
    outage_s: float,
    timeout_s: float,
    sample_s: float,
) -> None:
    start = time.monotonic()
    restart: asyncio.Task[float] | None = None
    while time.monotonic() - start < timeout_s:
        answer = await api.get(f"/v1/tasks/{task_id}")
        if answer.status_code == 200:  # while Kafka is dead the API may still answer
            run.task = answer.json()
            finished = int(run.task["progress"]["finished"])
            run.samples.append((time.monotonic(), finished))
            if not run.killed_at and finished >= size * kill_after_share:
                node.kill()
                run.killed_at = time.monotonic()
                restart = asyncio.ensure_future(_restart_later(node, outage_s))
            if run.task["status"] in FINISHED and (restart is None or restart.done()):
                break
        if restart is not None and restart.done() and not run.answered_at:
            run.answered_at = restart.result()
        await asyncio.sleep(sample_s)
    if restart is not None:
        run.answered_at = await restart


async def _restart_later(node: PrivateKafka, outage_s: float) -> float:
    await asyncio.sleep(outage_s)  # the outage itself: Kafka stays dead this long
    return await asyncio.to_thread(node.start)


def held_up(bootstrap: str, topic: str) -> tuple[dict[str, list[str]], int]:
    """Devices whose job saw a failure cause, a retry or a second attempt, with what it
    saw; and the number of transitions read."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    seen: dict[str, list[str]] = {}
    transitions = 0
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for batch in consumer.poll(timeout_ms=1000).values():
                for message in batch:
                    record = decode(message.value)
                    if not isinstance(record, JobEventRecord):
                        continue
                    transitions += record.from_state != record.to_state
                    if (
                        record.cause is not None
                        or record.attempt > 1
                        or record.to_state in ("WAITING_RETRY", "FAILED")
                    ):
                        seen.setdefault(record.device_id, []).append(
                            f"{record.from_state}->{record.to_state} cause={record.cause} "
                            f"attempt={record.attempt}"
                        )
    finally:
        consumer.close()
    return seen, transitions
