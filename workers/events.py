"""The state machine's inputs: inbox records, checked and reduced to what the machine uses.

`event_from_record` is pure. A device event's paras are read by `ota.reports`, the one
reading of them; one whose paras the machine cannot use raises `InvalidEventError` with a
stable `reason` (the dead-letter reason); nothing else is raised.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import NamedTuple

from ota.fields import MAX_VERSION_CHARS, ProtocolError, Reason
from ota.records import (
    DeviceEventRecord,
    DownloadPhase,
    DownloadRecord,
    InboxRecord,
    JobCancelRecord,
    JobSpec,
    JobStartRecord,
    PresenceRecord,
    TimeoutRecord,
)
from ota.reports import HealthCheck, ProgressReport, VersionReport, decode_report

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class InvalidEventError(ValueError):
    """An inbox record the machine cannot apply; `reason` is a stable dead-letter code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Kind(Enum):
    START = "start"
    CANCEL = "cancel"
    ONLINE = "online"
    OFFLINE = "offline"
    VERSION = "version"  # version_report: answers a version_query
    SDK_INFO = "sdk_info"  # sdk_info_report: updates versions, answers nothing
    PROGRESS = "progress"  # upgrade_progress_report
    DOWNLOAD_STARTED = "download_started"  # from the download edge
    DOWNLOAD_FINISHED = "download_finished"
    TIMEOUT = "timeout"

    # Identity hashing, in C: `Enum.__hash__` is a Python function (hash of the name), and
    # each record hashes its kind four or five times (the sets below, the transition
    # table). Members are singletons compared by identity, so equal kinds hash alike; and
    # the sets of kinds are only ever asked for membership, never walked, so no order can
    # depend on it (a name's hash varied between processes anyway).
    __hash__ = object.__hash__


# Messages from the device itself: proof that it is online. A set, not an enum property:
# the machine asks twice per record, and a set lookup is several times cheaper.
UPLINK = frozenset({Kind.VERSION, Kind.SDK_INFO, Kind.PROGRESS})


class Event(NamedTuple):
    """One input of the machine (a named tuple, like `workers.model`'s values: one is built
    per record)."""

    kind: Kind
    spec: JobSpec | None = None  # START
    attempt: int = 0  # START
    task_id: str = ""  # CANCEL, TIMEOUT
    job_version: int = 0  # TIMEOUT
    fw_version: str | None = None  # VERSION, SDK_INFO
    sw_version: str | None = None
    health_check: HealthCheck | None = None  # VERSION: the device's verdict on its version
    result_code: int = 0  # PROGRESS
    progress: int | None = None
    version: str = ""
    description: str | None = None  # PROGRESS: the device's free text (workers.progress)
    device_event_id: str | None = None
    package_sha256: str = ""  # DOWNLOAD_*
    connection: str | None = None  # ONLINE: the connection a broker notice announces
    bytes_served: int = 0  # DOWNLOAD_FINISHED: bytes the edge sent in this download
    duration_ms: int = 0  # DOWNLOAD_FINISHED: from its first to its last byte


def event_from_record(record: InboxRecord) -> Event:
    if isinstance(record, DeviceEventRecord):
        return _device_event(record)
    if isinstance(record, PresenceRecord):
        if record.online:
            return Event(Kind.ONLINE, connection=record.connection)
        return Event(Kind.OFFLINE)
    if isinstance(record, JobStartRecord):
        if record.attempt < 1:
            raise InvalidEventError("bad_value", f"job_start attempt {record.attempt} is below 1")
        if not _SHA256_HEX.fullmatch(record.job.package.sha256):
            raise InvalidEventError("bad_value", "job.package.sha256 must be 64 hex digits")
        return Event(Kind.START, spec=record.job, attempt=record.attempt)
    if isinstance(record, JobCancelRecord):
        return Event(Kind.CANCEL, task_id=record.task_id)
    if isinstance(record, DownloadRecord):
        kind = (
            Kind.DOWNLOAD_STARTED
            if record.phase is DownloadPhase.STARTED
            else Kind.DOWNLOAD_FINISHED
        )
        return Event(
            kind,
            package_sha256=record.package_sha256.lower(),
            bytes_served=record.bytes_served,
            duration_ms=record.duration_ms,
        )
    if isinstance(record, TimeoutRecord):
        return Event(Kind.TIMEOUT, task_id=record.task_id, job_version=record.job_version)
    raise InvalidEventError("unknown_kind", f"{type(record).__name__} is not an inbox record")


def _device_event(record: DeviceEventRecord) -> Event:
    try:
        report = decode_report(record.event_type, record.paras)
    except ProtocolError as exc:
        raise InvalidEventError(
            _INBOX_REASON.get(exc.reason, exc.reason.value), exc.message
        ) from None
    if isinstance(report, ProgressReport):
        return Event(
            Kind.PROGRESS,
            result_code=report.result_code,
            progress=report.progress,
            version=_version(report.version, "version"),
            description=report.description,
            device_event_id=record.device_event_id,
        )
    return Event(
        Kind.VERSION if isinstance(report, VersionReport) else Kind.SDK_INFO,
        fw_version=_optional_version(report.fw_version, "fw_version"),
        sw_version=_optional_version(report.sw_version, "sw_version"),
        health_check=report.health_check if isinstance(report, VersionReport) else None,
    )


# The inbox's dead letters name a field of the wrong type as a bad value, as they always have.
_INBOX_REASON = {Reason.WRONG_TYPE: "bad_value"}


def _optional_version(value: str | None, name: str) -> str | None:
    return None if value is None else _version(value, name)


def _version(value: str, name: str) -> str:
    # The protocol lets a device send an empty version; the machine cannot compare one.
    if not value:
        raise InvalidEventError(
            "bad_value", f"paras.{name} must be a string of 1..{MAX_VERSION_CHARS} characters"
        )
    return value
