"""The failure-cause catalog keeps IoTDA's identifiers and stable codes."""

from __future__ import annotations

import pytest

from ota.catalog import FailureCause, cause_for_result_code, known_result_codes


def test_codes_are_unique_and_stable() -> None:
    # Persisted values: these numbers must never change.
    assert FailureCause.DEVICE_NOT_ONLINE.value == 1
    assert FailureCause.VERIFY_TIMEOUT.value == 9
    assert FailureCause.UPDATE_FAILED.value == 28
    assert len({c.value for c in FailureCause}) == len(FailureCause)


def test_every_cause_has_a_distinct_message() -> None:
    messages = [c.message for c in FailureCause]
    assert all(messages)
    assert len(set(messages)) == len(messages)


# IoTDA's failure table, copied by hand from its documentation (not from the catalog), so
# a changed letter in either fails here: users search for these exact strings.
IOTDA_MESSAGES = {
    FailureCause.DEVICE_NOT_ONLINE: "Device Abnormal is not online",
    FailureCause.TASK_CONFLICT: "Task Conflict",
    FailureCause.ONLINE_TIMEOUT: "Waiting for the device online timeout",
    FailureCause.RESULT_TIMEOUT: "Wait for the device to report upgrade result timeout",
    FailureCause.VERSION_REPORT_TIMEOUT: "Waiting for report device firmware version timeout",
    FailureCause.CELL_ID_TIMEOUT: "Waiting for report cellId timeout",
    FailureCause.VERIFY_TIMEOUT: "Updating timeout and query device version for check timeout",
    FailureCause.DOWNLOAD_FINISH_TIMEOUT: "Waiting for device downloaded package timeout",
    FailureCause.UPDATE_START_TIMEOUT: "Waiting for device start to update timeout",
    FailureCause.DOWNLOAD_START_TIMEOUT: "Waiting for device start download package timeout",
    FailureCause.NOT_ENOUGH_STORAGE: "Not enough storage for the new firmware package",
    FailureCause.OUT_OF_MEMORY: "Out of memory during downloading process",
    FailureCause.CONNECTION_LOST: "Connection lost during downloading process",
    FailureCause.INTEGRITY_CHECK_FAILED: "Integrity check failure for new downloaded package",
    FailureCause.UNSUPPORTED_PACKAGE_TYPE: "Unsupported package type",
    FailureCause.INVALID_URI: "Invalid URI",
    FailureCause.UPDATE_FAILED: "Firmware update failed",
}


def test_iotda_table_has_seventeen_distinct_causes() -> None:
    # 10 platform-side and 7 device-side rows: a row lost from the table above fails here.
    assert len(IOTDA_MESSAGES) == 17
    assert len(set(IOTDA_MESSAGES.values())) == 17


@pytest.mark.parametrize(
    ("cause", "message"), IOTDA_MESSAGES.items(), ids=[c.name for c in IOTDA_MESSAGES]
)
def test_iotda_identifiers_are_verbatim(cause: FailureCause, message: str) -> None:
    assert cause.message == message


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (1, FailureCause.DEVICE_BUSY),
        (2, FailureCause.POOR_SIGNAL),
        (4, FailureCause.LOW_BATTERY),
        (5, FailureCause.NOT_ENOUGH_STORAGE),
        (6, FailureCause.CONNECTION_LOST),
        (7, FailureCause.INTEGRITY_CHECK_FAILED),
        (8, FailureCause.UNSUPPORTED_PACKAGE_TYPE),
        (9, FailureCause.OUT_OF_MEMORY),
        (10, FailureCause.UPDATE_FAILED),
        (12, FailureCause.SIGNATURE_CHECK_FAILED),
        (255, FailureCause.UPDATE_FAILED),
        (77, FailureCause.UPDATE_FAILED),
    ],
)
def test_result_codes_map_to_causes(code: int, cause: FailureCause) -> None:
    assert cause_for_result_code(code) is cause
    assert cause.side == "device"


@pytest.mark.parametrize("code", [0, 3])
def test_success_codes_are_not_failures(code: int) -> None:
    assert code in known_result_codes()
    with pytest.raises(ValueError, match="not a failure"):
        cause_for_result_code(code)


def test_retrying_is_offered_only_where_it_can_help() -> None:
    assert FailureCause.ONLINE_TIMEOUT.retryable
    assert FailureCause.DEVICE_BUSY.retryable
    assert not FailureCause.SOURCE_VERSION_NOT_ALLOWED.retryable
    assert not FailureCause.TASK_CONFLICT.retryable
    assert not FailureCause.SIGNATURE_CHECK_FAILED.retryable  # the same package fails again
