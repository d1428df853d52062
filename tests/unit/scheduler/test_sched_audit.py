"""Audit records name keys by fingerprint and classify outcomes (scheduler/audit.py)."""

from __future__ import annotations

import hashlib

import pytest

from scheduler.audit import entry, key_id, outcome, result_id


def test_a_key_is_named_by_its_fingerprint_only() -> None:
    key = "a-real-write-key-123"
    assert key_id(key) == "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]
    record = entry(
        key_id=key_id(key),
        action="pause_task",
        method="POST",
        path="/v1/tasks/t1/pause",
        route="/v1/tasks/{task_id}/pause",
        target={"task_id": "t1"},
        status=200,
        created=None,
        client="10.0.0.7",
        forwarded_for=None,
        at_ms=1,
    )
    assert key not in str(record)
    assert record["key_id"] == key_id(key)
    assert record["outcome"] == "ok"


@pytest.mark.parametrize(
    ("status", "named"),
    [
        (200, "ok"),
        (201, "ok"),
        (204, "ok"),
        (401, "denied"),
        (403, "denied"),
        (409, "refused"),
        (422, "refused"),
        (503, "error"),
    ],
)
def test_outcomes(status: int, named: str) -> None:
    assert outcome(status) == named


def test_the_created_id_comes_from_a_successful_json_answer_only() -> None:
    assert result_id(201, "application/json", b'{"id":"t1","status":"Waiting"}') == "t1"
    assert result_id(422, "application/json", b'{"id":"t1"}') is None
    assert result_id(200, "text/plain", b'{"id":"t1"}') is None
    assert result_id(200, "application/json", b"[1,2]") is None
    assert result_id(200, "application/json", b"not json") is None
    assert result_id(200, "application/json", b'{"id": 7}') is None
