"""The Kafka records that flow between services, and their codec.

Topics and what they carry (all keyed by device id unless said otherwise):
- inbox (`ota.inbox`): every input of a device's job, in order: device events from the
  gateway, presence, job start/cancel from the scheduler, download progress from the
  edge, and timeouts from the sweeper.
- commands (`ota.commands`): platform -> device events for the gateway to publish.
- job events (`ota.job-events`): each transition of a device's job, for the scheduler.
- dead letters (`ota.dead-letters`, keyed by source): whatever could not be processed,
  with the reason and the raw bytes.

Every record is a JSON object with `v` (format version), `kind`, `id` (unique event id
consumers deduplicate by) and `at_ms` (platform time it was produced). Decoding is
strict: a bad record raises `RecordError` with a specific reason, never anything else.
Encoding uses orjson's native dataclass support.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

import orjson

FORMAT_VERSION = 1
T = TypeVar("T")


class RecordError(ValueError):
    """A Kafka record that cannot be decoded; `reason` is a stable dead-letter code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def new_id() -> str:
    return uuid.uuid4().hex


class TaskType(StrEnum):
    FIRMWARE = "firmware"
    SOFTWARE = "software"

    @property
    def version_field(self) -> str:
        """The version_report field this task compares: fw_version or sw_version."""
        return "fw_version" if self is TaskType.FIRMWARE else "sw_version"


class ConflictPolicy(StrEnum):
    FAIL = "fail"  # IoTDA: a busy device fails with "Task Conflict"
    WAIT = "wait"  # queue behind the active job


class SuccessMode(StrEnum):
    """When a job counts as succeeded (docs/workers.md, "Two-stage success")."""

    REPORTED = "reported"  # the device reported the target version (IoTDA's rule)
    CONFIRMED = "confirmed"  # and then confirmed its health checks passed on it


HOUR_S = 3600


@dataclass(frozen=True, slots=True)
class Windows:
    """How long each wait state may last, in seconds (IoTDA defaults)."""

    online_s: int = 25 * HOUR_S
    version_s: int = 180
    download_start_s: int = 24 * HOUR_S
    download_finish_s: int = 24 * HOUR_S
    update_start_s: int = 24 * HOUR_S
    result_s: int = 24 * HOUR_S
    verify_s: int = 180
    upgrade_total_s: int = 24 * HOUR_S  # command sent -> final result, across the states
    # Success "confirmed": target version reported -> the device's health verdict. Its own
    # window, after the others (not capped by upgrade_total_s); not IoTDA's.
    confirm_s: int = 1800


@dataclass(frozen=True, slots=True)
class PackageRef:
    """What a job installs: enough to build the upgrade command without a lookup."""

    sha256: str
    version: str
    file_name: str
    file_size: int
    custom_info: str = ""
    allowed_sources: tuple[str, ...] = ()  # empty: any source version may upgrade
    # A signed package's detached signature (base64) and its key id (ota.package_signing);
    # empty when unsigned. Upgrade commands carry them for devices that check.
    signature: str = ""
    key_id: str = ""


MAX_RETRY_DELAY_S = 24 * HOUR_S  # IoTDA's longest retry interval; a growing backoff stops there


@dataclass(frozen=True, slots=True)
class RetryRule:
    """How a job that fails with one cause, or any cause of one class, is tried again
    (`ota.retry_rules` decides): while the job has used fewer than `count` retries, after
    `interval_s * factor ** retries used`, at most `max_interval_s`. `on` is a cause's
    `key` or a `CauseClass` value (ota.catalog); count 0 means never."""

    on: str
    count: int
    interval_s: int = 0
    factor: float = 1.0
    max_interval_s: int = MAX_RETRY_DELAY_S


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One device's part of a task, as the scheduler releases it."""

    task_id: str
    task_type: TaskType
    package: PackageRef
    windows: Windows = Windows()
    retry_count: int = 0
    retry_interval_s: int = 0
    require_online: bool = False  # fail at once with DEVICE_NOT_ONLINE when offline
    on_conflict: ConflictPolicy = ConflictPolicy.FAIL
    presigned_url: bool = False  # send the _v2 commands with the token in the URL
    # Per cause or class, in place of retry_count/retry_interval_s; empty: those for all.
    retry_rules: tuple[RetryRule, ...] = ()
    success: SuccessMode = SuccessMode.REPORTED


# ------------------------------------------------------------------ inbox records


@dataclass(frozen=True, slots=True)
class DeviceEventRecord:
    """A device's uplink event, normalised by the gateway (`ota.protocol.Event`)."""

    kind: ClassVar[str] = "device_event"
    device_id: str
    event_type: str
    paras: Mapping[str, Any]
    device_event_id: str | None = None
    device_time_ms: int | None = None
    id: str = field(default_factory=new_id)
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class PresenceRecord:
    kind: ClassVar[str] = "presence"
    device_id: str
    online: bool
    source: str = "broker"  # broker notice, or "uplink" when inferred from traffic
    id: str = field(default_factory=new_id)
    at_ms: int = 0
    # Names the device's connection an online notice announces (the broker's connect
    # time); compared for equality only: a new one means the device reconnected.
    connection: str | None = None


@dataclass(frozen=True, slots=True)
class JobStartRecord:
    kind: ClassVar[str] = "job_start"
    device_id: str
    job: JobSpec
    attempt: int = 1  # bumped by the scheduler's retry API; older attempts are ignored
    id: str = field(default_factory=new_id)
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class JobCancelRecord:
    kind: ClassVar[str] = "job_cancel"
    device_id: str
    task_id: str
    id: str = field(default_factory=new_id)
    at_ms: int = 0


class DownloadPhase(StrEnum):
    STARTED = "started"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class DownloadRecord:
    """Download progress seen by the edge for one device and package."""

    kind: ClassVar[str] = "download"
    device_id: str
    package_sha256: str
    phase: DownloadPhase
    bytes_served: int = 0  # finished: bytes sent in this download cycle (resends included)
    duration_ms: int = 0  # finished: from the cycle's first byte to its last
    id: str = field(default_factory=new_id)
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class TimeoutRecord:
    """A due deadline, written by the sweeper; applies only if the job is still at `job_version`."""

    kind: ClassVar[str] = "timeout"
    device_id: str
    task_id: str
    job_version: int
    id: str = field(default_factory=new_id)
    at_ms: int = 0


InboxRecord = (
    DeviceEventRecord
    | PresenceRecord
    | JobStartRecord
    | JobCancelRecord
    | DownloadRecord
    | TimeoutRecord
)


# ------------------------------------------------------------------ other topics


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A platform -> device event for the gateway to publish on the device's down topic."""

    kind: ClassVar[str] = "command"
    device_id: str
    event_type: str  # an ota.protocol.DownlinkType value
    paras: Mapping[str, Any]
    task_id: str | None = None
    id: str = field(default_factory=new_id)  # sent to the device as event_id
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class JobEventRecord:
    """One transition of a device's job (or a note on its timeline when from == to)."""

    kind: ClassVar[str] = "job_event"
    device_id: str
    task_id: str
    attempt: int
    job_version: int
    from_state: str
    to_state: str
    cause: int | None = None  # ota.catalog.FailureCause code
    detail: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    kind: ClassVar[str] = "dead_letter"
    source: str  # gateway, worker, edge, scheduler
    reason: str  # a stable code, e.g. an ota.protocol.Reason
    message: str
    raw_b64: str
    origin: str = ""  # MQTT topic or Kafka topic/partition/offset it came from
    key: str | None = None
    id: str = field(default_factory=new_id)
    at_ms: int = 0

    @staticmethod
    def raw_bytes(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")


AnyRecord = InboxRecord | CommandRecord | JobEventRecord | DeadLetterRecord


# ------------------------------------------------------------------ codec


def encode(record: AnyRecord) -> bytes:
    """The record as JSON bytes, with its format version and kind."""
    body = orjson.dumps(record, option=orjson.OPT_PASSTHROUGH_DATACLASS, default=_plain)
    return b'{"v":%d,"kind":"%s",' % (FORMAT_VERSION, record.kind.encode()) + body[1:]


def encode_device_event(record: DeviceEventRecord) -> bytes:
    """`encode(record)` for the gateway's hot path, the same bytes: the record's fields as
    a dict in their order, without orjson calling back for the dataclass."""
    return orjson.dumps(
        {
            "v": FORMAT_VERSION,
            "kind": "device_event",
            "device_id": record.device_id,
            "event_type": record.event_type,
            "paras": record.paras,
            "device_event_id": record.device_event_id,
            "device_time_ms": record.device_time_ms,
            "id": record.id,
            "at_ms": record.at_ms,
        },
        option=orjson.OPT_PASSTHROUGH_DATACLASS,
        default=_plain,
    )


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # per dataclass: `fields()` is slow per call


def _plain(value: Any) -> Any:
    # Dataclasses come through here (nested ones too); ClassVars such as `kind` stay out.
    names = _FIELD_NAMES.get(type(value))
    if names is None:
        if not is_dataclass(value) or isinstance(value, type):
            raise TypeError(f"cannot encode {type(value).__name__}")
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in fields(value))
    return {name: getattr(value, name) for name in names}


class _Reader:
    """Typed field access on a decoded object, raising RecordError with the field's path."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data, self.where = data, where

    def get(self, name: str, kind: type[T] | tuple[type, ...], default: Any = ...) -> Any:
        # Called about ten times per record decoded: one lookup, no tuple built.
        value = self.data.get(name)
        if value is None:
            if default is ...:
                raise RecordError("missing_field", f"{self.where}.{name} is required")
            return default
        if value.__class__ is bool and (kind is int or kind is float):
            raise RecordError(
                "wrong_type", f"{self.where}.{name} must be {_name(kind)}, got boolean"
            )
        if not isinstance(value, kind):
            raise RecordError(
                "wrong_type",
                f"{self.where}.{name} must be {_name(kind)}, got {type(value).__name__}",
            )
        return value

    def enum(self, name: str, kind: Callable[[str], T], default: Any = ...) -> T:
        raw = self.get(name, str, default)
        try:
            return kind(raw)
        except ValueError:
            raise RecordError("bad_value", f"{self.where}.{name}={raw!r} is not allowed") from None

    def child(self, name: str) -> _Reader:
        return _Reader(self.get(name, dict), f"{self.where}.{name}")

    def non_negative(self, name: str, default: Any = ...) -> int:
        value: int = self.get(name, int, default)
        if value < 0:
            raise RecordError("bad_value", f"{self.where}.{name}={value} is negative")
        return value


def _name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def _common(r: _Reader) -> dict[str, Any]:
    return {
        "id": r.get("id", str),
        "at_ms": r.non_negative("at_ms", 0),
        "device_id": r.get("device_id", str),
    }


def _windows(r: _Reader) -> Windows:
    defaults = Windows()
    values = {
        name: r.non_negative(name, getattr(defaults, name)) for name in Windows.__dataclass_fields__
    }
    return Windows(**values)


def _package(r: _Reader) -> PackageRef:
    sources = r.get("allowed_sources", list, [])
    if not all(isinstance(s, str) for s in sources):
        raise RecordError("wrong_type", f"{r.where}.allowed_sources must hold strings")
    return PackageRef(
        sha256=r.get("sha256", str),
        version=r.get("version", str),
        file_name=r.get("file_name", str),
        file_size=r.non_negative("file_size"),
        custom_info=r.get("custom_info", str, ""),
        allowed_sources=tuple(sources),
        signature=r.get("signature", str, ""),
        key_id=r.get("key_id", str, ""),
    )


def _retry_rules(r: _Reader) -> tuple[RetryRule, ...]:
    items = r.get("retry_rules", list, [])
    rules = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RecordError("wrong_type", f"{r.where}.retry_rules[{i}] must be an object")
        rule = _Reader(item, f"{r.where}.retry_rules[{i}]")
        factor = rule.get("factor", (int, float), 1.0)
        if factor < 1:
            raise RecordError("bad_value", f"{rule.where}.factor={factor} is below 1")
        rules.append(
            RetryRule(
                on=rule.get("on", str),
                count=rule.non_negative("count"),
                interval_s=rule.non_negative("interval_s", 0),
                factor=float(factor),
                max_interval_s=rule.non_negative("max_interval_s", MAX_RETRY_DELAY_S),
            )
        )
    return tuple(rules)


def _job(r: _Reader) -> JobSpec:
    return JobSpec(
        task_id=r.get("task_id", str),
        task_type=r.enum("task_type", TaskType),
        package=_package(r.child("package")),
        windows=_windows(r.child("windows")) if "windows" in r.data else Windows(),
        retry_count=r.non_negative("retry_count", 0),
        retry_interval_s=r.non_negative("retry_interval_s", 0),
        require_online=r.get("require_online", bool, False),
        on_conflict=r.enum("on_conflict", ConflictPolicy, "fail"),
        presigned_url=r.get("presigned_url", bool, False),
        retry_rules=_retry_rules(r),
        success=r.enum("success", SuccessMode, "reported"),
    )


# Decoded job specs by their JSON: every job start of a task carries the same spec, so it
# is read and checked once and then shared (it is immutable, so sharing changes nothing),
# which also keeps the workers' spec cache (keyed by identity) hitting. Failures are never
# cached: the same bytes raise the same error each time.
_SPECS: dict[bytes, JobSpec] = {}
_SPECS_MAX = 1024


def _cached_job(r: _Reader) -> JobSpec:
    job = r.child("job")
    try:
        key = orjson.dumps(job.data)
    except orjson.JSONEncodeError:  # nesting orjson reads but will not write: no cache
        return _job(job)
    spec = _SPECS.get(key)
    if spec is None:
        spec = _job(job)
        if len(_SPECS) >= _SPECS_MAX:
            _SPECS.clear()
        _SPECS[key] = spec
    return spec


def _device_event(r: _Reader) -> DeviceEventRecord:
    return DeviceEventRecord(
        event_type=r.get("event_type", str),
        paras=r.get("paras", dict),
        device_event_id=r.get("device_event_id", str, None),
        device_time_ms=r.get("device_time_ms", int, None),
        **_common(r),
    )


MAX_CONNECTION_CHARS = 64  # a connection identity is stored with the device's state


def _connection(r: _Reader) -> str | None:
    value: str | None = r.get("connection", str, None)
    if value is not None and not 0 < len(value) <= MAX_CONNECTION_CHARS:
        raise RecordError(
            "bad_value", f"{r.where}.connection must have 1..{MAX_CONNECTION_CHARS} characters"
        )
    return value


_DECODERS: dict[str, Callable[[_Reader], Any]] = {
    "device_event": _device_event,
    "presence": lambda r: PresenceRecord(
        online=r.get("online", bool),
        source=r.get("source", str, "broker"),
        connection=_connection(r),
        **_common(r),
    ),
    "job_start": lambda r: JobStartRecord(
        job=_cached_job(r), attempt=r.non_negative("attempt", 1), **_common(r)
    ),
    "job_cancel": lambda r: JobCancelRecord(task_id=r.get("task_id", str), **_common(r)),
    "download": lambda r: DownloadRecord(
        package_sha256=r.get("package_sha256", str),
        phase=r.enum("phase", DownloadPhase),
        bytes_served=r.non_negative("bytes_served", 0),
        duration_ms=r.non_negative("duration_ms", 0),
        **_common(r),
    ),
    "timeout": lambda r: TimeoutRecord(
        task_id=r.get("task_id", str), job_version=r.non_negative("job_version"), **_common(r)
    ),
    "command": lambda r: CommandRecord(
        event_type=r.get("event_type", str),
        paras=r.get("paras", dict),
        task_id=r.get("task_id", str, None),
        **_common(r),
    ),
    "job_event": lambda r: JobEventRecord(
        task_id=r.get("task_id", str),
        attempt=r.non_negative("attempt"),
        job_version=r.non_negative("job_version"),
        from_state=r.get("from_state", str),
        to_state=r.get("to_state", str),
        cause=r.get("cause", int, None),
        detail=r.get("detail", dict, {}),
        **_common(r),
    ),
    "dead_letter": lambda r: DeadLetterRecord(
        source=r.get("source", str),
        reason=r.get("reason", str),
        message=r.get("message", str),
        raw_b64=r.get("raw_b64", str),
        origin=r.get("origin", str, ""),
        key=r.get("key", str, None),
        id=r.get("id", str),
        at_ms=r.non_negative("at_ms", 0),
    ),
}

INBOX_KINDS = frozenset(
    {"device_event", "presence", "job_start", "job_cancel", "download", "timeout"}
)


def decode(raw: bytes, expect: frozenset[str] | None = None) -> Any:
    """Decode any record; with `expect`, only those kinds are accepted."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordError("invalid_json", f"record is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RecordError("not_an_object", "record is not a JSON object")
    reader = _Reader(data, "record")
    version = reader.get("v", int)
    if version != FORMAT_VERSION:
        raise RecordError(
            "unsupported_version", f"record format v{version} is not v{FORMAT_VERSION}"
        )
    kind = reader.get("kind", str)
    if kind not in _DECODERS or (expect is not None and kind not in expect):
        raise RecordError("unknown_kind", f"record kind {kind[:64]!r} is not expected here")
    try:
        return _DECODERS[kind](reader)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError("bad_value", f"{kind} record: {exc}") from None


def decode_inbox(raw: bytes) -> InboxRecord:
    record: InboxRecord = decode(raw, INBOX_KINDS)
    return record
