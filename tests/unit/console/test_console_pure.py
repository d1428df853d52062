"""The console's pure parts: sessions and CSRF, the timeline story, the task form, SVG
escaping, and the live hub's fan-out (one aggregate read for any number of watchers)."""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import AsyncExitStack

import pytest

from scheduler.console import charts, live, session, story, taskform
from scheduler.console.settings import derived_key
from scheduler.errors import ValidationError
from scheduler.settings import Scope

KEY = b"k" * 32
KEYS = {
    "reader-key-0001": frozenset({Scope.READ}),
    "writer-key-0001": frozenset({Scope.READ, Scope.WRITE}),
    "broker-key-0001": frozenset({Scope.BROKER}),
}


def test_a_session_round_trips_and_rejects_tampering_and_expiry() -> None:
    s = session.new_session("abc", now_s=1000, ttl_s=60)
    cookie = session.encode(KEY, s)
    assert session.decode(KEY, cookie, 1001) == s
    assert session.decode(KEY, cookie, 1060) is None  # expired
    assert session.decode(b"x" * 32, cookie, 1001) is None  # another key signed it
    payload, mac = cookie.split(".")
    assert session.decode(KEY, payload[:-2] + "AA." + mac, 1001) is None
    assert session.decode(KEY, "garbage", 1001) is None
    assert session.decode(KEY, None, 1001) is None


def test_the_cookie_never_holds_the_api_key() -> None:
    book = session.KeyBook(KEY, KEYS)
    key_id = book.login("writer-key-0001")
    assert key_id is not None
    cookie = session.encode(KEY, session.new_session(key_id, 0, 60))
    assert "writer-key-0001" not in cookie
    assert book.scopes(key_id) == KEYS["writer-key-0001"]


def test_only_keys_with_the_read_scope_log_in() -> None:
    book = session.KeyBook(KEY, KEYS)
    assert book.login("reader-key-0001") is not None
    assert book.login("broker-key-0001") is None
    assert book.login("unknown-key-0001") is None


def test_csrf_tokens_must_match() -> None:
    s = session.new_session("abc", 0, 60)
    assert session.csrf_ok(s, s.csrf)
    assert not session.csrf_ok(s, None)
    assert not session.csrf_ok(s, "")
    assert not session.csrf_ok(s, s.csrf + "x")


def test_the_derived_session_key_changes_with_the_keys() -> None:
    assert derived_key(KEYS) == derived_key(dict(reversed(list(KEYS.items()))))
    assert derived_key(KEYS) != derived_key({"reader-key-0001": frozenset({Scope.READ})})


def _entry(to: str, at: int, attempt: int = 1, **extra: object) -> dict[str, object]:
    return {"task_id": "t1", "attempt": attempt, "at_ms": at, "from": "", "to": to, **extra}


def test_the_story_reads_oldest_first_with_bytes_and_cause() -> None:
    timeline = [  # the API's order: newest first
        _entry("FAILED", 5, cause=22, cause_message="Low battery"),
        _entry("DOWNLOADED", 4, detail={"bytes": 2048, "duration_ms": 30, "before_result": True}),
        _entry("COMMAND_SENT", 3),
        _entry("SUCCEEDED", 2, attempt=0),
    ]
    tries = story.story(timeline)
    assert [(t.attempt, t.outcome) for t in tries] == [(0, "SUCCEEDED"), (1, "FAILED")]
    steps = tries[1].steps
    assert [s.state for s in steps] == ["COMMAND_SENT", "DOWNLOADED", "FAILED"]
    assert (steps[1].bytes, steps[1].duration_ms) == (2048, 30)
    assert "after the result" in steps[1].note
    assert (steps[2].cause, steps[2].cause_message, steps[2].outcome) == (
        22,
        "Low battery",
        "failed",
    )
    assert story.served_bytes(tries) == 2048


def test_the_task_form_becomes_the_api_body() -> None:
    form = {
        "name": " canary ",
        "type": "firmware",
        "package_id": "p1",
        "device_ids": "d1, d2\nd3",
        "groups": "north",
        "filter_fw_versions": "1.0 1.1",
        "filter_online": "true",
        "waves": "5:80\n10%:90:approve",
        "abort": "20:100",
        "ramp": "10,2,5,100",
        "max_in_flight": "50",
        "retry_count": "2",
        "timeout_version_s": "60",
        "window": "22:00-04:00@mon,tue",
        "schedule": "+2h",
        "on_conflict": "wait",
        "require_online": "on",
        "success": "confirmed",
        "timeout_confirm_s": "600",
    }
    body = taskform.task_body(form, now_ms=1_000_000, list_id="L1")
    assert body["name"] == "canary"
    assert body["targets"] == {
        "device_ids": ["d1", "d2", "d3"],
        "list_id": "L1",
        "groups": ["north"],
        "filter": {"fw_versions": ["1.0", "1.1"], "online": True},
    }
    policy = body["policy"]
    assert policy["waves"] == [
        {"count": 5, "success_threshold_pct": 80.0},
        {"percent": 10.0, "success_threshold_pct": 90.0, "approval": True},
    ]
    assert policy["abort"] == [{"failure_pct": 20.0, "min_finished": 100}]
    assert policy["schedule_time_ms"] == 1_000_000 + 2 * 3600 * 1000
    assert policy["timeouts"] == {"version_s": 60, "confirm_s": 600}
    assert (policy["max_in_flight"], policy["retry_count"]) == (50, 2)
    assert policy["maintenance_window"] == {
        "start": "22:00",
        "end": "04:00",
        "days": ["mon", "tue"],
    }
    assert (policy["on_conflict"], policy["require_online"]) == ("wait", True)
    assert policy["success"] == "confirmed"


@pytest.mark.parametrize(
    ("field", "value"),
    [("waves", "ten"), ("max_in_flight", "lots"), ("window", "late"), ("timeout_online_s", "1h")],
)
def test_an_unreadable_form_value_names_its_field(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        taskform.task_body({"type": "firmware", "package_id": "p", field: value}, now_ms=0)
    assert caught.value.field == field


def test_chart_labels_are_escaped() -> None:
    svg = str(charts.bars([("<script>alert(1)</script>", 3)], "versions"))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg


def test_sse_frames_carry_multiline_data() -> None:
    assert live.frame("progress", "<p>\na</p>") == b"event: progress\ndata: <p>\ndata: a</p>\n\n"


async def test_a_hundred_watchers_cost_one_read() -> None:
    reads = 0
    release = asyncio.Event()

    async def render(tid: str, history: deque[tuple[float, int]]) -> bytes:
        nonlocal reads
        reads += 1
        if reads > 1:
            await release.wait()  # hold the second read: the count stays put while we look
        return live.frame("progress", f"{tid} read {reads}")

    hub = live.Hub(render, interval_s=0.001)
    async with AsyncExitStack() as stack:
        queues = [await stack.enter_async_context(hub.subscribe("t1")) for _ in range(100)]
        frames = [await q.get() for q in queues]
        assert set(frames) == {live.frame("progress", "t1 read 1")}
        assert reads <= 2  # one read fed every watcher; the next is held
        assert hub.watchers("t1") == 100
    assert hub.watchers("t1") == 0  # the last watcher gone: the poller is cancelled
    release.set()
