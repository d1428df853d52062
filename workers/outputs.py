"""Turns the machine's effects into Kafka records: commands (with a download token minted
from the record's time, so a replay mints the same token) and job events."""

from __future__ import annotations

from dataclasses import fields

from ota import tokens
from ota.protocol import PARA_KEY_ID, PARA_SIGNATURE, DownlinkType
from ota.records import CommandRecord, JobEventRecord, TaskType
from ota.settings import CommonSettings
from workers.effects import Effect, EmitJobEvent, SendUpgrade, SendVersionQuery

# The records are built with positional arguments: a dataclass's __init__ matches keywords
# by name, which costs half as much again (0.8 us of 2.3 for a job event), and every
# transition builds one. So their field order is checked here, once: a reordered record
# stops the worker at import instead of swapping two of its strings.
_ORDER = {
    JobEventRecord: (
        "device_id",
        "task_id",
        "attempt",
        "job_version",
        "from_state",
        "to_state",
        "cause",
        "detail",
        "id",
        "at_ms",
    ),
    CommandRecord: ("device_id", "event_type", "paras", "task_id", "id", "at_ms"),
}
for _record, _names in _ORDER.items():
    if tuple(f.name for f in fields(_record)) != _names:
        raise ImportError(f"{_record.__name__}'s fields are not in the order outputs.py builds")


_VERSION_QUERY = DownlinkType.VERSION_QUERY.value


def to_record(
    settings: CommonSettings, device_id: str, effect: Effect, at_ms: int
) -> CommandRecord | JobEventRecord:
    if isinstance(effect, EmitJobEvent):
        return JobEventRecord(
            device_id,
            effect.task_id,
            effect.attempt,
            effect.job_version,
            effect.from_state,
            effect.to_state,
            effect.cause,
            effect.detail,
            effect.id,
            at_ms,
        )
    if isinstance(effect, SendVersionQuery):
        return CommandRecord(device_id, _VERSION_QUERY, {}, effect.task_id, effect.id, at_ms)
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
    return CommandRecord(device_id, kind.value, paras, spec.task_id, effect.id, at_ms)
