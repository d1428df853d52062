"""Builders for the state-machine tests: specs, events and a step that threads refs."""

from __future__ import annotations

from typing import Any

from ota.jobstates import JobState
from ota.records import ConflictPolicy, JobSpec, PackageRef, SuccessMode, TaskType, Windows
from ota.reports import HealthCheck
from workers.effects import EmitJobEvent, SendUpgrade, SendVersionQuery
from workers.events import Event, Kind
from workers.machine import Outcome, step
from workers.model import Device, Job

SHA = "ab" * 32
TARGET = "2.0"
WINDOWS = Windows(
    online_s=100,
    version_s=10,
    download_start_s=20,
    download_finish_s=30,
    update_start_s=40,
    result_s=50,
    verify_s=10,
    upgrade_total_s=1000,
    confirm_s=60,
)


def spec(
    task_id: str = "t1",
    *,
    task_type: TaskType = TaskType.FIRMWARE,
    retry_count: int = 0,
    retry_interval_s: int = 5,
    allowed: tuple[str, ...] = (),
    on_conflict: ConflictPolicy = ConflictPolicy.FAIL,
    require_online: bool = False,
    windows: Windows = WINDOWS,
    success: SuccessMode = SuccessMode.REPORTED,
) -> JobSpec:
    return JobSpec(
        task_id=task_id,
        task_type=task_type,
        package=PackageRef(SHA, TARGET, "fw.bin", 1234, "", allowed),
        windows=windows,
        retry_count=retry_count,
        retry_interval_s=retry_interval_s,
        require_online=require_online,
        on_conflict=on_conflict,
        success=success,
    )


def start(s: JobSpec | None = None, attempt: int = 1) -> Event:
    return Event(Kind.START, spec=s or spec(), attempt=attempt)


def version(
    fw: str | None = None, sw: str | None = None, health: HealthCheck | None = None
) -> Event:
    return Event(Kind.VERSION, fw_version=fw, sw_version=sw, health_check=health)


def progress(
    code: int = 0,
    pct: int | None = None,
    ver: str = "1.0",
    echo: str | None = None,
    desc: str | None = None,
) -> Event:
    return Event(
        Kind.PROGRESS,
        result_code=code,
        progress=pct,
        version=ver,
        device_event_id=echo,
        description=desc,
    )


def timeout_of(device: Device, task_id: str | None = None) -> Event:
    job = device.job
    assert job is not None
    return Event(Kind.TIMEOUT, task_id=task_id or job.task_id, job_version=job.version)


ONLINE = Event(Kind.ONLINE)
OFFLINE = Event(Kind.OFFLINE)
DL_STARTED = Event(Kind.DOWNLOAD_STARTED, package_sha256=SHA)
DL_FINISHED = Event(Kind.DOWNLOAD_FINISHED, package_sha256=SHA)
SDK_INFO = Event(Kind.SDK_INFO, fw_version="1.0")


def cancel(task_id: str = "t1") -> Event:
    return Event(Kind.CANCEL, task_id=task_id)


class Runner:
    """Feeds events with increasing offsets; keeps every outcome for assertions."""

    def __init__(self, device: Device | None = None, now_ms: int = 1_000_000) -> None:
        self.device = device or Device()
        self.now_ms = now_ms
        self.offset = 0
        self.last: Outcome | None = None

    def __call__(self, event: Event, at_ms: int | None = None) -> Outcome:
        if at_ms is not None:
            self.now_ms = at_ms
        self.offset += 1
        self.last = step(self.device, event, self.now_ms, f"w0-{self.offset}")
        self.device = self.last.device
        return self.last

    def timeout(self) -> Outcome:
        job = self.job
        assert job.deadline_ms is not None
        return self(timeout_of(self.device), max(self.now_ms, job.deadline_ms))

    @property
    def job(self) -> Job:
        assert self.device.job is not None
        return self.device.job

    @property
    def state(self) -> JobState:
        return self.job.state


def events(outcome: Outcome) -> list[EmitJobEvent]:
    return [e for e in outcome.effects if isinstance(e, EmitJobEvent)]


def transitions(outcome: Outcome) -> list[tuple[str, str]]:
    return [(e.from_state, e.to_state) for e in events(outcome) if e.from_state != e.to_state]


def notes(outcome: Outcome) -> list[str]:
    return [str(e.detail.get("note")) for e in events(outcome) if e.from_state == e.to_state]


def commands(outcome: Outcome) -> list[Any]:
    return [e for e in outcome.effects if isinstance(e, SendVersionQuery | SendUpgrade)]


def with_online(device: Device, online: bool | None) -> Device:
    return device._replace(online=online)
