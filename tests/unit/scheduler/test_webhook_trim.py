"""Where the notification stream can be trimmed: below what every group acknowledged."""

from __future__ import annotations

from scheduler.webhooks import stream_id, trim_point


def test_the_lowest_mark_of_any_group_wins() -> None:
    # (last delivered, oldest pending or None) per group
    assert trim_point([(b"900-3", None)]) == "900-3"
    assert trim_point([(b"900-3", b"120-7")]) == "120-7"
    assert trim_point([(b"900-3", None), (b"500-0", None)]) == "500-0"
    assert trim_point([(b"900-3", None), (b"950-0", b"899-12")]) == "899-12"


def test_a_group_that_read_nothing_keeps_everything() -> None:
    assert trim_point([(b"900-3", None), ("0-0", None)]) == "0-0"


def test_no_group_no_trim() -> None:
    assert trim_point([]) is None


def test_ids_compare_as_numbers() -> None:
    assert stream_id(b"1000-2") > stream_id(b"999-10")
    assert stream_id("5-10") > stream_id("5-9")
    assert stream_id("7") == (7, 0)
