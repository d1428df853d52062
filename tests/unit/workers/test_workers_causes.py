"""Every failure cause of the catalog, produced by the state machine under IoTDA's own
default windows (25 h online, 3 min version report, 24 h download plus result, 3 min
version check), on a simulated clock: each timeout fires exactly at its deadline.

One row per cause: the events a device sends (or not), and the cause the job ends with.
Causes that no sequence can produce say why in `NOT_PRODUCED`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ota.catalog import FailureCause as F
from ota.catalog import cause_for_result_code, known_result_codes
from ota.jobstates import JobState as S
from ota.records import ConflictPolicy, SuccessMode, Windows
from ota.reports import HealthCheck
from workers.events import Event, Kind
from workers.model import Device

from .helpers import (
    DL_FINISHED,
    DL_STARTED,
    OFFLINE,
    SHA,
    TARGET,
    Runner,
    events,
    progress,
    start,
    version,
)
from .helpers import spec as make_spec

T0 = 1_700_000_000_000
HOUR_MS = 3_600_000
DEFAULTS = Windows()


Step = Callable[[Runner], None]


def send(event: Event) -> Step:
    def step(run: Runner) -> None:
        run(event)

    return step


def wait() -> Step:
    """Nothing happens until the job's deadline: the sweeper's timeout fires then."""

    def step(run: Runner) -> None:
        run.timeout()

    return step


@dataclass(frozen=True)
class Case:
    steps: tuple[Step, ...]
    online: bool | None = True
    require_online: bool = False
    allowed: tuple[str, ...] = ()
    success: SuccessMode = SuccessMode.REPORTED


QUERIED = (send(version(fw="1.0")),)  # answered the version query: the command went out
CASES: dict[F, Case] = {
    F.DEVICE_NOT_ONLINE: Case((), online=False, require_online=True),
    F.ONLINE_TIMEOUT: Case((wait(),), online=False),
    F.VERSION_REPORT_TIMEOUT: Case((wait(),)),
    F.SOURCE_VERSION_NOT_ALLOWED: Case((send(version(fw="0.9")),), allowed=("1.0",)),
    # The 24 h window closes; the last version query gets the old version or silence.
    F.DOWNLOAD_START_TIMEOUT: Case((*QUERIED, wait(), send(version(fw="1.0")))),
    F.DOWNLOAD_FINISH_TIMEOUT: Case((*QUERIED, send(DL_STARTED), wait(), wait())),
    F.UPDATE_START_TIMEOUT: Case(
        (*QUERIED, send(DL_STARTED), send(DL_FINISHED), wait(), send(version(fw="1.0")))
    ),
    F.RESULT_TIMEOUT: Case(
        (
            *QUERIED,
            send(DL_STARTED),
            send(DL_FINISHED),
            send(progress(0, 50)),
            wait(),
            send(version(fw="1.5")),
        )
    ),
    F.VERIFY_TIMEOUT: Case(
        (*QUERIED, send(DL_STARTED), send(DL_FINISHED), send(progress(0, 50)), wait(), wait())
    ),
    # Success "confirmed": the result names the target, then the health verdict decides.
    F.CONFIRM_TIMEOUT: Case(
        (*QUERIED, send(progress(0, 100, TARGET)), wait()), success=SuccessMode.CONFIRMED
    ),
    F.HEALTH_CHECK_FAILED: Case(
        (*QUERIED, send(progress(0, 100, TARGET)), send(version(TARGET, None, HealthCheck.FAILED))),
        success=SuccessMode.CONFIRMED,
    ),
    F.ROLLED_BACK: Case(
        (*QUERIED, send(progress(0, 100, TARGET)), send(version(fw="1.0"))),
        success=SuccessMode.CONFIRMED,
    ),
    **{
        cause_for_result_code(code): Case((*QUERIED, send(DL_STARTED), send(progress(code, 100))))
        for code in sorted(known_result_codes() - {0, 3, 255})
    },
}
# A conflict needs a second task on a busy device: its own test below.
NOT_PRODUCED = {
    F.CELL_ID_TIMEOUT: "NB-IoT (LwM2M) devices report a cell id; MQTT devices never do",
    F.TASK_CONFLICT: "needs two tasks; see test_task_conflict_at_default_windows",
}


def test_every_cause_has_a_row_or_a_reason() -> None:
    assert set(CASES) | set(NOT_PRODUCED) == set(F)
    assert not set(CASES) & set(NOT_PRODUCED)


@pytest.mark.parametrize("cause", list(CASES), ids=lambda c: c.name)
def test_cause_at_default_windows(cause: F) -> None:
    case = CASES[cause]
    run = Runner(Device(online=case.online, fw_version="1.0"), T0)
    run(
        start(
            make_spec(
                windows=DEFAULTS,
                require_online=case.require_online,
                allowed=case.allowed,
                success=case.success,
            )
        )
    )
    for do in case.steps:
        do(run)
    assert (run.state, run.job.cause) == (S.FAILED, cause)


def test_the_download_window_is_iotda_s_24_hours_from_the_command() -> None:
    run = Runner(Device(online=True, fw_version="1.0"), T0)
    run(start(make_spec(windows=DEFAULTS)))
    run(version(fw="1.0"))
    sent_at = run.now_ms
    run(DL_STARTED, sent_at + HOUR_MS)
    assert run.job.deadline_ms == sent_at + 24 * HOUR_MS
    run.timeout()
    assert run.state is S.VERIFYING  # the last version query, 3 minutes
    assert run.job.deadline_ms == sent_at + 24 * HOUR_MS + 180_000


def test_a_device_that_upgraded_silently_succeeds_at_the_version_check() -> None:
    run = Runner(Device(online=True, fw_version="1.0"), T0)
    run(start(make_spec(windows=DEFAULTS)))
    run(version(fw="1.0"))
    run(DL_STARTED)
    run.timeout()
    run(version(fw=TARGET))
    assert (run.state, run.job.cause) == (S.SUCCEEDED, None)


def test_a_download_record_during_the_check_moves_the_stage_on() -> None:
    """The edge's record arrives after the window closed: the cause follows it."""
    run = Runner(Device(online=True, fw_version="1.0"), T0)
    run(start(make_spec(windows=DEFAULTS)))
    run(version(fw="1.0"))
    run.timeout()
    run(DL_STARTED)
    run(DL_FINISHED)
    run.timeout()
    assert (run.state, run.job.cause) == (S.FAILED, F.UPDATE_START_TIMEOUT)


def test_task_conflict_at_default_windows() -> None:
    run = Runner(Device(online=True, fw_version="1.0"), T0)
    run(start(make_spec("t1", windows=DEFAULTS)))
    out = run(start(make_spec("t2", windows=DEFAULTS, on_conflict=ConflictPolicy.FAIL)))
    [failed] = [e for e in events(out) if e.to_state == "FAILED"]
    assert failed.cause == F.TASK_CONFLICT


def test_the_confirmation_window_is_its_own_after_the_result() -> None:
    """confirm_s starts at the target's report, past the 24 h that end with the result."""
    run = Runner(Device(online=True, fw_version="1.0"), T0)
    run(start(make_spec(windows=DEFAULTS, success=SuccessMode.CONFIRMED)))
    run(version(fw="1.0"))
    run(progress(0, 100, TARGET), run.now_ms + 24 * HOUR_MS - 1)
    assert run.state is S.CONFIRMING
    assert run.job.deadline_ms == run.now_ms + DEFAULTS.confirm_s * 1000


def test_invalid_uri_is_a_device_side_cause() -> None:
    assert F.INVALID_URI.side == "device"
    assert cause_for_result_code(11) is F.INVALID_URI


def test_offline_while_querying_then_the_online_window() -> None:
    run = Runner(Device(online=True, fw_version="1.0"), T0)
    run(start(make_spec(windows=DEFAULTS)))
    run(OFFLINE)
    assert run.job.deadline_ms == run.now_ms + 25 * HOUR_MS
    run.timeout()
    assert run.job.cause is F.ONLINE_TIMEOUT


def test_download_facts_after_the_result_are_notes_before_it() -> None:
    """The edge's records of a download reach the job after the device's own result."""
    run = Runner(Device(online=True, fw_version="1.0"), T0)
    run(start(make_spec(windows=DEFAULTS)))
    run(version(fw="1.0"))
    run(progress(0, 100, TARGET))
    done = run.job
    finished = Event(Kind.DOWNLOAD_FINISHED, package_sha256=SHA, bytes_served=99, duration_ms=7)
    notes = [run(DL_STARTED), run(finished)]
    assert run.job == done
    emitted = [e for out in notes for e in events(out)]
    assert [(e.from_state, e.to_state) for e in emitted] == [
        ("DOWNLOADING", "DOWNLOADING"),
        ("DOWNLOADED", "DOWNLOADED"),
    ]
    assert [e.job_version for e in emitted] == [done.version] * 2
    last = emitted[1].detail
    assert (last["before_result"], last["bytes"], last["duration_ms"]) == (True, 99, 7)


def test_download_facts_the_try_already_saw_stay_late_reports() -> None:
    run = Runner(Device(online=True, fw_version="1.0"), T0)
    run(start(make_spec(windows=DEFAULTS)))
    run(version(fw="1.0"))
    run(DL_STARTED)
    run(DL_FINISHED)
    run(progress(0, 100, TARGET))
    out = run(DL_FINISHED)
    assert [e.detail["note"] for e in events(out)] == ["late_report"]
