"""Turns the machine's effects into Kafka records: commands (with a download token minted
from the record's time, so a replay mints the same token) and job events."""

from __future__ import annotations

from ota import tokens
from ota.protocol import PARA_KEY_ID, PARA_SIGNATURE, DownlinkType
from ota.records import CommandRecord, JobEventRecord, TaskType
from ota.settings import CommonSettings
from workers.effects import Effect, EmitJobEvent, SendUpgrade, SendVersionQuery


def to_record(
    settings: CommonSettings, device_id: str, effect: Effect, at_ms: int
) -> CommandRecord | JobEventRecord:
    if isinstance(effect, EmitJobEvent):
        return JobEventRecord(
            device_id=device_id,
            task_id=effect.task_id,
            attempt=effect.attempt,
            job_version=effect.job_version,
            from_state=effect.from_state,
            to_state=effect.to_state,
            cause=effect.cause,
            detail=effect.detail,
            id=effect.id,
            at_ms=at_ms,
        )
    if isinstance(effect, SendVersionQuery):
        return CommandRecord(
            device_id=device_id,
            event_type=DownlinkType.VERSION_QUERY.value,
            paras={},
            task_id=effect.task_id,
            id=effect.id,
            at_ms=at_ms,
        )
    return _upgrade(settings, device_id, effect, at_ms)


def _upgrade(
    settings: CommonSettings, device_id: str, effect: SendUpgrade, at_ms: int
) -> CommandRecord:
    spec = effect.spec
    package = spec.package
    sha = package.sha256.lower()
    token = tokens.mint(
        settings.token_keys,
        device_id=device_id,
        package_sha256=sha,
        expires_s=effect.token_expires_s,
    )
    url = f"{settings.download_base_url}/packages/sha256/{sha}"
    firmware = spec.task_type is TaskType.FIRMWARE
    paras: dict[str, object] = {
        "version": package.version,
        "file_size": package.file_size,
        "file_name": package.file_name,
        "sign": sha,
        # Both forms say how long the token (header or URL) lives, as IoTDA's do: what is
        # left of it at the record's time (the machine set its expiry from that time).
        "expires": max(0, effect.token_expires_s - at_ms // 1000),
        # IoTDA's task fields: the platform task id always. sub_device_count is for gateway
        # batch mode, which tasks here do not use; tasks carry no task_ext_info yet.
        "task_id": spec.task_id,
    }
    if spec.presigned_url:
        kind = DownlinkType.FIRMWARE_UPGRADE_V2 if firmware else DownlinkType.SOFTWARE_UPGRADE_V2
        paras["url"] = f"{url}?token={token}"
    else:
        kind = DownlinkType.FIRMWARE_UPGRADE if firmware else DownlinkType.SOFTWARE_UPGRADE
        paras["url"] = url
        paras["access_token"] = token
    if package.custom_info:
        paras["custom_info"] = package.custom_info
    if package.signature:
        paras[PARA_SIGNATURE] = package.signature
        paras[PARA_KEY_ID] = package.key_id
    return CommandRecord(
        device_id=device_id,
        event_type=kind.value,
        paras=paras,
        task_id=spec.task_id,
        id=effect.id,
        at_ms=at_ms,
    )
