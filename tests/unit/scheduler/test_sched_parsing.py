"""Pure request parsing: targets and filters, package metadata, webhooks, API keys."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.records import TaskType
from ota.settings import SettingsError
from scheduler.errors import ValidationError
from scheduler.packages import MAX_ALLOWED_SOURCES, parse_meta
from scheduler.settings import Scope, parse_api_keys
from scheduler.targets import MAX_IDS, parse_targets
from scheduler.webhooks import MAX_BACKOFF_S, delivery_policy, parse_webhook


def test_targets_combine_and_dedupe() -> None:
    targets = parse_targets(
        {
            "device_ids": ["a", "b", "a"],
            "groups": ["north"],
            "filter": {"fw_versions": ["1.0"], "online": False},
            "list_id": "abc",
        }
    )
    assert targets.device_ids == ("a", "b")
    assert targets.groups == ("north",)
    assert targets.filter is not None
    assert targets.filter.online is False
    assert targets.list_id == "abc"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (None, "wrong_type"),
        ({}, "empty_targets"),
        ({"device_ids": "a"}, "wrong_type"),
        ({"device_ids": [1]}, "bad_device_id"),
        ({"device_ids": ["a/b"]}, "bad_device_id"),
        ({"device_ids": ["d"] * (MAX_IDS + 1)}, "too_many"),
        ({"groups": ["bad name"]}, "bad_name"),
        ({"filter": {}}, "bad_filter"),
        ({"filter": {"tags": [""]}}, "wrong_type"),
        ({"filter": {"colour": ["red"]}}, "unknown_field"),
        ({"everything": True}, "unknown_field"),
    ],
)
def test_bad_targets(data: Any, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_targets(data)
    assert caught.value.code == code
    assert caught.value.message


def test_package_metadata() -> None:
    meta = parse_meta(
        {
            "type": "software",
            "version": "2.0-rc1",
            "file_name": "app.tar",
            "allowed_sources": "1.0, 1.1,1.0",
        }
    )
    assert meta.type is TaskType.SOFTWARE
    assert meta.allowed_sources == ("1.0", "1.1")
    limit = ",".join(f"1.{i}" for i in range(MAX_ALLOWED_SOURCES))
    assert (
        len(
            parse_meta(
                {"type": "firmware", "version": "1", "file_name": "f", "allowed_sources": limit}
            ).allowed_sources
        )
        == 20
    )
    with pytest.raises(ValidationError, match="malformed version"):
        parse_meta({"type": "firmware", "version": "1", "file_name": "f", "allowed_sources": "1 0"})


def test_webhook_parsing() -> None:
    hook = parse_webhook({"url": "https://example.test/ota", "secret": "s" * 16})
    assert hook["events"] == ["task_status", "device_result"]
    assert hook["task_id"] is None


@given(attempt=st.integers(1, 60), base=st.floats(0.01, 600), seed=st.integers(0, 1000))
def test_backoff_is_jittered_exponential_and_capped(attempt: int, base: float, seed: int) -> None:
    policy = delivery_policy(base, 61, random.Random(seed))
    delay = policy.delay_s(attempt - 1)  # the wait after attempt `attempt`
    nominal = min(MAX_BACKOFF_S, base * 2.0 ** (attempt - 1))
    assert 0.5 * nominal <= delay <= 1.5 * nominal


def test_delivery_policy_gives_up_after_the_configured_attempts() -> None:
    policy = delivery_policy(1.0, 3, random.Random(0))
    assert [policy.gives_up(retry) for retry in range(3)] == [False, False, True]


def test_api_keys() -> None:
    keys = parse_api_keys("reader-key-1:read, writer-key-1:read+write,only-write-1:write")
    assert keys["reader-key-1"] == {Scope.READ}
    assert keys["writer-key-1"] == {Scope.READ, Scope.WRITE}
    assert keys["only-write-1"] == {Scope.READ, Scope.WRITE}
    assert parse_api_keys("admin-key-1:admin")["admin-key-1"] == {
        Scope.READ,
        Scope.WRITE,
        Scope.ADMIN,
    }
    for bad in ("short:read", "no-scope-key", "some-long-key:root", "mixed-key-1:admin+broker"):
        with pytest.raises(SettingsError):
            parse_api_keys(bad)
