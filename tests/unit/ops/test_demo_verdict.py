"""`make demo` judges the finished task against what its fleet's mix predicts."""

from __future__ import annotations

from ops.demo_fleet import verdict

KINDS = {"ok": 90, "on_target": 5, "offline_gone": 1, "unsupported": 2, "fails": 2}


def task(status: str, succeeded: int, failed: int) -> dict[str, object]:
    return {"status": status, "progress": {"succeeded": succeeded, "failed": failed}}


def test_the_predicted_outcome_passes() -> None:
    assert verdict(task("PartialSuccess", 95, 5), KINDS) == []


def test_a_stopped_or_failed_task_is_named() -> None:
    [problem] = verdict(task("Stopped", 95, 5), KINDS)
    assert "'Stopped'" in problem
    assert "'PartialSuccess'" in problem
    assert len(verdict(task("Fail", 10, 90), KINDS)) == 3


def test_wrong_counts_are_named() -> None:
    assert verdict(task("PartialSuccess", 94, 6), KINDS) == [
        "94 devices succeeded, the mix predicts 95",
        "6 devices failed, the mix predicts 5",
    ]


def test_a_fleet_without_failing_kinds_predicts_success() -> None:
    assert verdict(task("Success", 10, 0), {"ok": 10}) == []
    assert verdict(task("Fail", 0, 3), {"fails": 3}) == []
