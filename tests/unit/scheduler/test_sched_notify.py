"""A task status notification made from the new document (scheduler/notify.py), pure."""

from __future__ import annotations

from typing import Any, cast

from scheduler.notify import task_status_event
from scheduler.taskdoc import TaskDoc


def doc(**fields: Any) -> TaskDoc:
    base = {"id": "t-1", "status": "Paused", "reason": "by the operator", "updated_ms": 1000}
    return cast(TaskDoc, {**base, **fields})


def test_the_same_change_is_told_under_the_same_id() -> None:
    first = task_status_event(doc(), "Processing")
    assert first == task_status_event(doc(), "Processing")
    assert first["at_ms"] == 1000  # the change's time, not the telling's
    assert (first["status"], first["previous"], first["reason"]) == (
        "Paused",
        "Processing",
        "by the operator",
    )


def test_another_change_gets_another_id() -> None:
    ids = {
        task_status_event(doc(), "Processing")["id"],
        task_status_event(doc(updated_ms=1001), "Processing")["id"],
        task_status_event(doc(), "Waiting")["id"],
        task_status_event(doc(status="Processing"), "Paused")["id"],
        task_status_event(doc(id="t-2"), "Processing")["id"],
    }
    assert len(ids) == 5
