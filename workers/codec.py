"""The stored form of a device's state: one compact, deterministic JSON array, with the
task's job spec stored once per partition and referenced by its digest.

Positional arrays keep an in-flight job to well under a hundred bytes (field names would
double it), trailing default values are left out, and orjson writes the same bytes for
the same value, so a rebuild from the log is byte-for-byte comparable. A spec is shared
by every device of a task, so a device keeps only the spec's digest (16 hex digits of
BLAKE2b over the packed spec: content-addressed, so two attempts or devices with
different specs never share one entry). Layout (append-only; never reorder or renumber):

  device = [online, fw_version, sw_version, job | null, [job...] (queue),
            [[task, attempt]...] (done), connection | null, connected_ms]
  job    = [spec digest, attempt, state code, version, deadline_ms | null, tries,
            cause | null, command_ms, command_id, stage code | null, download_pct | null,
            token_expires_s]
  spec   = [task_id, "f" | "s", sha256, version, file_name, file_size, custom_info,
            [allowed source...], windows (0 = defaults, else the values in field order,
            confirm_s left off at its default), retry_count, retry_interval_s,
            flags (1 require_online, 2 presigned_url, 4 wait, 8 success "confirmed"),
            signature, key_id (absent when unsigned and no retry rules),
            [[on, count, interval_s, factor, max_interval_s]...] (retry rules; absent: none)]

`unpack` and `unpack_spec` raise `StateCorruptError` for bytes they cannot read (a device
whose spec is not given counts as unreadable); nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple, dataclass
from hashlib import blake2b
from typing import Any

import orjson

from ota.catalog import FailureCause
from ota.jobstates import STATE_CODES
from ota.records import (
    ConflictPolicy,
    JobSpec,
    PackageRef,
    RetryRule,
    SuccessMode,
    TaskType,
    Windows,
)
from workers.model import Device, Job

_STATES = {code: state for state, code in STATE_CODES.items()}
_DEFAULT_WINDOWS = Windows()
_REQUIRE_ONLINE, _PRESIGNED, _WAIT, _CONFIRMED = 1, 2, 4, 8
_CACHE_MAX = 4096
# Values a job or device array may leave off at its end (in field order).
# tries, cause, command_ms, command_id, stage, download_pct, token_expires_s
_JOB_DEFAULTS: tuple[Any, ...] = (0, None, 0, "", None, None, 0)
_DEVICE_DEFAULTS: tuple[Any, ...] = ([], [], None, 0)  # queue, done, connection, connected_ms


class StateCorruptError(ValueError):
    """Stored bytes that are not a device state this version can read."""


@dataclass(frozen=True, slots=True)
class SpecRef:
    """A spec as stored: its digest (the device's reference) and its packed bytes."""

    digest: str
    packed: bytes


# Jobs of one task share one spec object (decoded once per worker): both directions are
# cached. Keyed by identity, holding the spec so its id cannot be reused while cached.
_refs_by_id: dict[int, tuple[JobSpec, SpecRef]] = {}
_specs_by_digest: dict[str, JobSpec] = {}


def spec_ref(spec: JobSpec) -> SpecRef:
    cached = _refs_by_id.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    packed = orjson.dumps(_pack_spec(spec))
    ref = SpecRef(blake2b(packed, digest_size=8).hexdigest(), packed)
    if len(_refs_by_id) >= _CACHE_MAX:
        _refs_by_id.clear()
    _refs_by_id[id(spec)] = (spec, ref)
    _remember_spec(ref.digest, spec)
    return ref


def cached_spec(digest: str) -> JobSpec | None:
    return _specs_by_digest.get(digest)


def unpack_spec(digest: str, packed: bytes) -> JobSpec:
    """The spec stored under `digest`; the bytes must hash to it."""
    if blake2b(packed, digest_size=8).hexdigest() != digest:
        raise StateCorruptError(f"stored spec {digest} does not match its digest")
    try:
        spec = _unpack_spec(orjson.loads(packed))
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
        raise StateCorruptError(f"stored spec {digest} is unreadable: {exc}") from None
    _remember_spec(digest, spec)
    return spec


def _remember_spec(digest: str, spec: JobSpec) -> None:
    if len(_specs_by_digest) >= _CACHE_MAX:
        _specs_by_digest.clear()
    _specs_by_digest.setdefault(digest, spec)


def jobs_of(device: Device) -> tuple[Job, ...]:
    return device.queue if device.job is None else (device.job, *device.queue)


def spec_refs(device: Device) -> dict[str, SpecRef]:
    """The specs a device's stored form refers to, by digest."""
    job = device.job
    if not device.queue:  # nearly every device: no tuple of jobs to build and walk
        if job is None:
            return {}
        ref = spec_ref(job.spec)
        return {ref.digest: ref}
    refs: dict[str, SpecRef] = {}
    for job in jobs_of(device):
        ref = spec_ref(job.spec)
        refs[ref.digest] = ref
    return refs


def stored_digests(raw: bytes) -> list[str]:
    """The spec digests a stored device refers to ([] for bytes `unpack` would refuse)."""
    try:
        data = orjson.loads(raw)
        jobs = ([data[3]] if data[3] is not None else []) + list(data[4] if len(data) > 4 else [])
        return [str(job[0]) for job in jobs]
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, IndexError):
        return []


def pack(device: Device) -> bytes:
    data: list[Any] = [
        device.online,
        device.fw_version,
        device.sw_version,
        None if device.job is None else _pack_job(device.job),
        # Most devices queue nothing and have finished nothing yet: no comprehension (a
        # function call of its own before Python 3.12) for them.
        [_pack_job(job) for job in device.queue] if device.queue else [],
        [list(entry) for entry in device.done] if device.done else [],
        device.connection,
        device.connected_ms,
    ]
    return orjson.dumps(_trim(data, _DEVICE_DEFAULTS))


def _trim(data: list[Any], defaults: tuple[Any, ...]) -> list[Any]:
    """Leaves off the trailing values that equal their defaults."""
    end, first_optional = len(data), len(data) - len(defaults)
    while end > first_optional and data[end - 1] == defaults[end - 1 - first_optional]:
        end -= 1
    return data[:end]


def _pack_job(job: Job) -> list[Any]:
    data = [
        spec_ref(job.spec).digest,
        job.attempt,
        STATE_CODES[job.state],
        job.version,
        job.deadline_ms,
        job.tries,
        None if job.cause is None else job.cause.value,
        job.command_ms,
        job.command_id,
        None if job.stage is None else STATE_CODES[job.stage],
        job.download_pct,
        job.token_expires_s,
    ]
    return _trim(data, _JOB_DEFAULTS)


def _pack_spec(spec: JobSpec) -> list[Any]:
    package = spec.package
    flags = (
        (_REQUIRE_ONLINE if spec.require_online else 0)
        | (_PRESIGNED if spec.presigned_url else 0)
        | (_WAIT if spec.on_conflict is ConflictPolicy.WAIT else 0)
        | (_CONFIRMED if spec.success is SuccessMode.CONFIRMED else 0)
    )
    windows: Any = 0 if spec.windows == _DEFAULT_WINDOWS else _pack_windows(spec.windows)
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
        # Appended later: absent in specs stored before them, and when not used (so such a
        # spec packs, and is digested, as before).
        *((package.signature, package.key_id) if package.signature or spec.retry_rules else ()),
        *([[list(astuple(rule)) for rule in spec.retry_rules]] if spec.retry_rules else []),
    ]


def _pack_windows(windows: Windows) -> list[int]:
    # confirm_s came after the first eight: at its default it is left off, so a spec
    # stored before it packs (and is digested) as it was.
    values = list(astuple(windows))
    return values[:-1] if windows.confirm_s == _DEFAULT_WINDOWS.confirm_s else values


def unpack(raw: bytes, specs: Mapping[str, JobSpec]) -> Device:
    """The device stored as `raw`; `specs` holds (at least) the specs it refers to."""
    try:
        online, fw, sw, job, *rest = orjson.loads(raw)
        queue = rest[0] if rest else []
        done = rest[1] if len(rest) > 1 else []
        connection = rest[2] if len(rest) > 2 else None
        connected_ms = rest[3] if len(rest) > 3 else 0
        # Positional, in field order (online, fw_version, sw_version, job, queue, done,
        # connection, connected_ms): a named tuple built from keywords costs about twice
        # as much, and every record applied reads one device.
        return Device(
            online,
            fw,
            sw,
            None if job is None else _unpack_job(job, specs),
            # Most devices queue nothing and have finished nothing yet: skip building
            # generators for them (anything but [] still goes the strict way).
            () if queue == [] else tuple(_unpack_job(q, specs) for q in queue),
            () if done == [] else tuple((task, attempt) for task, attempt in done),
            connection,
            int(connected_ms),
        )
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
        raise StateCorruptError(f"stored device state is unreadable: {exc!r}") from None


def _unpack_job(data: list[Any], specs: Mapping[str, JobSpec]) -> Job:
    digest, attempt, state, version, deadline, *rest = data
    tries, cause, command_ms, command_id, stage, download_pct, token_expires_s = (
        *rest,
        *_JOB_DEFAULTS[len(rest) :],
    )
    # Positional, in field order, for the reason `unpack` gives; the arguments are read in
    # the same order as before, so corrupt data raises the same error.
    return Job(
        specs[digest],
        attempt,
        _STATES[state],
        version,
        deadline,
        tries,
        None if cause is None else FailureCause(cause),
        command_ms,
        command_id,
        None if stage is None else _STATES[stage],
        download_pct,
        token_expires_s,
    )


def _unpack_spec(data: list[Any]) -> JobSpec:
    task_id, kind, sha, version, name, size, info, sources, windows, retries, interval, flags = (
        data[:12]
    )
    signature, key_id = data[12:14] if len(data) > 12 else ("", "")
    rules = tuple(RetryRule(*rule) for rule in data[14]) if len(data) > 14 else ()
    return JobSpec(
        task_id=task_id,
        task_type=TaskType.FIRMWARE if kind == "f" else TaskType.SOFTWARE,
        package=PackageRef(sha, version, name, size, info, tuple(sources), signature, key_id),
        windows=_DEFAULT_WINDOWS if windows == 0 else Windows(*windows),
        retry_count=retries,
        retry_interval_s=interval,
        require_online=bool(flags & _REQUIRE_ONLINE),
        on_conflict=ConflictPolicy.WAIT if flags & _WAIT else ConflictPolicy.FAIL,
        presigned_url=bool(flags & _PRESIGNED),
        retry_rules=rules,
        success=SuccessMode.CONFIRMED if flags & _CONFIRMED else SuccessMode.REPORTED,
    )
