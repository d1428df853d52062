"""Device reports as typed values: the one reading of an uplink event's `paras`.

A device sends three reports, named by `UplinkType`. `decode_report` checks a report's
paras by the protocol's rules and returns a frozen value; fields the protocol does not
know are dropped. The gateway reads what devices send with it (through
`ota.protocol.parse_uplink`), and the workers and the scheduler read the paras of inbox
records with it, so all three agree on what a report says. `paras()` gives the
normalised form an inbox record carries; decoding it again gives the same value.

Pure; raises only `ProtocolError` (from `ota.fields`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from ota.fields import (
    MAX_TEXT_CHARS,
    ProtocolError,
    Reason,
    optional_int,
    optional_str,
    required_int,
    required_str,
)

MAX_RESULT_CODE = 2**31 - 1


class HealthCheck(StrEnum):
    """A device's verdict on the version it runs, after its own post-install checks
    (`version_report`'s `health_check`, this platform's: docs/protocol.md)."""

    PASSED = "passed"
    FAILED = "failed"


class UplinkType(StrEnum):
    VERSION_REPORT = "version_report"
    UPGRADE_PROGRESS_REPORT = "upgrade_progress_report"
    SDK_INFO_REPORT = "sdk_info_report"


@dataclass(frozen=True, slots=True)
class VersionReport:
    """The versions the device runs (each optional: a device sends what applies);
    the answer to a version_query. `health_check`, when the device has checked the
    version it installed last: its verdict (absent from IoTDA devices' reports)."""

    event_type: ClassVar[UplinkType] = UplinkType.VERSION_REPORT
    fw_version: str | None = None
    sw_version: str | None = None
    health_check: HealthCheck | None = None

    def paras(self) -> dict[str, Any]:
        return _present(
            ("fw_version", self.fw_version),
            ("sw_version", self.sw_version),
            ("health_check", None if self.health_check is None else self.health_check.value),
        )


@dataclass(frozen=True, slots=True)
class SdkInfoReport:
    """The device SDK's own report of its versions, sent around connecting; it updates
    the versions known for the device and answers nothing."""

    event_type: ClassVar[UplinkType] = UplinkType.SDK_INFO_REPORT
    device_sdk_version: str | None = None
    sw_version: str | None = None
    fw_version: str | None = None

    def paras(self) -> dict[str, Any]:
        return _present(
            ("device_sdk_version", self.device_sdk_version),
            ("sw_version", self.sw_version),
            ("fw_version", self.fw_version),
        )


@dataclass(frozen=True, slots=True)
class ProgressReport:
    """An upgrade's progress or result: `result_code` 0 is success (or still going when
    `progress` < 100); `version` is the version the device runs now."""

    event_type: ClassVar[UplinkType] = UplinkType.UPGRADE_PROGRESS_REPORT
    result_code: int
    version: str
    progress: int | None = None
    description: str | None = None

    def paras(self) -> dict[str, Any]:
        out: dict[str, Any] = {"result_code": self.result_code, "version": self.version}
        if self.progress is not None:
            out["progress"] = self.progress
        if self.description is not None:
            out["description"] = self.description
        return out


Report = VersionReport | SdkInfoReport | ProgressReport


def decode_report(event_type: str, paras: Mapping[str, Any], where: str = "paras") -> Report:
    """The report of type `event_type` in `paras`; `where` names paras in error messages."""
    # By the type's text (a member, a StrEnum, hashes and compares as its text): the
    # enum's call cost about as much as reading the report.
    decoder = _BY_TEXT.get(event_type) if isinstance(event_type, str) else None
    if decoder is None:
        try:
            kind = UplinkType(event_type)
        except ValueError:
            raise ProtocolError(
                Reason.UNKNOWN_EVENT, f"event type {event_type[:100]!r} is not a device report"
            ) from None
        decoder = _DECODERS[kind]
    return decoder(paras, where)


def _version_report(paras: Mapping[str, Any], where: str) -> VersionReport:
    return VersionReport(
        fw_version=optional_str(paras, "fw_version", where),
        sw_version=optional_str(paras, "sw_version", where),
        health_check=_health_check(paras, where),
    )


def _health_check(paras: Mapping[str, Any], where: str) -> HealthCheck | None:
    text = optional_str(paras, "health_check", where)
    if text is None:
        return None
    try:
        return HealthCheck(text)
    except ValueError:
        raise ProtocolError(
            Reason.BAD_VALUE,
            f"{where}.health_check {text[:100]!r} is not one of "
            + ", ".join(h.value for h in HealthCheck),
        ) from None


def _sdk_info_report(paras: Mapping[str, Any], where: str) -> SdkInfoReport:
    return SdkInfoReport(
        device_sdk_version=optional_str(paras, "device_sdk_version", where),
        sw_version=optional_str(paras, "sw_version", where),
        fw_version=optional_str(paras, "fw_version", where),
    )


def _progress_report(paras: Mapping[str, Any], where: str) -> ProgressReport:
    return ProgressReport(  # positional, in field order: the uplink's most frequent report
        required_int(paras, "result_code", where, 0, MAX_RESULT_CODE),
        required_str(paras, "version", where),
        optional_int(paras, "progress", where, 0, 100),
        optional_str(paras, "description", where, MAX_TEXT_CHARS),
    )


_DECODERS: dict[UplinkType, Callable[[Mapping[str, Any], str], Report]] = {
    UplinkType.VERSION_REPORT: _version_report,
    UplinkType.UPGRADE_PROGRESS_REPORT: _progress_report,
    UplinkType.SDK_INFO_REPORT: _sdk_info_report,
}
_BY_TEXT = {kind.value: decoder for kind, decoder in _DECODERS.items()}


def _present(*pairs: tuple[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in pairs if value is not None}
