"""One reference device, one package uploaded through the API, one task: Success."""

from __future__ import annotations

import os

from e2e_support import E2E, run_rollout

from devices.behaviour import Behaviour


async def test_one_device_upgrades_and_the_webhook_hears_it(e2e: E2E) -> None:
    rollout = await run_rollout(
        e2e, [("ok", Behaviour())], package=os.urandom(256 * 1024), policy={}, timeout_s=60
    )
    assert rollout.task["status"] == "Success"
    assert rollout.task["progress"]["succeeded"] == 1
    assert rollout.device("ok")["state"] == "SUCCEEDED"
    assert rollout.device("ok")["cause"] is None
    assert rollout.outcomes[rollout.ids["ok"]] == "succeeded"
    assert rollout.views[rollout.ids["ok"]]["fw_version"] == "2.0"
    states = rollout.timeline_states("ok")
    assert states[0] in ("QUERYING_VERSION", "WAITING_ONLINE")
    assert "COMMAND_SENT" in states
    assert states[-1] == "SUCCEEDED"
    assert states.index("DOWNLOADED") < states.index("SUCCEEDED")
    # The edge's "finished": the move into DOWNLOADED, or, when the device's result reached
    # the inbox first, a note placed before the result (docs/workers.md, "Timeline order").
    timeline = rollout.timeline("ok")
    [downloaded] = [
        e for e in timeline if e["detail"].get("by") == "edge" and e["to"] == "DOWNLOADED"
    ]
    assert timeline.index(downloaded) < [e["to"] for e in timeline].index("SUCCEEDED")
    assert downloaded["detail"]["bytes"] >= 256 * 1024
    assert downloaded["detail"]["duration_ms"] >= 0
    [result] = rollout.device_results("ok")
    assert (result["state"], result["status"], result["cause"]) == ("SUCCEEDED", "Success", None)
    statuses = [n["status"] for n in rollout.notifications if n["kind"] == "task_status"]
    assert statuses[-1] == "Success"
