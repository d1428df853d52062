"""Which task-events records go to the webhooks' stream again after Redis was emptied."""

from __future__ import annotations

import orjson

from scheduler.renotify import to_tell


def note(kind: str, nid: str, task: str = "t1") -> bytes:
    return orjson.dumps({"v": 1, "kind": kind, "id": nid, "task_id": task})


def test_each_notification_once_in_the_topics_order() -> None:
    values = [note("task_status", "a"), note("device_result", "b"), note("task_status", "a")]
    assert to_tell(values, rebuilt=()) == values[:2]  # a patient resend is on the topic twice


def test_a_rebuilt_tasks_device_results_are_left_to_the_rebuild() -> None:
    status, result, other = (
        note("task_status", "a"),
        note("device_result", "b"),
        note("device_result", "c", task="t2"),
    )
    assert to_tell([status, result, other], rebuilt={"t1"}) == [status, other]


def test_what_is_no_notification_is_skipped() -> None:
    bad = [
        b"not json",
        b"[1, 2]",
        orjson.dumps({"kind": "something_else", "id": "x", "task_id": "t1"}),
        orjson.dumps({"kind": "task_status", "id": 7, "task_id": "t1"}),
        orjson.dumps({"kind": "task_status", "id": "x"}),
    ]
    good = note("task_status", "ok")
    assert to_tell([*bad, good], rebuilt=()) == [good]
