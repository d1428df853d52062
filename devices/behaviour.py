"""How a simulated device behaves: the knobs tests and benchmarks script per device.

The default is a well-behaved IoTDA device. Each knob bends one thing; knobs combine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Result codes a device reports before it downloads anything (it refuses up front).
BEFORE_DOWNLOAD_CODES = frozenset({1, 2, 4, 5, 8})
# Result codes that can only come from the download (6: lost, 7: bad hash, 9: out of memory).
DOWNLOAD_CODES = frozenset({6, 7, 9})


class AfterInstall(StrEnum):
    """What a device's post-install health check comes to (docs/protocol.md, "Health
    confirmation")."""

    CONFIRM = "confirm"  # the checks pass: a version_report with health_check passed
    FAIL_CHECK = "fail_check"  # they fail: health_check failed, the new version stays
    BOOT_OLD = "boot_old"  # it boots back into the old version and reports that


class FailStage(StrEnum):
    BEFORE_DOWNLOAD = "before_download"
    DOWNLOAD = "download"
    INSTALL = "install"


def stage_of(result_code: int) -> FailStage:
    """Where in the upgrade a device fails with this result code."""
    if result_code in BEFORE_DOWNLOAD_CODES:
        return FailStage.BEFORE_DOWNLOAD
    if result_code in DOWNLOAD_CODES:
        return FailStage.DOWNLOAD
    return FailStage.INSTALL


@dataclass(frozen=True)
class Behaviour:
    fw_version: str = "1.0"
    sw_version: str = "1.0"
    report_at_boot: bool = True  # send version_report right after connecting
    offline_for_s: float = 0.0  # stay offline this long before the first connect
    answer_version_query: bool = True  # False: never answer (platform times out)
    answer_twice: bool = False  # every report goes out twice
    ignore_upgrades: bool = False  # receive upgrade commands but never act on them
    fail_with: int | None = None  # report this result code instead of succeeding
    fail_times: int | None = None  # with fail_with: only the first this many upgrades fail
    wrong_version: str | None = None  # after "installing", report this version
    slow_s: float = 0.0  # wait this long before each answer
    install_s: float = 0.0  # how long "installing" takes
    drop_download_at: int | None = None  # cut the download after this many bytes, then resume
    offline_mid_download_s: float = 0.0  # with drop_download_at: also leave MQTT this long
    # With drop_download_at: stay connected but fetch nothing this long before resuming.
    pause_mid_download_s: float = 0.0
    # Report the download started (progress 0) and never fetch a byte: a download that
    # never finishes whatever the machine's speed (a download cut mid-way may still be
    # counted whole by the edge over TLS).
    stall_download: bool = False
    progress_every_pct: int = 25  # download progress report granularity (0: none, not even 0%)
    # After the edge refused the download token as expired (410): how long to wait for the
    # platform's fresh URL (it comes on the next progress report or reconnect) before
    # reporting the download failed (6). The partial download is kept either way.
    fresh_url_wait_s: float = 60.0
    report_result: bool = True  # False: install and switch version, never report the result
    mute_after_install: bool = False  # once installed, answer nothing (no result, no version)
    mute_after_download: bool = False  # once downloaded, answer nothing (no install, no result)
    keepalive_s: int = 60
    # After a successful install and its result: the health check's outcome, reported
    # unprompted after `health_check_s`; None: an IoTDA device that never sends a verdict.
    after_install: AfterInstall | None = None
    health_check_s: float = 0.0
    # PEM public keys (ota.package_signing) the device accepts package signatures from;
    # empty: it checks only the SHA-256. Set, it refuses unsigned or unverified packages.
    trusted_keys_pem: bytes = b""


WELL_BEHAVED = Behaviour()
