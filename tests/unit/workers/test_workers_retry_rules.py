"""The job state machine under a task's retry rules: a failure whose cause (or class) has a
rule waits the rule's growing backoff and tries again until its count is used; one whose
rule says never fails at once, as does any cause the rules leave to a task-wide count of 0."""

from __future__ import annotations

from dataclasses import replace

from ota.catalog import FailureCause
from ota.jobstates import JobState
from ota.records import RetryRule
from workers.model import Device

from .helpers import Runner, progress, spec, start, transitions, version

S, F = JobState, FailureCause
T0 = 1_000_000
RULES = (
    RetryRule("device_error", 2, interval_s=60, factor=2.0, max_interval_s=600),
    RetryRule("device_busy", 0),
)


def commanded(runner: Runner) -> None:
    runner(version(fw="1.0"))
    assert runner.state is S.COMMAND_SENT


def test_a_class_rule_retries_with_a_growing_backoff_until_its_count() -> None:
    run = Runner(Device(online=True), T0)
    run(start(replace(spec(retry_count=0), retry_rules=RULES)))
    for tries, wait_s in ((0, 60), (1, 120)):
        commanded(run)
        out = run(progress(4, None, "1.0"))  # low battery: a device error
        assert transitions(out) == [("COMMAND_SENT", "WAITING_RETRY")]
        assert (run.job.cause, run.job.tries) == (F.LOW_BATTERY, tries)
        assert run.job.deadline_ms == run.now_ms + wait_s * 1000
        run.timeout()
        assert run.state is S.QUERYING_VERSION
    commanded(run)
    run(progress(4, None, "1.0"))
    assert (run.state, run.job.cause, run.job.tries) == (S.FAILED, F.LOW_BATTERY, 2)


def test_a_cause_named_never_fails_at_once_beside_its_retried_class() -> None:
    run = Runner(Device(online=True), T0)
    run(start(replace(spec(retry_count=3), retry_rules=RULES)))
    commanded(run)
    out = run(progress(1, None, "1.0"))  # device busy
    assert transitions(out) == [("COMMAND_SENT", "FAILED")]
    assert (run.job.cause, run.job.tries) == (F.DEVICE_BUSY, 0)


def test_causes_without_a_rule_keep_the_task_wide_count() -> None:
    run = Runner(Device(online=True), T0)
    run(start(replace(spec(retry_count=1, retry_interval_s=5), retry_rules=RULES)))
    run.timeout()  # no version report: a timeout, which no rule names
    assert (run.state, run.job.cause) == (S.WAITING_RETRY, F.VERSION_REPORT_TIMEOUT)
    assert run.job.deadline_ms == run.now_ms + 5_000
