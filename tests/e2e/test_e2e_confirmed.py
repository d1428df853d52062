"""Two-stage success end to end: one task with `success: "confirmed"` over four devices on
their own MQTT connections. A device that confirms its health after installing succeeds;
one whose health check fails, one that boots back into its old version and one that never
sends a verdict (an IoTDA device) each fail with their own cause, after waiting in
CONFIRMING."""

from __future__ import annotations

import os
from typing import Any

from e2e_support import E2E, Rollout, run_rollout

from devices.behaviour import AfterInstall, Behaviour
from ota.catalog import FailureCause

F = FailureCause
CONFIRM_S = 5  # the IoTDA device's wait for a verdict that never comes
FINAL = ("SUCCEEDED", "FAILED")
POLICY = {"success": "confirmed", "timeouts": {"confirm_s": CONFIRM_S}}


async def test_a_confirmed_success_and_the_ways_a_confirmation_fails(e2e: E2E) -> None:
    rollout = await run_rollout(
        e2e,
        [
            ("confirms", Behaviour(after_install=AfterInstall.CONFIRM, health_check_s=0.5)),
            ("fails_check", Behaviour(after_install=AfterInstall.FAIL_CHECK)),
            ("boots_old", Behaviour(after_install=AfterInstall.BOOT_OLD)),
            ("never_confirms", Behaviour()),
        ],
        package=os.urandom(128 * 1024),
        policy=POLICY,
        timeout_s=120,
    )
    assert rollout.task["status"] == "PartialSuccess", (rollout.devices, rollout.outcomes)
    assert rollout.task["progress"]["succeeded"] == 1
    assert rollout.task["progress"]["failed"] == 3

    confirms = rollout.device("confirms")
    assert confirms["state"] == "SUCCEEDED", rollout.timeline("confirms")
    success = final_move(rollout, "confirms")
    assert (success["from"], success["to"]) == ("CONFIRMING", "SUCCEEDED")
    assert success["detail"]["by"] == "confirmation"
    assert success["detail"]["health_check"] == "passed"
    assert rollout.outcomes[rollout.ids["confirms"]] == "confirmed"

    for scenario, cause, outcome in (
        ("fails_check", F.HEALTH_CHECK_FAILED, "health_check_failed"),
        ("boots_old", F.ROLLED_BACK, "rolled_back"),
        ("never_confirms", F.CONFIRM_TIMEOUT, "succeeded"),  # its own view: it installed
    ):
        row = rollout.device(scenario)
        assert (row["state"], row["cause"]) == ("FAILED", int(cause)), rollout.timeline(scenario)
        assert final_move(rollout, scenario)["from"] == "CONFIRMING", rollout.timeline(scenario)
        assert rollout.outcomes[rollout.ids[scenario]] == outcome
        [result] = rollout.device_results(scenario)
        assert result["cause"] == int(cause), result

    assert final_move(rollout, "boots_old")["detail"]["version"] == "1.0"


def final_move(rollout: Rollout, scenario: str) -> dict[str, Any]:
    """The job's move into its final state (the edge's records of the download may still
    be noted on the timeline after it)."""
    [final] = [e for e in rollout.timeline(scenario) if e["to"] != e["from"] and e["to"] in FINAL]
    return final
