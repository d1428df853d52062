"""Every outcome of the IoTDA upgrade flow, reached by real simulated devices.

One task carries one device per scenario (so the suite pays for the windows once), with
its windows shortened to seconds through the task policy:
- online 12 s, version report 8 s, download start 8 s, download finish 8 s, verify 8 s;
- update start and result 60 s, but the whole upgrade (command -> result) only 24 s, so a
  device that goes quiet after downloading is settled by the last version query
  (IoTDA's "query device version for check"): the target version succeeds, anything
  else fails with the cause of the furthest stage the job saw.
  The whole-upgrade window leaves the download windows room to bind first even when a
  loaded machine delays the download's start by several seconds.
Each case asserts the device's final state and cause, its timeline, the device-result
webhook notification, and the task's counts.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest
from e2e_support import E2E, Rollout, run_rollout

from devices.behaviour import Behaviour, FailStage, stage_of
from ota.catalog import FailureCause, cause_for_result_code

F = FailureCause
# Big enough that a cut download cannot sit in buffers: over HTTPS the device's TLS layer
# and both kernels' socket buffers on loopback hold several MiB the edge counts as sent.
PACKAGE_BYTES = 16 * 1024 * 1024
RESULT_CODES = (1, 2, 4, 5, 6, 7, 8, 9, 10, 255)
# Windows of seconds, yet several times what a loaded 2-core machine needs for a round
# trip (with 3 s a busy machine timed every version query out).
POLICY = {
    "timeouts": {
        "online_s": 12,
        "version_s": 8,
        "download_start_s": 8,
        "download_finish_s": 8,
        "update_start_s": 60,
        "result_s": 60,
        "verify_s": 8,
        "upgrade_total_s": 24,
    }
}

# scenario -> (behaviour, final state, cause, states the timeline must pass through in order)
CASES: dict[str, tuple[Behaviour, str, FailureCause | None, tuple[str, ...]]] = {
    "success": (
        Behaviour(),
        "SUCCEEDED",
        None,
        ("QUERYING_VERSION", "COMMAND_SENT", "DOWNLOADING", "DOWNLOADED", "SUCCEEDED"),
    ),
    "already_on_target": (
        Behaviour(fw_version="2.0"),
        "SUCCEEDED",
        None,
        ("QUERYING_VERSION", "SUCCEEDED"),
    ),
    "unsupported_source": (
        Behaviour(fw_version="0.9"),
        "FAILED",
        F.SOURCE_VERSION_NOT_ALLOWED,
        ("QUERYING_VERSION", "FAILED"),
    ),
    "offline_then_online": (
        Behaviour(offline_for_s=2),
        "SUCCEEDED",
        None,
        ("WAITING_ONLINE", "COMMAND_SENT", "SUCCEEDED"),
    ),
    "offline_past_window": (
        Behaviour(offline_for_s=600),
        "FAILED",
        F.ONLINE_TIMEOUT,
        ("WAITING_ONLINE", "FAILED"),
    ),
    "no_version_report": (
        Behaviour(report_at_boot=False, answer_version_query=False),
        "FAILED",
        F.VERSION_REPORT_TIMEOUT,
        ("QUERYING_VERSION", "FAILED"),
    ),
    "download_never_started": (
        Behaviour(ignore_upgrades=True),
        "FAILED",
        F.DOWNLOAD_START_TIMEOUT,
        ("COMMAND_SENT", "FAILED"),
    ),
    "download_never_finished": (
        Behaviour(drop_download_at=64 * 1024, offline_mid_download_s=600),
        "FAILED",
        F.DOWNLOAD_FINISH_TIMEOUT,
        ("COMMAND_SENT", "DOWNLOADING", "FAILED"),
    ),
    "downloaded_then_silent": (
        Behaviour(mute_after_download=True, progress_every_pct=0),
        "FAILED",
        F.UPDATE_START_TIMEOUT,
        ("COMMAND_SENT", "DOWNLOADED", "VERIFYING", "FAILED"),
    ),
    "no_result_version_ok": (
        Behaviour(report_result=False),
        "SUCCEEDED",
        None,
        ("COMMAND_SENT", "DOWNLOADING", "VERIFYING", "SUCCEEDED"),
    ),
    "no_result_no_answer": (
        Behaviour(mute_after_install=True),
        "FAILED",
        F.VERIFY_TIMEOUT,
        ("COMMAND_SENT", "DOWNLOADING", "VERIFYING", "FAILED"),
    ),
    **{
        f"result_code_{code}": (
            Behaviour(fail_with=code),
            "FAILED",
            cause_for_result_code(code),
            ("COMMAND_SENT", "FAILED")
            if stage_of(code) is FailStage.BEFORE_DOWNLOAD
            else ("COMMAND_SENT", "DOWNLOADING", "DOWNLOADED", "FAILED"),
        )
        for code in RESULT_CODES
    },
}


@pytest.fixture(scope="module")
def rollout(e2e: E2E) -> Rollout:
    behaviours = [(name, case[0]) for name, case in CASES.items()]
    return asyncio.run(
        run_rollout(
            e2e,
            behaviours,
            package=os.urandom(PACKAGE_BYTES),
            policy=POLICY,
            allowed_sources="1.0",
            timeout_s=120,
        )
    )


def in_order(states: list[str], wanted: tuple[str, ...]) -> bool:
    it = iter(states)
    return all(state in it for state in wanted)


# A device that says "installing" and then goes silent: whether its report reached the
# job before or after the edge's record of the finished download is a race between two
# producers, and the cause follows the order the job saw (docs/workers.md, "Timeline").
RACING = "no_result_no_answer"


def expected_cause(rollout: Rollout, scenario: str) -> FailureCause | None:
    if scenario != RACING:
        return CASES[scenario][2]
    updating = "UPDATING" in rollout.timeline_states(scenario)
    return F.VERIFY_TIMEOUT if updating else F.UPDATE_START_TIMEOUT


@pytest.mark.parametrize("scenario", list(CASES))
def test_device_outcome(rollout: Rollout, scenario: str) -> None:
    _, state, _, path = CASES[scenario]
    cause = expected_cause(rollout, scenario)
    row = rollout.device(scenario)
    assert (row["state"], row["cause"]) == (state, None if cause is None else int(cause))
    states = rollout.timeline_states(scenario)
    assert in_order(states, path), states
    final = rollout.timeline(scenario)[-1]
    assert final["to"] == state
    assert final["cause"] == (None if cause is None else int(cause))
    if cause is not None:
        assert row["cause_message"] == cause.message
    [result] = rollout.device_results(scenario)
    expected_status = "Success" if state == "SUCCEEDED" else "Fail"
    assert (result["state"], result["status"], result["cause"]) == (
        state,
        expected_status,
        None if cause is None else int(cause),
    )


def test_task_counts_and_final_notification(rollout: Rollout) -> None:
    wanted = Counter(case[1] for case in CASES.values())
    causes = Counter(
        int(cause) for name in CASES if (cause := expected_cause(rollout, name)) is not None
    )
    task = rollout.task
    assert task["status"] == "PartialSuccess"
    assert task["progress"] == {
        "total": len(CASES),
        "finished": len(CASES),
        "succeeded": wanted["SUCCEEDED"],
        "failed": wanted["FAILED"],
        "cancelled": 0,
        "in_flight": 0,
        "percent": 100.0,
    }
    assert task["counts"]["states"] == dict(wanted)
    assert {c["code"]: c["count"] for c in task["failure_causes"]} == dict(causes)
    statuses = [n["status"] for n in rollout.notifications if n["kind"] == "task_status"]
    assert statuses[-1] == "PartialSuccess"


def test_simulated_devices_agree(rollout: Rollout) -> None:
    """The devices' own view matches the platform's (the device side of each outcome)."""
    seen = {name: rollout.outcomes[device] for name, device in rollout.ids.items()}
    assert seen["success"] == seen["offline_then_online"] == "succeeded"
    assert seen["already_on_target"] == "idle"  # answered the query; never commanded
    assert seen["offline_past_window"] == "idle"
    assert seen["download_never_started"] == "in_progress"
    assert all(seen[f"result_code_{c}"] == f"failed_{c}" for c in RESULT_CODES)
