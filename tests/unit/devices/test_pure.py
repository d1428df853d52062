from __future__ import annotations

import pytest

from devices.behaviour import FailStage, stage_of
from devices.connection import iotda_client_id
from devices.download import Download, _range_start
from devices.fleet import device_name
from devices.report import summarize


@pytest.mark.parametrize(
    ("code", "stage"),
    [
        (1, FailStage.BEFORE_DOWNLOAD),
        (5, FailStage.BEFORE_DOWNLOAD),
        (6, FailStage.DOWNLOAD),
        (7, FailStage.DOWNLOAD),
        (10, FailStage.INSTALL),
        (255, FailStage.INSTALL),
    ],
)
def test_stage_of_result_codes(code: int, stage: FailStage) -> None:
    assert stage_of(code) is stage


def test_iotda_client_id_form() -> None:
    assert iotda_client_id("devA", 1_795_780_800) == "devA_0_0_2026112712"


def test_download_headers_for_first_try_and_resume() -> None:
    job = Download(url="http://x/p", size=10, token="t")
    assert job.headers() == {"Authorization": "Bearer t"}
    job.received, job.etag = 4, '"abc"'
    assert job.headers() == {"Authorization": "Bearer t", "Range": "bytes=4-", "If-Range": '"abc"'}
    assert Download(url="http://x/p?token=t", size=1).headers() == {}


@pytest.mark.parametrize(
    ("header", "start"), [("bytes 100-199/200", 100), ("", -1), ("bytes x-1/2", -1)]
)
def test_content_range_start(header: str, start: int) -> None:
    assert _range_start(header) == start


def test_summary_percentiles() -> None:
    summary = summarize([float(n) for n in range(1, 101)])
    assert summary == {"p50": 50.5, "p90": 91.0, "p99": 100.0, "max": 100.0}
    assert summarize([]) == {}


def test_device_names_sort_in_index_order() -> None:
    assert device_name("sim", 7) == "sim-0000007"
    assert sorted(device_name("s", n) for n in (10, 9, 100)) == [
        "s-0000009",
        "s-0000010",
        "s-0000100",
    ]
