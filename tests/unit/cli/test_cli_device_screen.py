"""`ota devices show`: a trimmed or expired timeline says where its older entries are, and
which command reads them."""

from __future__ import annotations

from typing import Any

from ops import cli_render as render

ENTRY = {"at_ms": 0, "task_id": "t1", "attempt": 1, "from": "UPDATING", "to": "SUCCEEDED"}


def device(history: dict[str, Any] | None) -> dict[str, Any]:
    return {"device_id": "d1", "timeline": [ENTRY], "history": history}


def test_a_trimmed_timeline_points_at_the_log() -> None:
    history = {"topic": "ota.job-events", "partition": 3, "first_offset": 901, "trimmed": 7}
    lines = render.device_screen(device(history))
    assert lines[-1] == (
        "  ... 7 older entries: ota.job-events partition 3, the device's records from offset 901"
        " (ota devices history d1)"
    )


def test_an_expired_timeline_points_at_the_log() -> None:
    history = {"topic": "t", "partition": 1, "first_offset": 5, "trimmed": 2, "expired": True}
    assert render.device_screen(device(history))[-1] == (
        "  ... 2 older entries and entries past their retention: t partition 1,"
        " the device's records from offset 5 (ota devices history d1)"
    )


def test_a_whole_timeline_says_nothing_more() -> None:
    whole = {"topic": "ota.job-events", "partition": 3, "first_offset": 901, "trimmed": 0}
    for history in (whole, None):
        assert "older entries" not in "\n".join(render.device_screen(device(history)))
