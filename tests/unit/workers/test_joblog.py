"""The worker's job log: one INFO line per finished job with its ids and cause."""

from __future__ import annotations

import logging

import orjson
import pytest

from ota.catalog import FailureCause
from ota.logs import JsonFormatter
from ota.records import JobEventRecord
from workers.joblog import log_jobs


def event(from_state: str, to_state: str, cause: int | None = None) -> JobEventRecord:
    return JobEventRecord(
        device_id="dev-1",
        task_id="task-9",
        attempt=1,
        job_version=3,
        from_state=from_state,
        to_state=to_state,
        cause=cause,
    )


def test_a_finished_job_is_one_info_line_with_ids_and_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="workers.jobs")
    log_jobs(
        [
            event("QUEUED", "QUERYING_VERSION"),
            event("DOWNLOADING", "FAILED", int(FailureCause.DOWNLOAD_FINISH_TIMEOUT)),
            event("FAILED", "FAILED"),  # a late report noted on a finished job
        ]
    )
    assert [r.getMessage() for r in caplog.records] == ["job finished"]
    line = orjson.loads(JsonFormatter("worker").format(caplog.records[0]))
    assert line["level"] == "info"
    assert (line["device_id"], line["task_id"], line["state"]) == ("dev-1", "task-9", "FAILED")
    assert line["cause"] == int(FailureCause.DOWNLOAD_FINISH_TIMEOUT)
    assert line["cause_name"] == "DOWNLOAD_FINISH_TIMEOUT"


def test_debug_adds_every_transition(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="workers.jobs")
    log_jobs([event("QUEUED", "QUERYING_VERSION"), event("VERIFYING", "SUCCEEDED")])
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("DEBUG", "job event"),
        ("INFO", "job finished"),
    ]
    assert "cause" not in vars(caplog.records[1])


def test_an_unknown_cause_code_is_named_unknown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="workers.jobs")
    log_jobs([event("UPDATING", "FAILED", 9999)])
    assert vars(caplog.records[0])["cause_name"] == "unknown"
