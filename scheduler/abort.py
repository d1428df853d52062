"""Abort criteria: stop a task when failures pass a percentage of finished devices.

Pure strategy function over the task's tally and failure-cause counts.
"""

from __future__ import annotations

from collections.abc import Mapping

from ota.catalog import FailureCause
from scheduler.policy import AbortRule
from scheduler.taskstatus import Tally


def abort_reason(
    rules: tuple[AbortRule, ...], tally: Tally, causes: Mapping[int, int]
) -> str | None:
    """The first rule that trips, as a sentence for the task's status reason; else None."""
    judged = tally.succeeded + tally.failed
    for rule in rules:
        if judged < rule.min_finished:
            continue
        failures = tally.failed if rule.cause is None else causes.get(int(rule.cause), 0)
        pct = 100.0 * failures / judged
        if pct >= rule.failure_pct:
            what = "failures" if rule.cause is None else f"failures of cause {_name(rule.cause)}"
            return (
                f"aborted: {what} reached {pct:.1f}% of {judged} finished devices "
                f"(limit {rule.failure_pct:g}% after {rule.min_finished})"
            )
    return None


def _name(cause: FailureCause) -> str:
    return f"{int(cause)} ({cause.message})"
