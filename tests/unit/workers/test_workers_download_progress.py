"""A download report that reaches the job after the edge's "finished" record is noted on
the timeline and does not move the job to UPDATING; update progress still does
(workers.progress has the rule)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.catalog import FailureCause as F
from ota.jobstates import JobState as S
from workers.model import Device
from workers.progress import is_download_progress, raised_mark

from .helpers import (
    DL_FINISHED,
    DL_STARTED,
    TARGET,
    WINDOWS,
    Runner,
    events,
    notes,
    progress,
    spec,
    start,
    version,
)

T0 = 1_000_000


def downloaded(*reports_before_finish: int) -> Runner:
    """A job the edge reported downloaded, after the device reported these percentages."""
    run = Runner(Device(online=True), T0)
    run(start())
    run(version(fw="1.0"))
    run(DL_STARTED)
    for pct in reports_before_finish:
        run(progress(0, pct, desc=None))
    run(DL_FINISHED)
    assert run.state is S.DOWNLOADED
    return run


def test_late_download_report_by_description_is_noted_and_keeps_downloaded() -> None:
    run = downloaded(0, 22, 45)
    before = run.job
    out = run(progress(0, 67, desc="downloading"))
    assert run.state is S.DOWNLOADED
    assert run.job.version == before.version
    assert run.job.deadline_ms == before.deadline_ms
    assert notes(out) == ["download_progress"]
    assert events(out)[0].detail["progress"] == 67
    assert run.job.download_pct == 67


def test_late_copy_not_above_the_download_mark_keeps_downloaded() -> None:
    run = downloaded(0, 22, 45)
    out = run(progress(0, 45))  # a QoS 1 copy of the last download report
    assert run.state is S.DOWNLOADED
    assert notes(out) == ["download_progress"]


def test_update_progress_after_late_download_reports_moves_to_updating() -> None:
    run = downloaded(0, 22)
    run(progress(0, 45, desc="Downloading package"))
    run(progress(0, 67, desc="下载中"))
    assert run.state is S.DOWNLOADED
    out = run(progress(0, 95, desc="installing"))
    assert run.job.state is S.UPDATING
    assert [(e.from_state, e.to_state) for e in events(out)] == [("DOWNLOADED", "UPDATING")]


def test_progress_above_the_mark_without_a_download_description_is_update_progress() -> None:
    run = downloaded(0, 22, 45)
    run(progress(0, 50))
    assert run.state is S.UPDATING


def test_a_device_silent_after_a_late_download_report_fails_at_update_start() -> None:
    run = downloaded(10)
    run(progress(0, 80, desc="downloading"))
    run.timeout()
    assert run.state is S.FAILED
    assert run.job.cause is F.UPDATE_START_TIMEOUT


def test_download_mark_counts_only_this_try() -> None:
    run = Runner(Device(online=True), T0)
    run(start(spec(retry_count=1)))
    run(version(fw="1.0"))
    run(progress(0, 80))
    assert run.state is S.DOWNLOADING
    assert run.job.download_pct == 80
    run(progress(2, None))  # poor signal: retryable
    assert run.job.state is S.WAITING_RETRY
    run.timeout()
    assert run.job.download_pct is None


def test_during_verifying_download_progress_keeps_stage_and_update_progress_raises_it() -> None:
    run = total_window_runner()
    assert run.state is S.VERIFYING
    assert stage(run) is S.DOWNLOADED
    out = run(progress(0, 40, desc="downloading"))
    assert notes(out) == ["download_progress"]
    assert stage(run) is S.DOWNLOADED
    run(progress(0, 95))
    assert stage(run) is S.UPDATING
    run.timeout()
    assert run.job.cause is F.VERIFY_TIMEOUT


def stage(run: Runner) -> S | None:
    return run.job.stage


def total_window_runner() -> Runner:
    """A DOWNLOADED job whose own window is the whole one (IoTDA's way), so the window
    closing sends the last version query (VERIFYING) with stage DOWNLOADED."""
    windows = replace(WINDOWS, download_start_s=1000, download_finish_s=1000, update_start_s=1000)
    run = Runner(Device(online=True), T0)
    run(start(spec(windows=windows)))
    run(version(fw="1.0"))
    run(DL_STARTED)
    run(progress(0, 20))
    run(DL_FINISHED)
    run.timeout()
    return run


@pytest.mark.parametrize("desc", ["downloading", "  DOWNLOADING 45%", "下载中 45%"])
def test_descriptions_that_name_the_download(desc: str) -> None:
    assert is_download_progress(None, 99, desc)


@pytest.mark.parametrize("desc", [None, "installing", "download complete, installing", ""])
def test_other_descriptions_are_judged_by_the_mark(desc: str | None) -> None:
    assert not is_download_progress(None, 10, desc)
    assert not is_download_progress(40, 41, desc)
    assert is_download_progress(40, 40, desc)


@given(
    marks=st.lists(st.integers(0, 99), max_size=6),
    late=st.integers(0, 99),
    desc=st.none() | st.sampled_from(["downloading", "installing"]),
)
def test_a_downloaded_job_moves_exactly_on_update_progress(
    marks: list[int], late: int, desc: str | None
) -> None:
    run = downloaded(*marks)
    mark = max(marks) if marks else None
    assert run.job.download_pct == mark
    run(progress(0, late, desc=desc))
    update = desc != "downloading" and (mark is None or late > mark)
    assert run.state is (S.UPDATING if update else S.DOWNLOADED)
    assert run.job.download_pct == (mark if update else raised_mark(mark, late))


def test_a_result_after_late_download_reports_still_succeeds() -> None:
    run = downloaded(50)
    run(progress(0, 70, desc="downloading"))
    run(progress(0, 100, ver=TARGET))
    assert run.state is S.SUCCEEDED
