"""The stored form of a device's state: one compact, deterministic JSON array.

Positional arrays keep an in-flight job to a few hundred bytes (field names would double
it) and orjson writes the same bytes for the same value, so a rebuild from the log is
byte-for-byte comparable. Layout (append-only; never reorder or renumber):

  device = [online, fw_version, sw_version, job | null, [job...] (queue), [[task, attempt]...] (done)]
  job    = [spec, attempt, state code, version, deadline_ms | null, tries, cause | null,
            command_ms, command_id]
  spec   = [task_id, "f" | "s", sha256, version, file_name, file_size, custom_info,
            [allowed source...], windows (0 = defaults, else the 8 values in field order),
            retry_count, retry_interval_s, flags (1 require_online, 2 presigned_url, 4 wait)]

`unpack` raises `StateCorruptError` for bytes it cannot read; nothing else.
"""

from __future__ import annotations

from dataclasses import astuple
from typing import Any

import orjson

from ota.catalog import FailureCause
from ota.jobstates import JobState
from ota.records import ConflictPolicy, JobSpec, PackageRef, TaskType, Windows
from workers.model import Device, Job

# Persisted codes: append only.
STATE_CODES: dict[JobState, int] = {
    JobState.QUEUED: 0,
    JobState.WAITING_ONLINE: 1,
    JobState.QUERYING_VERSION: 2,
    JobState.COMMAND_SENT: 3,
    JobState.DOWNLOADING: 4,
    JobState.DOWNLOADED: 5,
    JobState.UPDATING: 6,
    JobState.VERIFYING: 7,
    JobState.WAITING_RETRY: 8,
    JobState.SUCCEEDED: 9,
    JobState.FAILED: 10,
    JobState.CANCELLED: 11,
}
_STATES = {code: state for state, code in STATE_CODES.items()}
_DEFAULT_WINDOWS = Windows()
_REQUIRE_ONLINE, _PRESIGNED, _WAIT = 1, 2, 4
_SPEC_CACHE_MAX = 4096


class StateCorruptError(ValueError):
    """Stored bytes that are not a device state this version can read."""


def pack(device: Device) -> bytes:
    return orjson.dumps(
        [
            device.online,
            device.fw_version,
            device.sw_version,
            None if device.job is None else _pack_job(device.job),
            [_pack_job(job) for job in device.queue],
            [list(entry) for entry in device.done],
        ]
    )


def _pack_job(job: Job) -> list[Any]:
    return [
        _pack_spec(job.spec),
        job.attempt,
        STATE_CODES[job.state],
        job.version,
        job.deadline_ms,
        job.tries,
        None if job.cause is None else job.cause.value,
        job.command_ms,
        job.command_id,
    ]


def _pack_spec(spec: JobSpec) -> list[Any]:
    package = spec.package
    flags = (
        (_REQUIRE_ONLINE if spec.require_online else 0)
        | (_PRESIGNED if spec.presigned_url else 0)
        | (_WAIT if spec.on_conflict is ConflictPolicy.WAIT else 0)
    )
    windows: Any = 0 if spec.windows == _DEFAULT_WINDOWS else list(astuple(spec.windows))
    return [
        spec.task_id,
        "f" if spec.task_type is TaskType.FIRMWARE else "s",
        package.sha256,
        package.version,
        package.file_name,
        package.file_size,
        package.custom_info,
        list(package.allowed_sources),
        windows,
        spec.retry_count,
        spec.retry_interval_s,
        flags,
    ]


# Jobs of one task share one spec: decoding it once per worker saves most of unpack's work.
_spec_cache: dict[str, JobSpec] = {}


def unpack(raw: bytes) -> Device:
    try:
        online, fw, sw, job, queue, done = orjson.loads(raw)
        return Device(
            online=online,
            fw_version=fw,
            sw_version=sw,
            job=None if job is None else _unpack_job(job),
            queue=tuple(_unpack_job(q) for q in queue),
            done=tuple((task, attempt) for task, attempt in done),
        )
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
        raise StateCorruptError(f"stored device state is unreadable: {exc}") from None


def _unpack_job(data: list[Any]) -> Job:
    spec, attempt, state, version, deadline, tries, cause, command_ms, command_id = data
    return Job(
        spec=_unpack_spec(spec),
        attempt=attempt,
        state=_STATES[state],
        version=version,
        deadline_ms=deadline,
        tries=tries,
        cause=None if cause is None else FailureCause(cause),
        command_ms=command_ms,
        command_id=command_id,
    )


def _unpack_spec(data: list[Any]) -> JobSpec:
    key = orjson.dumps(data).decode()
    cached = _spec_cache.get(key)
    if cached is not None:
        return cached
    task_id, kind, sha, version, name, size, info, sources, windows, retries, interval, flags = data
    spec = JobSpec(
        task_id=task_id,
        task_type=TaskType.FIRMWARE if kind == "f" else TaskType.SOFTWARE,
        package=PackageRef(sha, version, name, size, info, tuple(sources)),
        windows=_DEFAULT_WINDOWS if windows == 0 else Windows(*windows),
        retry_count=retries,
        retry_interval_s=interval,
        require_online=bool(flags & _REQUIRE_ONLINE),
        on_conflict=ConflictPolicy.WAIT if flags & _WAIT else ConflictPolicy.FAIL,
        presigned_url=bool(flags & _PRESIGNED),
    )
    if len(_spec_cache) >= _SPEC_CACHE_MAX:
        _spec_cache.clear()
    _spec_cache[key] = spec
    return spec
