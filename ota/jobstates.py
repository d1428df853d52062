"""Names of a device job's states, shared by the workers (who move them) and the
scheduler (who counts them). Persisted in Redis and in job events: never rename.

The state machine itself lives in `workers.machine`; this module only names states
and maps them onto IoTDA's per-device statuses.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "QUEUED"  # accepted, waiting behind another job of the device (conflict: wait)
    WAITING_ONLINE = "WAITING_ONLINE"
    QUERYING_VERSION = "QUERYING_VERSION"
    COMMAND_SENT = "COMMAND_SENT"
    DOWNLOADING = "DOWNLOADING"
    DOWNLOADED = "DOWNLOADED"
    UPDATING = "UPDATING"
    VERIFYING = "VERIFYING"
    # The target version is reported; a task with success "confirmed" waits here for the
    # device's health verdict (docs/workers.md, "Two-stage success").
    CONFIRMING = "CONFIRMING"
    WAITING_RETRY = "WAITING_RETRY"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def device_status(self) -> DeviceStatus:
        return _STATUS[self]


# Persisted codes (the workers' packed jobs, the scheduler's timeline entries): append only.
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
    JobState.CONFIRMING: 12,
}

TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE = frozenset(JobState) - TERMINAL
# Before the upgrade command is out, a job can be stopped cleanly; after it, the device
# is downloading or installing and IoTDA's protocol has no way to call it back.
CANCELLABLE = frozenset(
    {JobState.QUEUED, JobState.WAITING_ONLINE, JobState.QUERYING_VERSION, JobState.WAITING_RETRY}
)


class DeviceStatus(StrEnum):
    """IoTDA's per-device task statuses."""

    WAITING = "Waiting"
    PROCESSING = "Processing"
    SUCCESS = "Success"
    FAIL = "Fail"
    FAIL_WAIT_RETRY = "FailWaitRetry"
    STOPPED = "Stopped"


_STATUS: dict[JobState, DeviceStatus] = {
    JobState.QUEUED: DeviceStatus.WAITING,
    JobState.WAITING_ONLINE: DeviceStatus.WAITING,
    JobState.QUERYING_VERSION: DeviceStatus.PROCESSING,
    JobState.COMMAND_SENT: DeviceStatus.PROCESSING,
    JobState.DOWNLOADING: DeviceStatus.PROCESSING,
    JobState.DOWNLOADED: DeviceStatus.PROCESSING,
    JobState.UPDATING: DeviceStatus.PROCESSING,
    JobState.VERIFYING: DeviceStatus.PROCESSING,
    JobState.CONFIRMING: DeviceStatus.PROCESSING,
    JobState.WAITING_RETRY: DeviceStatus.FAIL_WAIT_RETRY,
    JobState.SUCCEEDED: DeviceStatus.SUCCESS,
    JobState.FAILED: DeviceStatus.FAIL,
    JobState.CANCELLED: DeviceStatus.STOPPED,
}
