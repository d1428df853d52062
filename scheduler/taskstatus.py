"""Task statuses (IoTDA's, plus Paused) and how a finished task's status is chosen.

Pure. A `Tally` counts a set of devices of a task by where their job stands.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TaskStatus(StrEnum):
    INITIALIZING = "Initializing"
    WAITING = "Waiting"  # scheduled for later
    PROCESSING = "Processing"
    PAUSED = "Paused"
    SUCCESS = "Success"
    FAIL = "Fail"
    PARTIAL_SUCCESS = "PartialSuccess"
    STOPPED = "Stopped"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset(
    {TaskStatus.SUCCESS, TaskStatus.FAIL, TaskStatus.PARTIAL_SUCCESS, TaskStatus.STOPPED}
)
ACTIVE = frozenset({TaskStatus.WAITING, TaskStatus.PROCESSING, TaskStatus.PAUSED})


@dataclass(frozen=True, slots=True)
class Tally:
    pending: int = 0  # not released yet
    active: int = 0  # released, job not terminal
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def total(self) -> int:
        return self.pending + self.active + self.finished


def final_status(tally: Tally, *, stopped: bool) -> TaskStatus:
    """IoTDA's verdict on a task whose every device is terminal."""
    if stopped:
        return TaskStatus.STOPPED
    if tally.succeeded == tally.total:
        return TaskStatus.SUCCESS
    if tally.succeeded == 0:
        return TaskStatus.FAIL
    return TaskStatus.PARTIAL_SUCCESS
