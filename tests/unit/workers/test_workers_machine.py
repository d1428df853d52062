"""One test per transition of the job state machine (workers.machine.TRANSITIONS and the
device-level steps), driven by hand-made events at chosen times."""

from __future__ import annotations

import pytest

from ota.catalog import FailureCause as F
from ota.catalog import cause_for_result_code
from ota.jobstates import ACTIVE
from ota.jobstates import JobState as S
from ota.records import ConflictPolicy, TaskType
from workers.effects import SendUpgrade, SendVersionQuery
from workers.events import Event, Kind
from workers.machine import TRANSITIONS
from workers.model import Device

from .helpers import (
    DL_FINISHED,
    DL_STARTED,
    OFFLINE,
    ONLINE,
    SDK_INFO,
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


def online_runner() -> Runner:
    return Runner(Device(online=True), T0)


def at(state: S) -> Runner:
    """A runner whose job has just reached `state` along the main path."""
    run = online_runner()
    run(start())
    path = {
        S.QUERYING_VERSION: [],
        S.COMMAND_SENT: [version(fw="1.0")],
        S.DOWNLOADING: [version(fw="1.0"), DL_STARTED],
        S.DOWNLOADED: [version(fw="1.0"), DL_STARTED, DL_FINISHED],
        S.UPDATING: [version(fw="1.0"), DL_STARTED, DL_FINISHED, progress(0, 50)],
    }
    if state is S.WAITING_ONLINE:
        run = Runner(Device(online=False), T0)
        run(start())
    elif state is S.VERIFYING:
        run = at(S.UPDATING)
        run.timeout()
    else:
        for event in path[state]:
            run(event)
    assert run.state is state
    return run


# ------------------------------------------------------------------ job start


def test_start_online_device_queries_version() -> None:
    run = online_runner()
    out = run(start())
    assert run.state is S.QUERYING_VERSION
    assert run.job.deadline_ms == T0 + 10_000
    assert transitions(out) == [("QUEUED", "QUERYING_VERSION")]
    assert [type(c) for c in commands(out)] == [SendVersionQuery]


def test_start_offline_device_waits_without_query() -> None:
    run = Runner(Device(online=False), T0)
    out = run(start())
    assert run.state is S.WAITING_ONLINE
    assert run.job.deadline_ms == T0 + 100_000
    assert commands(out) == []


def test_start_unknown_presence_waits_online_and_queries_speculatively() -> None:
    run = Runner(Device(), T0)
    out = run(start())
    assert run.state is S.WAITING_ONLINE
    assert [type(c) for c in commands(out)] == [SendVersionQuery]
    assert events(out)[0].detail == {"query": "speculative"}


@pytest.mark.parametrize("presence", [False, None])
def test_start_requiring_online_fails_when_not_known_online(presence: bool | None) -> None:
    run = Runner(Device(online=presence), T0)
    run(start(spec(require_online=True)))
    assert run.state is S.FAILED
    assert run.job.cause is F.DEVICE_NOT_ONLINE


def test_same_job_start_redelivered_is_a_no_op() -> None:
    run = online_runner()
    run(start())
    before = run.device
    out = run(start())
    assert run.device == before
    assert out.effects == ()


def test_older_attempt_job_start_is_ignored_with_a_note() -> None:
    run = online_runner()
    run(start(attempt=2))
    before = run.device
    out = run(start(attempt=1))
    assert run.device == before
    assert notes(out) == ["stale_attempt"]


def test_newer_attempt_restarts_a_finished_job_and_keeps_counting_versions() -> None:
    run = at(S.QUERYING_VERSION)
    run.timeout()
    assert run.state is S.FAILED
    failed_version = run.job.version
    run(start(attempt=2))
    assert run.job.state is S.QUERYING_VERSION
    assert run.job.attempt == 2
    assert run.job.version == failed_version + 1


def test_newer_attempt_while_upgrading_is_refused_with_a_note() -> None:
    run = at(S.DOWNLOADING)
    out = run(start(attempt=2))
    assert run.state is S.DOWNLOADING
    assert run.job.attempt == 1
    assert notes(out) == ["attempt_while_busy"]


def test_conflict_fail_policy_fails_the_new_job_only() -> None:
    run = at(S.DOWNLOADING)
    out = run(start(spec("t2")))
    assert run.job.task_id == "t1"
    assert run.state is S.DOWNLOADING
    [event] = events(out)
    assert (event.task_id, event.to_state, event.cause) == ("t2", "FAILED", F.TASK_CONFLICT)
    assert run(start(spec("t2"))).effects == ()  # a re-sent start stays a no-op


def test_conflict_wait_policy_queues_then_starts_when_the_active_job_ends() -> None:
    run = at(S.DOWNLOADING)
    out = run(start(spec("t2", on_conflict=ConflictPolicy.WAIT)))
    assert notes(out) == ["queued"]
    assert [q.task_id for q in run.device.queue] == ["t2"]
    out = run(progress(0, 100, TARGET))
    assert run.job.task_id == "t2"
    assert run.state is S.QUERYING_VERSION
    assert transitions(out) == [("DOWNLOADING", "SUCCEEDED"), ("QUEUED", "QUERYING_VERSION")]
    assert [e.task_id for e in events(out)] == ["t1", "t2"]


def test_queued_job_times_out_with_task_conflict() -> None:
    run = at(S.DOWNLOADING)
    run(start(spec("t2", on_conflict=ConflictPolicy.WAIT)))
    queued = run.device.queue[0]
    assert queued.deadline_ms is not None
    out = run(Event(Kind.TIMEOUT, task_id="t2", job_version=queued.version), queued.deadline_ms)
    assert run.device.queue == ()
    assert [(e.task_id, e.to_state, e.cause) for e in events(out)] == [
        ("t2", "FAILED", F.TASK_CONFLICT)
    ]


def test_new_task_replaces_a_finished_job() -> None:
    run = at(S.QUERYING_VERSION)
    run(version(fw=TARGET))
    assert run.state is S.SUCCEEDED
    run(start(spec("t2")))
    assert run.job.task_id == "t2"
    assert run.device.done == (("t1", 1),)
    assert run(start(spec("t1"))).effects == ()  # the finished task is remembered


# ------------------------------------------------------------------ waiting online


@pytest.mark.parametrize("event", [ONLINE, SDK_INFO, progress(0, 10)])
def test_waiting_online_any_sign_of_life_queries(event: Event) -> None:
    run = at(S.WAITING_ONLINE)
    out = run(event)
    assert run.state is S.QUERYING_VERSION
    assert [type(c) for c in commands(out)] == [SendVersionQuery]


def test_waiting_online_version_report_is_an_answer() -> None:
    run = at(S.WAITING_ONLINE)
    out = run(version(fw="1.0"))
    assert run.state is S.COMMAND_SENT
    assert [type(c) for c in commands(out)] == [SendUpgrade]


def test_waiting_online_repeated_presence_is_a_no_op() -> None:
    run = at(S.WAITING_ONLINE)
    run(ONLINE)
    run(OFFLINE)
    assert run.state is S.WAITING_ONLINE
    before = run.device
    assert run(OFFLINE).effects == ()
    assert run.device == before


def test_waiting_online_timeout() -> None:
    run = at(S.WAITING_ONLINE)
    run.timeout()
    assert (run.state, run.job.cause) == (S.FAILED, F.ONLINE_TIMEOUT)


# ------------------------------------------------------------------ querying version


def test_version_equal_to_target_succeeds_without_upgrade() -> None:
    run = at(S.QUERYING_VERSION)
    out = run(version(fw=TARGET))
    assert run.state is S.SUCCEEDED
    assert run.job.deadline_ms is None
    assert commands(out) == []


def test_source_version_not_allowed_fails() -> None:
    run = online_runner()
    run(start(spec(allowed=("1.5",))))
    run(version(fw="1.0"))
    assert (run.state, run.job.cause) == (S.FAILED, F.SOURCE_VERSION_NOT_ALLOWED)


def test_allowed_source_version_gets_the_upgrade_command() -> None:
    run = online_runner()
    run(start(spec(allowed=("1.0",))))
    out = run(version(fw="1.0"), T0 + 500)
    assert run.state is S.COMMAND_SENT
    [command] = commands(out)
    assert isinstance(command, SendUpgrade)
    assert command.token_expires_s == (T0 + 500) // 1000 + 86_400
    assert run.job.command_id == command.id
    assert run.job.deadline_ms == T0 + 500 + 20_000


def test_software_task_compares_sw_version() -> None:
    run = online_runner()
    run(start(spec(task_type=TaskType.SOFTWARE)))
    out = run(version(fw=TARGET))  # not the field this task compares
    assert run.state is S.QUERYING_VERSION
    assert notes(out) == ["version_missing"]
    run(version(sw=TARGET))
    assert run.job.state is S.SUCCEEDED


def test_querying_offline_goes_back_to_waiting_online() -> None:
    run = at(S.QUERYING_VERSION)
    run(OFFLINE)
    assert run.state is S.WAITING_ONLINE


def test_querying_progress_report_belongs_to_an_older_try() -> None:
    run = at(S.QUERYING_VERSION)
    out = run(progress(0, 100, TARGET))
    assert run.state is S.QUERYING_VERSION
    assert notes(out) == ["stale_report"]


def test_querying_timeout() -> None:
    run = at(S.QUERYING_VERSION)
    run.timeout()
    assert (run.state, run.job.cause) == (S.FAILED, F.VERSION_REPORT_TIMEOUT)


# ------------------------------------------------------------------ after the command


def test_command_sent_reconnect_resends_with_fresh_token_and_the_same_id() -> None:
    run = at(S.COMMAND_SENT)
    first = run.job.command_id
    run(OFFLINE)
    out = run(ONLINE, T0 + 7_000)
    assert run.state is S.COMMAND_SENT
    [command, asked] = commands(out)  # the upgrade, then a version query (docs/workers.md)
    assert isinstance(command, SendUpgrade)
    assert isinstance(asked, SendVersionQuery)
    assert command.token_expires_s == (T0 + 7_000) // 1000 + 86_400
    assert run.job.command_id == command.id == first
    assert notes(out) == ["command_resent"]


def test_download_started_then_finished_from_the_edge() -> None:
    run = at(S.COMMAND_SENT)
    run(DL_STARTED)
    assert run.state is S.DOWNLOADING
    assert run(DL_STARTED).effects == ()  # a repeated status is a no-op
    run(DL_FINISHED)
    assert run.job.state is S.DOWNLOADED


def test_download_finished_straight_from_command_sent() -> None:
    run = at(S.COMMAND_SENT)
    run(DL_FINISHED)
    assert run.state is S.DOWNLOADED


def test_download_of_another_package_is_noted_only() -> None:
    run = at(S.COMMAND_SENT)
    out = run(Event(Kind.DOWNLOAD_STARTED, package_sha256="cd" * 32))
    assert run.state is S.COMMAND_SENT
    assert notes(out) == ["other_package"]


def test_progress_infers_download_without_the_edge() -> None:
    run = at(S.COMMAND_SENT)
    out = run(progress(0, 30))
    assert run.state is S.DOWNLOADING
    assert events(out)[0].detail == {"by": "progress", "progress": 30}


def test_progress_after_download_means_updating() -> None:
    run = at(S.DOWNLOADED)
    run(progress(0, 80))
    assert run.state is S.UPDATING


@pytest.mark.parametrize(
    "state", [S.COMMAND_SENT, S.DOWNLOADING, S.DOWNLOADED, S.UPDATING, S.VERIFYING]
)
def test_final_result_with_target_version_succeeds(state: S) -> None:
    run = at(state)
    run(progress(0, 100, TARGET))
    assert run.state is S.SUCCEEDED


def test_result_already_latest_with_target_succeeds() -> None:
    run = at(S.UPDATING)
    run(progress(3, None, TARGET))
    assert run.state is S.SUCCEEDED


def test_result_zero_with_other_version_fails() -> None:
    run = at(S.UPDATING)
    run(progress(0, 100, "1.0"))
    assert (run.state, run.job.cause) == (S.FAILED, F.UPDATE_FAILED)


@pytest.mark.parametrize("code", [1, 2, 4, 5, 6, 7, 8, 9, 10, 255, 77])
def test_every_device_result_code_maps_to_its_cause(code: int) -> None:
    run = at(S.DOWNLOADING)
    out = run(progress(code, None, "1.0"))
    assert run.state is S.FAILED
    assert run.job.cause is cause_for_result_code(code)
    assert events(out)[0].cause == cause_for_result_code(code).value


def test_report_echoing_an_older_command_is_ignored() -> None:
    run = at(S.DOWNLOADING)
    out = run(progress(0, 100, TARGET, echo="w0-1-0"))
    assert run.state is S.DOWNLOADING
    assert notes(out) == ["stale_report"]
    run(progress(0, 100, TARGET, echo=run.job.command_id))
    assert run.job.state is S.SUCCEEDED


def test_device_chosen_event_ids_are_not_mistaken_for_ours() -> None:
    run = at(S.DOWNLOADING)
    run(progress(0, 100, TARGET, echo="wifi-report-1"))
    assert run.state is S.SUCCEEDED


@pytest.mark.parametrize(
    ("state", "cause"),
    [
        (S.COMMAND_SENT, F.DOWNLOAD_START_TIMEOUT),
        (S.DOWNLOADING, F.DOWNLOAD_FINISH_TIMEOUT),
        (S.DOWNLOADED, F.UPDATE_START_TIMEOUT),
    ],
)
def test_upgrade_state_window_timeouts(state: S, cause: F) -> None:
    run = at(state)
    run.timeout()
    assert (run.state, run.job.cause) == (S.FAILED, cause)


def test_upgrade_total_window_running_out_verifies_instead() -> None:
    run = online_runner()
    run(start(spec(windows=spec().windows.__class__(download_start_s=500, upgrade_total_s=60))))
    run(version(fw="1.0"))
    assert run.job.deadline_ms == T0 + 60_000
    out = run.timeout()
    assert run.state is S.VERIFYING
    assert [type(c) for c in commands(out)] == [SendVersionQuery]


def test_updating_timeout_queries_version_once() -> None:
    run = at(S.UPDATING)
    out = run.timeout()
    assert run.state is S.VERIFYING
    assert [type(c) for c in commands(out)] == [SendVersionQuery]


def test_verifying_target_version_succeeds() -> None:
    run = at(S.VERIFYING)
    out = run(version(fw=TARGET))
    assert run.state is S.SUCCEEDED
    assert events(out)[0].detail == {"version": TARGET, "by": "verify"}


def test_verifying_other_version_fails_with_result_timeout() -> None:
    run = at(S.VERIFYING)
    run(version(fw="1.0"))
    assert (run.state, run.job.cause) == (S.FAILED, F.RESULT_TIMEOUT)


def test_verifying_silence_fails_with_verify_timeout() -> None:
    run = at(S.VERIFYING)
    run.timeout()
    assert (run.state, run.job.cause) == (S.FAILED, F.VERIFY_TIMEOUT)


# ------------------------------------------------------------------ retries


def test_retryable_failure_waits_and_retries_until_exhausted() -> None:
    run = online_runner()
    run(start(spec(retry_count=2, retry_interval_s=5)))
    for tries in (0, 1):
        out = run.timeout()
        assert (run.state, run.job.cause, run.job.tries) == (
            S.WAITING_RETRY,
            F.VERSION_REPORT_TIMEOUT,
            tries,
        )
        assert run.job.deadline_ms == run.now_ms + 5_000
        assert events(out)[0].cause == F.VERSION_REPORT_TIMEOUT
        run.timeout()
        assert run.state is S.QUERYING_VERSION
        assert run.job.cause is None
    run.timeout()
    assert (run.state, run.job.cause, run.job.tries) == (S.FAILED, F.VERSION_REPORT_TIMEOUT, 2)


def test_non_retryable_cause_fails_at_once() -> None:
    run = Runner(Device(online=True), T0)
    run(start(spec(retry_count=3)))
    run(version(fw="1.0"))
    run(progress(5, None, "1.0"))  # not enough storage
    assert (run.state, run.job.cause) == (S.FAILED, F.NOT_ENOUGH_STORAGE)


def test_retry_sends_a_fresh_command_and_ignores_old_reports() -> None:
    run = online_runner()
    run(start(spec(retry_count=1)))
    run(version(fw="1.0"))
    old_command = run.job.command_id
    run(progress(2, None, "1.0"))  # poor signal: retryable
    assert run.state is S.WAITING_RETRY
    run.timeout()
    run(version(fw="1.0"))
    assert run.job.state is S.COMMAND_SENT
    assert run.job.command_id != old_command
    out = run(progress(0, 100, TARGET, echo=old_command))
    assert notes(out) == ["stale_report"]


# ------------------------------------------------------------------ cancel, stale, late


@pytest.mark.parametrize("state", [S.WAITING_ONLINE, S.QUERYING_VERSION])
def test_cancel_before_the_command(state: S) -> None:
    run = at(state)
    run(cancel())
    assert run.state is S.CANCELLED
    assert run.job.deadline_ms is None


def test_cancel_while_waiting_retry() -> None:
    run = online_runner()
    run(start(spec(retry_count=1)))
    run.timeout()
    run(cancel())
    assert run.state is S.CANCELLED


def test_cancel_after_the_command_is_refused() -> None:
    run = at(S.DOWNLOADING)
    out = run(cancel())
    assert run.state is S.DOWNLOADING
    assert notes(out) == ["cancel_refused"]


def test_cancel_of_a_queued_job() -> None:
    run = at(S.DOWNLOADING)
    run(start(spec("t2", on_conflict=ConflictPolicy.WAIT)))
    out = run(cancel("t2"))
    assert run.device.queue == ()
    assert [(e.task_id, e.to_state) for e in events(out)] == [("t2", "CANCELLED")]


def test_stale_timeout_changes_nothing() -> None:
    run = at(S.QUERYING_VERSION)
    stale = timeout_of(run.device)
    run(version(fw="1.0"))
    before = run.device
    assert run(stale, T0 + 10**9).effects == ()
    assert run.device == before


def test_early_timeout_changes_nothing() -> None:
    run = at(S.QUERYING_VERSION)
    before = run.device
    assert run(timeout_of(run.device), T0 + 1).effects == ()
    assert run.device == before


@pytest.mark.parametrize("event", [progress(0, 100, TARGET), progress(7), DL_STARTED, DL_FINISHED])
def test_late_reports_after_the_end_are_noted_and_change_nothing(event: Event) -> None:
    run = at(S.UPDATING)
    run(progress(10, None, "1.0"))
    finished = run.job
    out = run(event)
    assert run.job == finished
    assert notes(out) == ["late_report"]
    assert [(e.from_state, e.to_state) for e in events(out)] == [("FAILED", "FAILED")]


def test_uplinks_update_presence_and_versions() -> None:
    run = Runner(Device(online=False), T0)
    run(Event(Kind.SDK_INFO, fw_version="1.1", sw_version="9"))
    assert (run.device.online, run.device.fw_version, run.device.sw_version) == (True, "1.1", "9")


def test_the_table_moves_only_active_jobs_and_each_state_handles_its_timeout() -> None:
    # A terminal job has no transitions. Every active job has a deadline, so every active
    # state the table owns must handle its timeout (QUEUED jobs time out in the queue).
    assert all(not state.terminal for state, _ in TRANSITIONS)
    timed = {state for state, kind in TRANSITIONS if kind is Kind.TIMEOUT}
    assert timed == ACTIVE - {S.QUEUED}
