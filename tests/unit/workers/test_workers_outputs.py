"""Upgrade commands as the worker writes them: IoTDA's fields in both URL forms."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ota import tokens
from ota.protocol import PARA_KEY_ID, PARA_SIGNATURE, check_downlink_paras
from ota.records import CommandRecord, TaskType
from ota.settings import TOKEN_LIFETIME_S, CommonSettings, SettingsError
from workers.effects import SendUpgrade, SendVersionQuery
from workers.outputs import to_record

from .helpers import SHA, TARGET, spec

SETTINGS = CommonSettings.from_env({"OTA_DOWNLOAD_BASE_URL": "https://edge.example"})
AT_MS = 1_800_000_000_500
NOW_S = AT_MS // 1000
URL = f"https://edge.example/packages/sha256/{SHA}"


def upgrade(
    task_type: TaskType, presigned: bool, token_expires_s: int = NOW_S + 86_400
) -> CommandRecord:
    job = replace(spec("task-42", task_type=task_type), presigned_url=presigned)
    record = to_record(SETTINGS, "dev-1", SendUpgrade("w0-1-0", job, token_expires_s), AT_MS)
    assert isinstance(record, CommandRecord)
    return record


@pytest.mark.parametrize(
    ("task_type", "presigned", "event_type"),
    [
        (TaskType.FIRMWARE, False, "firmware_upgrade"),
        (TaskType.SOFTWARE, False, "software_upgrade"),
        (TaskType.FIRMWARE, True, "firmware_upgrade_v2"),
        (TaskType.SOFTWARE, True, "software_upgrade_v2"),
    ],
)
def test_both_forms_carry_expires_and_the_task_id(
    task_type: TaskType, presigned: bool, event_type: str
) -> None:
    record = upgrade(task_type, presigned)
    assert record.event_type == event_type
    assert record.paras["expires"] == 86_400
    assert record.paras["task_id"] == "task-42"
    assert (record.paras["version"], record.paras["sign"]) == (TARGET, SHA)
    # What the gateway sends passes the protocol's own check unchanged.
    assert check_downlink_paras(record.event_type, record.paras) == dict(record.paras)


def test_v1_sends_the_token_beside_a_plain_url() -> None:
    paras = upgrade(TaskType.FIRMWARE, presigned=False).paras
    assert paras["url"] == URL
    check = tokens.verify(
        SETTINGS.token_keys, paras["access_token"], package_sha256=SHA, now_s=NOW_S
    )
    assert (check.verdict, check.device_id) == (tokens.Verdict.VALID, "dev-1")
    assert check.expires_s == NOW_S + paras["expires"]


def test_v2_carries_the_token_in_the_url_only() -> None:
    paras = upgrade(TaskType.FIRMWARE, presigned=True).paras
    assert "access_token" not in paras
    base, _, token = paras["url"].partition("?token=")
    assert base == URL
    check = tokens.verify(SETTINGS.token_keys, token, package_sha256=SHA, now_s=NOW_S)
    assert check.expires_s == NOW_S + paras["expires"]


def test_expires_is_what_is_left_of_the_token_at_the_records_time() -> None:
    assert upgrade(TaskType.FIRMWARE, True, NOW_S + 600).paras["expires"] == 600
    assert upgrade(TaskType.FIRMWARE, False, NOW_S - 5).paras["expires"] == 0


def test_tokens_live_24_hours_as_iotdas_do_unless_set_otherwise() -> None:
    assert TOKEN_LIFETIME_S == SETTINGS.token_lifetime_s == 86_400
    short = CommonSettings.from_env({"OTA_TOKEN_LIFETIME_S": "5"})
    assert short.token_lifetime_s == 5


@pytest.mark.parametrize("bad", ["0", "-1", "2592001", "1.5", "day"])
def test_a_token_lifetime_out_of_range_is_a_settings_error(bad: str) -> None:
    with pytest.raises(SettingsError, match="OTA_TOKEN_LIFETIME_S"):
        CommonSettings.from_env({"OTA_TOKEN_LIFETIME_S": bad})


def test_version_query_carries_no_upgrade_fields() -> None:
    record = to_record(SETTINGS, "dev-1", SendVersionQuery("w0-1-0", "task-42"), AT_MS)
    assert isinstance(record, CommandRecord)
    assert (record.event_type, record.paras, record.task_id) == ("version_query", {}, "task-42")


def test_a_signed_package_s_command_carries_its_signature_and_key_id() -> None:
    signed = replace(
        spec("task-42"),
        package=replace(spec().package, signature="c2lnbmF0dXJl", key_id="0123456789abcdef"),
    )
    effect = SendUpgrade("w0-1-0", signed, NOW_S + 86_400)
    record = to_record(SETTINGS, "dev-1", effect, AT_MS)
    assert isinstance(record, CommandRecord)
    assert record.paras[PARA_SIGNATURE] == "c2lnbmF0dXJl"
    assert record.paras[PARA_KEY_ID] == "0123456789abcdef"
    # The gateway's check keeps them, so they reach the device.
    assert check_downlink_paras(record.event_type, record.paras) == dict(record.paras)


def test_an_unsigned_package_s_command_has_no_signature_fields() -> None:
    paras = upgrade(TaskType.FIRMWARE, presigned=False).paras
    assert PARA_SIGNATURE not in paras
    assert PARA_KEY_ID not in paras
