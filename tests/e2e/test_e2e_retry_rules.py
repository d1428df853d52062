"""Per-cause retries end to end: one task whose rules retry device errors twice but never
a busy device, with a task-wide retry_count of 0. A device that reports low battery once is
tried again at once and succeeds; one that always reports low battery is tried twice more
and fails; a busy device fails at its first report, never waiting for a retry."""

from __future__ import annotations

import os

from e2e_support import E2E, Rollout, run_rollout

from devices.behaviour import Behaviour
from ota.catalog import FailureCause

F = FailureCause
LOW_BATTERY, BUSY = 4, 1  # upgrade_progress_report result codes
POLICY = {
    "retry_count": 0,
    "retry_rules": {"device_error": {"count": 2}, "device_busy": {"count": 0}},
}


def commands_sent(rollout: Rollout, scenario: str) -> int:
    return sum(1 for e in rollout.timeline(scenario) if e["to"] == "COMMAND_SENT" != e["from"])


def retry_causes(rollout: Rollout, scenario: str) -> list[int | None]:
    return [e["cause"] for e in rollout.timeline(scenario) if e["to"] == "WAITING_RETRY"]


async def test_one_cause_is_retried_and_another_is_not(e2e: E2E) -> None:
    rollout = await run_rollout(
        e2e,
        [
            ("low_battery_once", Behaviour(fail_with=LOW_BATTERY, fail_times=1)),
            ("low_battery_always", Behaviour(fail_with=LOW_BATTERY)),
            ("busy", Behaviour(fail_with=BUSY)),
        ],
        package=os.urandom(128 * 1024),
        policy=POLICY,
        timeout_s=120,
    )
    assert rollout.task["status"] == "PartialSuccess", (rollout.devices, rollout.outcomes)

    once = rollout.device("low_battery_once")
    assert once["state"] == "SUCCEEDED", rollout.timeline("low_battery_once")
    assert retry_causes(rollout, "low_battery_once") == [int(F.LOW_BATTERY)]
    assert commands_sent(rollout, "low_battery_once") == 2
    assert rollout.outcomes[rollout.ids["low_battery_once"]] == "succeeded"

    always = rollout.device("low_battery_always")
    assert (always["state"], always["cause"]) == ("FAILED", int(F.LOW_BATTERY))
    assert retry_causes(rollout, "low_battery_always") == [int(F.LOW_BATTERY)] * 2
    assert commands_sent(rollout, "low_battery_always") == 3

    busy = rollout.device("busy")
    assert (busy["state"], busy["cause"]) == ("FAILED", int(F.DEVICE_BUSY))
    assert retry_causes(rollout, "busy") == []
    assert commands_sent(rollout, "busy") == 1
    assert rollout.task["progress"]["succeeded"] == 1
    assert rollout.task["progress"]["failed"] == 2
