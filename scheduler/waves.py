"""Waves: where each wave ends in a task's ordered device list, and a wave's verdict.

Pure strategy functions (hawkbit's rollout-group success and error conditions, in
small): a wave passes when its successes reach its threshold (early, as soon as they
do), fails as soon as the threshold can no longer be reached, and is otherwise still
running. Devices after the listed waves form a final wave that is never judged.
"""

from __future__ import annotations

import math
from enum import StrEnum

from scheduler.policy import Wave
from scheduler.taskstatus import Tally


class Verdict(StrEnum):
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"


def wave_ends(total: int, waves: tuple[Wave, ...]) -> list[int]:
    """Cumulative end index of each listed wave (clamped to `total`), then `total` for the rest."""
    ends = []
    end = 0
    for wave in waves:
        if wave.count is not None:
            size = wave.count
        else:
            size = math.ceil(total * (wave.percent or 0.0) / 100.0)
        end = min(total, end + size)
        ends.append(end)
    ends.append(total)
    return ends


def needed(size: int, wave: Wave) -> int:
    """Successes the wave needs; at least one when the threshold is above zero."""
    return min(size, math.ceil(size * wave.success_threshold_pct / 100.0 - 1e-9))


def verdict(size: int, wave: Wave, tally: Tally) -> Verdict:
    """Judge a fully released wave of `size` devices from its devices' tally."""
    need = needed(size, wave)
    if need > 0 and tally.succeeded >= need:
        return Verdict.PASSED
    if tally.failed + tally.cancelled > size - need:
        return Verdict.FAILED
    if tally.finished >= size:
        return Verdict.PASSED
    return Verdict.RUNNING
