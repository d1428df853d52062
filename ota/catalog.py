"""The failure-cause catalog: every reason a device's upgrade job can fail.

One enumeration with stable numeric codes (persisted in Redis and Kafka records:
never renumber, only append). The English messages of platform- and device-side
causes are IoTDA's own identifiers, kept verbatim because users search for them.
Device result codes of `upgrade_progress_report` map onto causes here too, and each
cause belongs to one class (`CauseClass`) that a task's retry rules may name at once.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CauseClass(StrEnum):
    """The kinds of failure a retry rule may name at once (docs/scheduler.md, "Retries").
    The values are persisted in job specs: never rename."""

    OFFLINE = "offline"  # the device was not online, or did not come online in its window
    TIMEOUT = "timeout"  # online, but a later window closed without the device's answer
    DEVICE_ERROR = "device_error"  # the device reported a failure (a result code)
    PLATFORM_ERROR = "platform_error"  # the platform refused the job (conflict, source version)


class FailureCause(IntEnum):
    # Platform-side causes (IoTDA failure table).
    DEVICE_NOT_ONLINE = 1
    TASK_CONFLICT = 2
    ONLINE_TIMEOUT = 3
    VERSION_REPORT_TIMEOUT = 4
    DOWNLOAD_START_TIMEOUT = 5
    DOWNLOAD_FINISH_TIMEOUT = 6
    UPDATE_START_TIMEOUT = 7
    RESULT_TIMEOUT = 8
    VERIFY_TIMEOUT = 9
    CELL_ID_TIMEOUT = 10  # NB-IoT only (LwM2M devices report a cell id): catalogued, never produced
    INVALID_URI = 11  # device-side despite its number (reported as result code 11)
    SOURCE_VERSION_NOT_ALLOWED = 12
    # A task with success "confirmed": the target version came, its health verdict did not.
    CONFIRM_TIMEOUT = 13
    # Device-side causes (result codes of upgrade_progress_report).
    DEVICE_BUSY = 20
    POOR_SIGNAL = 21
    LOW_BATTERY = 22
    NOT_ENOUGH_STORAGE = 23
    CONNECTION_LOST = 24
    INTEGRITY_CHECK_FAILED = 25
    UNSUPPORTED_PACKAGE_TYPE = 26
    OUT_OF_MEMORY = 27
    UPDATE_FAILED = 28
    SIGNATURE_CHECK_FAILED = 29  # reported as result code 12 (this platform's)
    # Success "confirmed" (docs/protocol.md, "Health confirmation"): the device's checks
    # after installing failed, or it came back running another version than the target.
    HEALTH_CHECK_FAILED = 30
    ROLLED_BACK = 31

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @property
    def retryable(self) -> bool:
        """True when trying again later can plausibly succeed (IoTDA's FailWaitRetry)."""
        return self not in _NOT_RETRYABLE

    @property
    def side(self) -> str:
        return "device" if self.value >= 20 or self is FailureCause.INVALID_URI else "platform"

    @property
    def key(self) -> str:
        """The cause's name in retry rules and job specs (persisted: never rename)."""
        return self.name.lower()

    @property
    def cause_class(self) -> CauseClass:
        if self.side == "device":
            return CauseClass.DEVICE_ERROR
        if self in (FailureCause.DEVICE_NOT_ONLINE, FailureCause.ONLINE_TIMEOUT):
            return CauseClass.OFFLINE
        if self.name.endswith("_TIMEOUT"):
            return CauseClass.TIMEOUT
        return CauseClass.PLATFORM_ERROR


_MESSAGES: dict[FailureCause, str] = {
    FailureCause.DEVICE_NOT_ONLINE: "Device Abnormal is not online",
    FailureCause.TASK_CONFLICT: "Task Conflict",
    FailureCause.ONLINE_TIMEOUT: "Waiting for the device online timeout",
    FailureCause.VERSION_REPORT_TIMEOUT: "Waiting for report device firmware version timeout",
    FailureCause.DOWNLOAD_START_TIMEOUT: "Waiting for device start download package timeout",
    FailureCause.DOWNLOAD_FINISH_TIMEOUT: "Waiting for device downloaded package timeout",
    FailureCause.UPDATE_START_TIMEOUT: "Waiting for device start to update timeout",
    FailureCause.RESULT_TIMEOUT: "Wait for the device to report upgrade result timeout",
    FailureCause.VERIFY_TIMEOUT: "Updating timeout and query device version for check timeout",
    FailureCause.CELL_ID_TIMEOUT: "Waiting for report cellId timeout",
    FailureCause.INVALID_URI: "Invalid URI",
    FailureCause.SOURCE_VERSION_NOT_ALLOWED: "Source version not allowed by the package",
    FailureCause.CONFIRM_TIMEOUT: "Waiting for the device to confirm its health after the upgrade timeout",
    FailureCause.DEVICE_BUSY: "Device busy",
    FailureCause.POOR_SIGNAL: "Poor signal",
    FailureCause.LOW_BATTERY: "Low battery",
    FailureCause.NOT_ENOUGH_STORAGE: "Not enough storage for the new firmware package",
    FailureCause.CONNECTION_LOST: "Connection lost during downloading process",
    FailureCause.INTEGRITY_CHECK_FAILED: "Integrity check failure for new downloaded package",
    FailureCause.UNSUPPORTED_PACKAGE_TYPE: "Unsupported package type",
    FailureCause.OUT_OF_MEMORY: "Out of memory during downloading process",
    FailureCause.UPDATE_FAILED: "Firmware update failed",
    FailureCause.SIGNATURE_CHECK_FAILED: "Package signature verification failed",
    FailureCause.HEALTH_CHECK_FAILED: "Device reported a failed health check after the upgrade",
    FailureCause.ROLLED_BACK: "Device came back on its previous version after the upgrade",
}

# Retrying cannot help: the package, the device's hardware or another task is in the way.
# The default only: a task's retry rule for the cause or its class overrides it
# (ota.retry_rules).
_NOT_RETRYABLE = frozenset(
    {
        FailureCause.TASK_CONFLICT,
        FailureCause.SOURCE_VERSION_NOT_ALLOWED,
        FailureCause.NOT_ENOUGH_STORAGE,
        FailureCause.UNSUPPORTED_PACKAGE_TYPE,
        FailureCause.SIGNATURE_CHECK_FAILED,
        # The target version ran and proved unhealthy: the same package would again.
        FailureCause.HEALTH_CHECK_FAILED,
        FailureCause.ROLLED_BACK,
    }
)

RESULT_SUCCESS = 0
RESULT_ALREADY_LATEST = 3
# Not in IoTDA's MQTT result codes (0-10, 255): this platform's code for "the device could
# not use the download URL" (malformed, unsupported scheme), IoTDA's "Invalid URI" cause.
RESULT_INVALID_URI = 11
# Not in IoTDA's either: "the package's signature does not verify with a key the device
# trusts" (docs/protocol.md, "Signed packages"). An IoTDA device that checks signatures
# reports 7 instead; this code names the cause apart from a SHA-256 mismatch.
RESULT_SIGNATURE_INVALID = 12

# upgrade_progress_report result_code -> cause. 0 and 3 are not failures.
_RESULT_CODE_CAUSES: dict[int, FailureCause] = {
    1: FailureCause.DEVICE_BUSY,
    2: FailureCause.POOR_SIGNAL,
    4: FailureCause.LOW_BATTERY,
    5: FailureCause.NOT_ENOUGH_STORAGE,
    6: FailureCause.CONNECTION_LOST,
    7: FailureCause.INTEGRITY_CHECK_FAILED,
    8: FailureCause.UNSUPPORTED_PACKAGE_TYPE,
    9: FailureCause.OUT_OF_MEMORY,
    10: FailureCause.UPDATE_FAILED,
    RESULT_INVALID_URI: FailureCause.INVALID_URI,
    RESULT_SIGNATURE_INVALID: FailureCause.SIGNATURE_CHECK_FAILED,
    255: FailureCause.UPDATE_FAILED,
}


def cause_for_result_code(result_code: int) -> FailureCause:
    """The cause a failing result code stands for; unknown codes count as update failures."""
    if result_code in (RESULT_SUCCESS, RESULT_ALREADY_LATEST):
        raise ValueError(f"result code {result_code} is not a failure")
    return _RESULT_CODE_CAUSES.get(result_code, FailureCause.UPDATE_FAILED)


def known_result_codes() -> frozenset[int]:
    return frozenset(_RESULT_CODE_CAUSES) | {RESULT_SUCCESS, RESULT_ALREADY_LATEST}
