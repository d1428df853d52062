"""Two-stage success (task policy `success: "confirmed"`): every transition into and out of
CONFIRMING, driven by hand-made events at chosen times (docs/protocol.md, "Health
confirmation"); and that a task whose success is "reported" ignores the verdict."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from ota.catalog import FailureCause as F
from ota.jobstates import JobState as S
from ota.records import JobSpec, RetryRule, SuccessMode, TaskType, Windows
from ota.reports import HealthCheck as H
from workers.codec import jobs_of, pack, spec_ref, unpack, unpack_spec
from workers.effects import SendVersionQuery
from workers.events import Event, Kind
from workers.model import Device

from .helpers import (
    DL_FINISHED,
    DL_STARTED,
    OFFLINE,
    TARGET,
    Runner,
    cancel,
    commands,
    events,
    notes,
    progress,
    spec,
    start,
    timeout_of,
    transitions,
    version,
)

T0 = 1_000_000
CONFIRMED = spec(success=SuccessMode.CONFIRMED)
CONFIRM_MS = CONFIRMED.windows.confirm_s * 1000


def upgraded(s: JobSpec = CONFIRMED) -> Runner:
    """A confirmed job whose device, online on connection c1, answered the version query
    and got the command; it has not reported anything since."""
    run = Runner(Device(), T0)
    run(Event(Kind.ONLINE, connection="c1"))
    run(start(s))
    run(version(fw="1.0", sw="1.0"))
    assert run.state is S.COMMAND_SENT
    return run


def confirming() -> Runner:
    run = upgraded()
    run(progress(0, 100, TARGET), T0 + 5_000)
    assert run.state is S.CONFIRMING
    return run


def last_move(run: Runner) -> dict[str, object]:
    assert run.last is not None
    [moved] = [e for e in events(run.last) if e.from_state != e.to_state]
    return dict(moved.detail)


# ------------------------------------------------------------------ into CONFIRMING


def test_the_target_result_waits_for_the_verdict_with_its_own_window() -> None:
    run = upgraded()
    out = run(progress(0, 100, TARGET), T0 + 5_000)
    assert transitions(out) == [("COMMAND_SENT", "CONFIRMING")]
    assert run.job.deadline_ms == T0 + 5_000 + CONFIRM_MS
    assert last_move(run) == {"version": TARGET, "by": "result", "result_code": 0}
    assert run.job.cause is None


def test_already_latest_also_waits_for_the_verdict() -> None:
    run = upgraded()
    run(progress(3, 100, TARGET))
    assert run.state is S.CONFIRMING


@pytest.mark.parametrize("state", [S.DOWNLOADING, S.DOWNLOADED, S.UPDATING])
def test_a_version_report_of_the_target_after_the_command_waits_too(state: S) -> None:
    run = upgraded()
    for event in {
        S.DOWNLOADING: [DL_STARTED],
        S.DOWNLOADED: [DL_STARTED, DL_FINISHED],
        S.UPDATING: [DL_STARTED, DL_FINISHED, progress(0, 95)],
    }[state]:
        run(event)
    assert run.state is state
    out = run(version(fw=TARGET))
    assert transitions(out) == [(state.value, "CONFIRMING")]
    assert last_move(run)["by"] == "version_report"


def test_a_target_report_with_a_passed_verdict_succeeds_at_once() -> None:
    run = upgraded()
    out = run(version(fw=TARGET, health=H.PASSED))
    assert transitions(out) == [("COMMAND_SENT", "SUCCEEDED")]
    assert last_move(run)["health_check"] == "passed"


def test_a_target_report_with_a_failed_verdict_fails_at_once() -> None:
    run = upgraded()
    out = run(version(fw=TARGET, health=H.FAILED))
    assert transitions(out) == [("COMMAND_SENT", "FAILED")]
    assert run.job.cause is F.HEALTH_CHECK_FAILED


def test_the_last_version_query_answered_with_the_target_waits_for_the_verdict() -> None:
    run = upgraded()
    run(DL_STARTED)
    run(DL_FINISHED)
    run(progress(0, 95))
    run.timeout()
    assert run.state is S.VERIFYING
    run(version(fw=TARGET))
    assert run.job.state is S.CONFIRMING
    assert last_move(run)["by"] == "verify"


@pytest.mark.parametrize("online", [True, None])
def test_a_device_already_on_the_target_needs_its_verdict(online: bool | None) -> None:
    """Before any command (QUERYING_VERSION, or WAITING_ONLINE for a device never seen)."""
    run = Runner(Device(online=online), T0)
    run(start(CONFIRMED))
    out = run(version(fw=TARGET))
    assert run.state is S.CONFIRMING
    assert not [c for c in commands(out) if not isinstance(c, SendVersionQuery)]
    run(version(fw=TARGET, health=H.PASSED))
    assert run.job.state is S.SUCCEEDED


def test_a_device_already_on_the_target_with_its_verdict_succeeds_without_a_command() -> None:
    run = Runner(Device(online=True), T0)
    run(start(CONFIRMED))
    out = run(version(fw=TARGET, health=H.PASSED))
    assert transitions(out) == [("QUERYING_VERSION", "SUCCEEDED")]
    assert commands(out) == []


# ------------------------------------------------------------------ out of CONFIRMING


def test_a_passed_verdict_on_the_target_succeeds() -> None:
    run = confirming()
    out = run(version(fw=TARGET, health=H.PASSED))
    assert transitions(out) == [("CONFIRMING", "SUCCEEDED")]
    assert last_move(run) == {"by": "confirmation", "version": TARGET, "health_check": "passed"}
    assert run.job.deadline_ms is None


def test_a_failed_verdict_on_the_target_fails_the_health_check() -> None:
    run = confirming()
    out = run(version(fw=TARGET, health=H.FAILED))
    assert transitions(out) == [("CONFIRMING", "FAILED")]
    assert run.job.cause is F.HEALTH_CHECK_FAILED


@pytest.mark.parametrize("health", [None, H.PASSED, H.FAILED])
def test_the_old_version_back_is_a_roll_back_whatever_the_verdict(health: H | None) -> None:
    run = confirming()
    out = run(version(fw="1.0", health=health))
    assert transitions(out) == [("CONFIRMING", "FAILED")]
    assert run.job.cause is F.ROLLED_BACK
    assert last_move(run)["version"] == "1.0"


def test_an_sdk_report_of_the_old_version_is_a_roll_back() -> None:
    run = confirming()
    run(Event(Kind.SDK_INFO, fw_version="1.0"))
    assert run.job.cause is F.ROLLED_BACK
    assert last_move(run)["by"] == "sdk_info"


def test_a_progress_report_of_another_version_is_a_roll_back() -> None:
    run = confirming()
    run(progress(10, 100, "1.0"))
    assert (run.state, run.job.cause) == (S.FAILED, F.ROLLED_BACK)
    assert last_move(run)["result_code"] == 10


@pytest.mark.parametrize(
    "event",
    [
        version(fw=TARGET),
        version(sw="9.9"),  # no version of the task's component: says nothing of it
        Event(Kind.SDK_INFO, fw_version=TARGET),
        DL_STARTED,
        DL_FINISHED,
        OFFLINE,  # a device rebooting to run its checks
    ],
    ids=["target-alone", "other-component", "sdk-target", "dl-started", "dl-finished", "offline"],
)
def test_reports_without_a_verdict_change_nothing(event: Event) -> None:
    run = confirming()
    before = run.job
    out = run(event)
    assert run.job == before
    assert out.effects == ()


def test_a_repeated_result_of_the_target_is_only_noted() -> None:
    run = confirming()
    before = run.job
    out = run(progress(0, 100, TARGET))
    assert run.job == before
    assert notes(out) == ["progress_while_confirming"]


def test_a_report_echoing_an_older_try_s_command_is_stale() -> None:
    run = confirming()
    out = run(progress(10, 100, "1.0", echo="w0-999-0"))
    assert run.state is S.CONFIRMING
    assert notes(out) == ["stale_report"]


def test_no_verdict_in_the_window_is_a_confirmation_timeout() -> None:
    run = confirming()
    early = run(timeout_of(run.device), run.job.deadline_ms - 1)  # type: ignore[operator]
    assert early.effects == ()
    out = run.timeout()
    assert transitions(out) == [("CONFIRMING", "FAILED")]
    assert run.job.cause is F.CONFIRM_TIMEOUT


def test_a_timeout_set_for_an_earlier_state_does_not_apply() -> None:
    run = upgraded()
    stale = timeout_of(run.device)
    run(progress(0, 100, TARGET))
    out = run(stale, 10**12)
    assert out.effects == ()
    assert run.state is S.CONFIRMING


def test_a_retry_rule_for_the_cause_tries_again_from_the_version_query() -> None:
    rule = RetryRule(on=F.CONFIRM_TIMEOUT.key, count=1, interval_s=30)
    run = upgraded(replace(CONFIRMED, retry_rules=(rule,)))
    run(progress(0, 100, TARGET))
    run.timeout()
    assert (run.state, run.job.cause) == (S.WAITING_RETRY, F.CONFIRM_TIMEOUT)
    run.timeout()
    assert run.state is S.QUERYING_VERSION
    run(version(fw=TARGET, health=H.PASSED))
    assert (run.state, run.job.tries) == (S.SUCCEEDED, 1)


def test_health_failures_are_not_retried_by_default() -> None:
    run = upgraded(replace(CONFIRMED, retry_count=3))
    run(progress(0, 100, TARGET))
    run(version(fw=TARGET, health=H.FAILED))
    assert (run.state, run.job.cause) == (S.FAILED, F.HEALTH_CHECK_FAILED)


def test_a_reconnect_asks_the_version_and_the_answer_decides() -> None:
    run = confirming()
    before = run.job
    out = run(Event(Kind.ONLINE, connection="c2"))
    assert [type(c) for c in commands(out)] == [SendVersionQuery]
    assert notes(out) == ["reconnect_query"]
    assert run.job == before  # state, version and deadline stay
    assert run(Event(Kind.ONLINE, connection="c2")).effects == ()  # the same connection again
    run(version(fw=TARGET, health=H.PASSED))
    assert run.state is S.SUCCEEDED


def test_cancel_is_refused_once_installed() -> None:
    run = confirming()
    out = run(cancel())
    assert run.state is S.CONFIRMING
    assert notes(out) == ["cancel_refused"]


def test_a_software_task_reads_the_software_version() -> None:
    s = spec(task_type=TaskType.SOFTWARE, success=SuccessMode.CONFIRMED)
    run = upgraded(s)
    run(progress(0, 100, TARGET))
    assert run.state is S.CONFIRMING
    run(version(fw="1.0", sw=TARGET, health=H.PASSED))  # the firmware never was the target
    assert run.job.state is S.SUCCEEDED


# ------------------------------------------------------------------ success "reported"


@pytest.mark.parametrize("health", [None, H.PASSED, H.FAILED])
def test_a_reported_task_succeeds_on_the_target_whatever_the_verdict(health: H | None) -> None:
    run = upgraded(spec())
    out = run(version(fw=TARGET, health=health))
    assert transitions(out) == [("COMMAND_SENT", "SUCCEEDED")]
    assert "health_check" not in last_move(run)


def test_a_reported_task_succeeds_on_the_target_result() -> None:
    run = upgraded(spec())
    run(progress(0, 100, TARGET))
    assert run.state is S.SUCCEEDED


# ------------------------------------------------------------------ stored form


def test_a_confirming_job_and_its_spec_survive_being_stored() -> None:
    run = confirming()
    specs = {spec_ref(job.spec).digest: job.spec for job in jobs_of(run.device)}
    assert unpack(pack(run.device), specs) == run.device
    ref = spec_ref(CONFIRMED)
    assert unpack_spec(ref.digest, ref.packed).success is SuccessMode.CONFIRMED
    assert ref.digest != spec_ref(spec()).digest


def test_a_spec_at_the_default_confirmation_window_packs_as_before_it_existed() -> None:
    custom = spec(windows=replace(Windows(), online_s=60))
    ref = spec_ref(custom)
    assert len(orjson.loads(ref.packed)[8]) == 8  # the eight windows stored before confirm_s
    assert unpack_spec(ref.digest, ref.packed) == custom
    longer = spec(windows=replace(Windows(), online_s=60, confirm_s=90))
    back = spec_ref(longer)
    assert len(orjson.loads(back.packed)[8]) == 9
    assert unpack_spec(back.digest, back.packed) == longer
