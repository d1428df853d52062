"""The state machine's inputs: inbox records, checked and reduced to what the machine uses.

`event_from_record` is pure. A device event whose paras the machine cannot use raises
`InvalidEventError` with a stable `reason` (the dead-letter reason); nothing else is raised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ota.protocol import MAX_VERSION_CHARS
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

    @property
    def uplink(self) -> bool:
        """A message from the device itself: proof that it is online."""
        return self in (Kind.VERSION, Kind.SDK_INFO, Kind.PROGRESS)


@dataclass(frozen=True, slots=True)
class Event:
    kind: Kind
    spec: JobSpec | None = None  # START
    attempt: int = 0  # START
    task_id: str = ""  # CANCEL, TIMEOUT
    job_version: int = 0  # TIMEOUT
    fw_version: str | None = None  # VERSION, SDK_INFO
    sw_version: str | None = None
    result_code: int = 0  # PROGRESS
    progress: int | None = None
    version: str = ""
    device_event_id: str | None = None
    package_sha256: str = ""  # DOWNLOAD_*
    bytes_served: int = 0  # DOWNLOAD_FINISHED: bytes the edge sent in this download
    duration_ms: int = 0  # DOWNLOAD_FINISHED: from its first to its last byte


def event_from_record(record: InboxRecord) -> Event:
    if isinstance(record, DeviceEventRecord):
        return _device_event(record)
    if isinstance(record, PresenceRecord):
        return Event(Kind.ONLINE if record.online else Kind.OFFLINE)
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
    paras = record.paras
    if record.event_type in ("version_report", "sdk_info_report"):
        kind = Kind.VERSION if record.event_type == "version_report" else Kind.SDK_INFO
        return Event(
            kind,
            fw_version=_text(paras, "fw_version", required=False),
            sw_version=_text(paras, "sw_version", required=False),
        )
    if record.event_type == "upgrade_progress_report":
        code = paras.get("result_code")
        if not isinstance(code, int) or isinstance(code, bool) or code < 0:
            raise InvalidEventError("bad_value", "paras.result_code must be a non-negative integer")
        progress = paras.get("progress")
        if progress is not None and (
            not isinstance(progress, int) or isinstance(progress, bool) or not 0 <= progress <= 100
        ):
            raise InvalidEventError("bad_value", "paras.progress must be an integer 0..100")
        return Event(
            Kind.PROGRESS,
            result_code=code,
            progress=progress,
            version=_text(paras, "version", required=True) or "",
            device_event_id=record.device_event_id,
        )
    raise InvalidEventError(
        "unknown_event", f"device event {record.event_type[:64]!r} is not an OTA report"
    )


def _text(paras: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = paras.get(name)
    if value is None:
        if required:
            raise InvalidEventError("missing_field", f"paras.{name} is required")
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_VERSION_CHARS:
        raise InvalidEventError(
            "bad_value", f"paras.{name} must be a string of 1..{MAX_VERSION_CHARS} characters"
        )
    return value
