"""One rollout across a restart of a part of the infrastructure (Kafka, Redis, the device
broker): the fault tests' and the fault benchmarks' driver.

A fleet of simulated devices is registered and connected, one task is created (released
at a fixed rate, so devices are at every stage when the part dies), and once a share of
the fleet has finished the part is killed with SIGKILL, left dead for `outage_s`, and
started again on its data. The task's progress is sampled every `sample_s` throughout.
Afterwards the job events and commands are read back from Kafka: a device whose job saw a
failure cause, a retry or a second attempt was held up by the outage (the fleet is
well-behaved); a transition or a command that appears twice was done twice.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx
from kafka.structs import TopicPartition

from ops.demo_env import StackPlan
from ops.fleet_group import FleetGroup, forget_fleet, register_fleet
from ops.rollout_api import create_task, upload_package, upload_targets
from ota.kafka_clients import make_consumer
from ota.kafka_consumer import read_to_end
from ota.records import (
    CommandRecord,
    DeviceEventRecord,
    DownloadRecord,
    JobEventRecord,
    JobStartRecord,
    PresenceRecord,
    TimeoutRecord,
    decode,
)
from ota.settings import CommonSettings
from tests.faults.webhook_inbox import SECRET, WebhookInbox, WebhookRepeats

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


class Restartable(Protocol):
    """A part of the infrastructure the run kills and starts again (tests.kafka_kit,
    tests.redis_kit, tests.integration.broker.broker_support.RestartableBroker)."""

    def kill(self) -> None: ...

    def start(self) -> float:
        """Start it and wait until it answers; the monotonic time it did."""
        ...


@dataclass
class Repeats:
    """What was done twice: transitions (same device, task, attempt, job version, state),
    commands sent again with the same id (devices ignore a repeated event id), and commands
    of one kind sent to a device under a new id (a device would act on it again)."""

    transitions: int = 0
    commands_same_id: int = 0
    commands_new_id: int = 0


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
    repeats: Repeats = field(default_factory=Repeats)
    webhooks: WebhookRepeats = field(default_factory=lambda: WebhookRepeats(0, 0))
    webhook_missing: int = 0  # devices no device-result notification reached
    # For the first few devices held up: what each topic holds about them, topic by topic
    # (in each topic's own order: a device's records share a partition).
    timelines: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def held_up_states(self) -> dict[str, int]:
        """How many devices were held up in each state (their first failure's from-state)."""
        states = Counter(seen[0].split("->", 1)[0] for seen in self.held_up.values())
        return dict(states.most_common())

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


def assert_paused_not_lost(run: RestartRun, size: int, part: str) -> None:
    """What every restart run must show: the part died mid-rollout, every device succeeded
    at its first try, nothing a device or an application acts on went out twice, and every
    device result reached the webhook."""
    assert run.killed_at, f"the rollout finished before {part} could be killed"
    assert run.answered_at > run.killed_at
    finished_at_kill = max(n for t, n in run.samples if t <= run.killed_at)
    assert finished_at_kill < size, f"{part} was killed after the rollout"
    assert run.task["status"] == "Success", run.task
    assert run.succeeded == size
    assert run.held_up == {}, held_up_report(run)
    assert run.repeats.commands_new_id == 0, run.repeats
    assert run.webhook_missing == 0, f"{run.webhook_missing} device results never told"
    assert run.webhooks.new_id == 0, run.webhooks


def held_up_report(run: RestartRun) -> str:
    """Why a run failed: how long the part was away (kill to answering again: its own start
    time counts, and grows with the machine's load), then the devices held up and what the
    topics hold about the first few (`timelines_of`)."""
    outage_s = run.answered_at - run.killed_at
    lines = [
        f"{len(run.held_up)} devices held up, {run.held_up_states()}, "
        f"after {outage_s:.1f}s from the kill to the part answering: {run.held_up}"
    ]
    for device, topics in run.timelines.items():
        lines.append(f"{device}:")
        lines += [f"  {topic}: {'; '.join(seen)}" for topic, seen in topics.items()]
    return "\n".join(lines)


# What `kill_after_share` counts: finished devices, or released ones (see _follow).
KillOn = Literal["finished", "released"]


async def rollout_across_restart(
    part: Restartable,
    plan: StackPlan,
    env: Mapping[str, str],
    *,
    kafka_bootstrap: str,
    size: int,
    rate_per_min: int | None,
    kill_after_share: float,
    outage_s: float,
    timeout_s: float,
    kill_on: KillOn = "finished",
    package_kib: int = 64,
    fleet_processes: int = 1,
    fleet_mode: Literal["connections", "multiplexed"] = "connections",
    mux_connections: int = 4,
    sample_s: float = 0.25,
    timelines_of: int = 0,
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
        mode=fleet_mode,
        mux_connections=mux_connections,
        mix="none",
    )
    inbox = WebhookInbox()
    inbox.start()
    async with httpx.AsyncClient(base_url=plan.api_url, headers=headers, timeout=120) as api:
        await register_fleet(plan, ids)
        await fleet.start(timeout_s=max(120.0, size / 50))
        try:
            await _registry_sees_online(api, set(ids), timeout_s=max(60.0, size / 100))
            hook = await api.post(
                "/v1/webhooks",
                json={"url": inbox.url, "secret": SECRET, "events": ["device_result"]},
            )
            assert hook.status_code == 201, hook.text
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
            task_id = await create_task(api, package_id, list_id, policy, "restart")
            await _follow(
                api,
                part,
                task_id,
                run,
                size,
                (kill_on, kill_after_share),
                outage_s,
                timeout_s,
                sample_s,
            )
            await asyncio.to_thread(inbox.wait_for, set(ids), 60)  # missing ones are counted
        finally:
            await fleet.stop()
            inbox.stop()
            forget_fleet(env, ids)
    run.webhooks = inbox.repeats()
    run.webhook_missing = len(set(ids) - inbox.device_results())
    job_events, commands = (plan.topic_prefix + t for t in ("ota.job-events", "ota.commands"))
    run.held_up, run.transitions, run.repeats.transitions = held_up(kafka_bootstrap, job_events)
    run.repeats.commands_same_id, run.repeats.commands_new_id = command_repeats(
        kafka_bootstrap, commands
    )
    inbox_topic = plan.topic_prefix + "ota.inbox"
    explained = list(run.held_up)[:timelines_of]
    run.timelines = timelines(kafka_bootstrap, [inbox_topic, job_events, commands], explained)
    return run


async def _registry_sees_online(api: httpx.AsyncClient, ids: set[str], timeout_s: float) -> None:
    """Wait until the scheduler's registry has every device online: their online notices
    are then in the inbox, ahead of the jobs the task starts, so no job takes a notice
    that follows its start for a reconnect (which sends its command again: by design, and
    not what a restart run measures)."""
    deadline = time.monotonic() + timeout_s
    while True:
        online: set[str] = set()
        cursor = ""
        while True:
            answer = await api.get(
                "/v1/devices", params={"online": "true", "limit": 1000, "cursor": cursor}
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            online.update(item["device_id"] for item in body["items"])
            cursor = body.get("next_cursor") or ""
            if not cursor:
                break
        if ids <= online:
            return
        assert time.monotonic() < deadline, f"{len(ids - online)} devices never seen online"
        await asyncio.sleep(0.2)


async def _follow(
    api: httpx.AsyncClient,
    part: Restartable,
    task_id: str,
    run: RestartRun,
    size: int,
    kill_at: tuple[KillOn, float],
    outage_s: float,
    timeout_s: float,
    sample_s: float,
) -> None:
    """Samples the task until it finished; kills the part once `kill_at` = (count, share)
    of the fleet is reached: "finished" devices, or "released" ones (the scheduler's
    cursor, which a rate limit paces: finishes can come in bursts on a loaded machine,
    all of them between two samples)."""
    kill_on, kill_share = kill_at
    start = time.monotonic()
    restart: asyncio.Task[float] | None = None
    while time.monotonic() - start < timeout_s:
        try:  # while the part is dead the API may not answer
            answer = await api.get(f"/v1/tasks/{task_id}", timeout=5)
        except httpx.HTTPError:
            answer = None
        if answer is not None and answer.status_code == 200:
            run.task = answer.json()
            finished = int(run.task["progress"]["finished"])
            run.samples.append((time.monotonic(), finished))
            reached = finished if kill_on == "finished" else int(run.task["runtime"]["released"])
            if not run.killed_at and reached >= size * kill_share:
                part.kill()
                run.killed_at = time.monotonic()
                restart = asyncio.ensure_future(_restart_later(part, outage_s))
            if run.task["status"] in FINISHED and (restart is None or restart.done()):
                break
        if restart is not None and restart.done() and not run.answered_at:
            run.answered_at = restart.result()
        await asyncio.sleep(sample_s)
    if restart is not None:
        run.answered_at = await restart


async def _restart_later(part: Restartable, outage_s: float) -> float:
    await asyncio.sleep(outage_s)  # the outage itself: the part stays dead this long
    return await asyncio.to_thread(part.start)


def _read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic`, decoded, partition by partition (on the services' client)."""
    settings = CommonSettings.from_env({**os.environ, "OTA_KAFKA_BOOTSTRAP": bootstrap})
    consumer = make_consumer(settings, group_id=None, client_id="ota-restart-run")
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        batches = read_to_end(consumer, parts)
        return [decode(r.value) for _, batch in batches for r in batch if r.value is not None]
    finally:
        consumer.close()


def held_up(bootstrap: str, topic: str) -> tuple[dict[str, list[str]], int, int]:
    """Devices whose job saw a failure cause, a retry or a second attempt, with what it
    saw; the number of transitions read; and how many of them were repeats."""
    seen: dict[str, list[str]] = {}
    transitions = 0
    once: Counter[tuple[str, str, int, int, str]] = Counter()
    for record in _read_all(bootstrap, topic):
        if not isinstance(record, JobEventRecord):
            continue
        if record.from_state != record.to_state:
            transitions += 1
            once[
                record.device_id,
                record.task_id,
                record.attempt,
                record.job_version,
                record.to_state,
            ] += 1
        if (
            record.cause is not None
            or record.attempt > 1
            or record.to_state in ("WAITING_RETRY", "FAILED")
        ):
            seen.setdefault(record.device_id, []).append(
                f"{record.from_state}->{record.to_state} cause={record.cause} "
                f"attempt={record.attempt}"
            )
    return seen, transitions, sum(n - 1 for n in once.values())


def command_repeats(bootstrap: str, topic: str) -> tuple[int, int]:
    """(commands sent again with the same id, commands of one kind sent to one device again
    under another id)."""
    ids: Counter[str] = Counter()
    kinds: dict[tuple[str, str], set[str]] = {}
    for record in _read_all(bootstrap, topic):
        if isinstance(record, CommandRecord):
            ids[record.id] += 1
            kinds.setdefault((record.device_id, record.event_type), set()).add(record.id)
    return sum(n - 1 for n in ids.values()), sum(len(v) - 1 for v in kinds.values())


def start_ids(bootstrap: str, topic: str) -> dict[str, set[str]]:
    """Each device's job start record ids in the inbox `topic`: one per device when none
    was released twice."""
    ids: dict[str, set[str]] = {}
    for record in _read_all(bootstrap, topic):
        if isinstance(record, JobStartRecord):
            ids.setdefault(record.device_id, set()).add(record.id)
    return ids


def timelines(
    bootstrap: str, topics: list[str], devices: list[str]
) -> dict[str, dict[str, list[str]]]:
    """device -> topic -> what that topic holds about the device, in order: presence notices
    (with their connection), reports, downloads and timeouts in the inbox; transitions and
    notes in the job events; commands by kind and id."""
    wanted = set(devices)
    out: dict[str, dict[str, list[str]]] = {d: {} for d in devices}
    for topic in topics if wanted else ():
        for record in _read_all(bootstrap, topic):
            device = getattr(record, "device_id", None)
            if device in wanted:
                out[device].setdefault(topic, []).append(_describe(record))
    return out


def _describe(record: Any) -> str:
    if isinstance(record, PresenceRecord):
        on = "online" if record.online else "offline"
        return f"{on} {record.source} connection={record.connection}"
    if isinstance(record, DeviceEventRecord):
        code = record.paras.get("result_code")
        return f"{record.event_type} result_code={code} progress={record.paras.get('progress')}"
    if isinstance(record, DownloadRecord):
        return f"download {record.phase}"
    if isinstance(record, TimeoutRecord):
        return f"timeout job_version={record.job_version}"
    if isinstance(record, JobEventRecord):
        if record.from_state == record.to_state:
            return f"{record.to_state} note={record.detail.get('note')}"
        return f"{record.from_state}->{record.to_state} cause={record.cause}"
    if isinstance(record, CommandRecord):
        return f"command {record.event_type} id={record.id}"
    return type(record).__name__
